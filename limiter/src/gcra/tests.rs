use super::*;

const MS: u64 = 1_000_000;

#[test]
fn burst_then_rate() {
    let g = Gcra::new(&[Quota::per_second(10).burst(3)]);
    for _ in 0..3 {
        assert!(g.try_acquire(0, 1).is_ok());
    }
    assert_eq!(g.try_acquire(0, 1).err(), Some(100 * MS));
    assert_eq!(g.try_acquire(99 * MS, 1).err(), Some(MS));
    assert!(g.try_acquire(100 * MS, 1).is_ok());
    assert_eq!(g.available(100 * MS), 0);
    assert_eq!(g.available(400 * MS), 3);
}

#[test]
fn a_refusal_writes_nothing_on_any_quota() {
    let g = Gcra::new(&[
        Quota::per_second(10).burst(5),
        Quota::per_minute(3).burst(3),
    ]);
    assert!(g.try_acquire(0, 3).is_ok());
    let before = (load(&g.first.tat), load(&g.rest[0].tat));
    // The minute quota is spent; the second quota refuses and the first keeps its 2.
    assert_eq!(g.try_acquire(0, 2).err(), Some(2 * 20_000 * MS));
    assert_eq!((load(&g.first.tat), load(&g.rest[0].tat)), before);
    assert_eq!(g.available(0), 0);
}

/// Finding: "commit, then subtract to undo" erased another request's permit that landed
/// in between. A at t=0 and B at t=1.5 s both commit on a 1/s burst-1 bucket; A's undo
/// must not bring the TAT back below B's permit, or C is admitted at 1.5 s next to B.
#[test]
fn an_undo_never_erases_a_later_permit() {
    let params = Params::of(Quota::per_second(1).burst(1));
    let cell = AtomicU64::new(0);
    let a = commit(&cell, 0, 1, || params).unwrap();
    let b = commit(&cell, 1_500 * MS, 1, || params).unwrap();
    assert!(!undo(&cell, a), "B wrote since: A's undo must not apply");
    assert!(
        commit(&cell, 1_500 * MS, 1, || params).is_err(),
        "C next to B"
    );
    assert!(undo(&cell, b), "nothing since B: exact");
    assert_eq!(load(&cell), a.new);
}

#[test]
fn pause_empties_then_spreads() {
    let g = Gcra::new(&[Quota::per_second(10).burst(4)]);
    g.pause_until(1_000 * MS);
    assert!(g.try_acquire(999 * MS, 1).is_err());
    assert!(g.try_acquire(1_000 * MS, 1).is_ok());
    assert!(g.try_acquire(1_000 * MS, 1).is_err());
    assert!(g.try_acquire(1_100 * MS, 1).is_ok());
}

#[test]
fn set_quota_keeps_debt_in_requests() {
    let g = Gcra::new(&[Quota::per_second(10).burst(1)]);
    assert!(g.try_acquire(0, 1).is_ok());
    // Owes one request's worth: 100 ms at 10/s.
    g.set_quota(0, Quota::per_second(2).burst(1), 0, 0);
    assert_eq!(g.wait(0, 1), 500 * MS);
    g.set_quota(0, Quota::per_second(20).burst(1), 0, 0);
    assert_eq!(g.wait(0, 1), 50 * MS);
}

/// Finding: a slower rate after a pause stretched the pause as if it were debt.
#[test]
fn a_rate_change_keeps_a_pause_in_absolute_time() {
    let g = Gcra::new(&[Quota::per_second(10).burst(1)]);
    g.pause_until(2_000 * MS);
    g.set_quota(0, Quota::per_second(5).burst(1), 0, 2_000 * MS);
    assert!(
        g.try_acquire(2_000 * MS, 1).is_ok(),
        "admitted when the pause ends"
    );
    assert!(g.try_acquire(2_000 * MS, 1).is_err());
}

#[test]
fn refund_returns_capacity_but_never_more_than_the_burst() {
    let g = Gcra::new(&[Quota::per_second(10).burst(2)]);
    assert!(g.try_acquire(0, 2).is_ok());
    g.refund(1);
    assert_eq!(g.available(0), 1);
    g.refund(5);
    assert_eq!(g.available(0), 2, "never more than the burst");
}

#[test]
fn a_grant_is_undone_exactly() {
    let g = Gcra::new(&[
        Quota::per_second(10).burst(1),
        Quota::per_minute(10).burst(1),
    ]);
    let grant = g.try_acquire(0, 1).unwrap();
    assert_eq!(g.available(0), 0);
    g.undo(&grant);
    assert_eq!(g.available(0), 1);
}
