//! Model checks of the lock-free state with loom: every interleaving (up to a preemption
//! bound) of the multi-quota commit and its undo, of a quota change against a commit, and of
//! the wait queue's hand-off between waiters.
//!
//! `RUSTFLAGS="--cfg tollway_loom" cargo test -p tollway-limiter --release --lib loom`
//! (`LOOM_MAX_PREEMPTIONS` overrides the bound of 3).

use std::sync::Arc;
use std::time::Duration;

use loom::thread;
use tollway_core::FakeClock;

use crate::RateLimiter;
use crate::gcra::Gcra;
use crate::quota::Quota;

const I: u64 = 1_000;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Two quotas: one request per `I` with a burst of 2, and one per `5 I` with a burst of 1.
fn two_quotas() -> Gcra {
    Gcra::new(&[Quota::clamped(I, 2), Quota::clamped(5 * I, 1)])
}

/// Two requests at once on quotas that admit one: exactly one is admitted, and no permit is
/// lost or erased: every TAT covers the admitted request, and a refused one leaves at most its
/// own increment behind (when its undo lost a race).
#[test]
fn loom_concurrent_multi_quota_commits_admit_exactly_one() {
    model(|| {
        let gcra = Arc::new(two_quotas());
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let gcra = Arc::clone(&gcra);
                thread::spawn(move || gcra.try_acquire(0, 1).is_ok())
            })
            .collect();
        let admitted = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&a| a)
            .count();
        assert_eq!(admitted, 1);
        let tats = gcra.tats();
        assert!(tats[0] >= I && tats[0] <= 2 * I, "{tats:?}");
        assert_eq!(tats[1], 5 * I, "the binding quota holds exactly one");
    });
}

/// The finding: A commits the first quota at t=0; B, at 10 I, commits both quotas on top; A
/// then loses the second quota to B and undoes the first. The undo must not bring the first
/// quota's TAT below B's permit (a subtraction did, and let a third request in next to B),
/// whatever the interleaving.
#[test]
fn loom_an_undo_never_erases_a_later_commit() {
    model(|| {
        let gcra = Arc::new(Gcra::new(&[Quota::clamped(I, 1), Quota::clamped(I, 1)]));
        let a = {
            let gcra = Arc::clone(&gcra);
            thread::spawn(move || gcra.try_acquire(0, 1).is_ok())
        };
        let b = {
            let gcra = Arc::clone(&gcra);
            thread::spawn(move || gcra.try_acquire(10 * I, 1).is_ok())
        };
        let _a = a.join().unwrap();
        assert!(b.join().unwrap(), "B fits both at 10 I, whatever A did");
        for tat in gcra.tats() {
            assert!(tat >= 11 * I, "B's permit was erased: {tat}");
            assert!(
                tat <= 12 * I,
                "more than A's one increment left behind: {tat}"
            );
        }
    });
}

/// A quota change and a commit at once: the outcome is one of the two orders, never a mix (a
/// commit that used the new interval on the old scale, or the reverse).
#[test]
fn loom_a_quota_change_is_atomic_for_a_commit() {
    // Two requests owed at one per I (burst 8); the change makes it one per 3 I, burst 2. In
    // either order the outcome is exact; the new parameters on the old scale would admit a
    // request the new scale refuses.
    let old = Quota::clamped(I, 8);
    let new = Quota::clamped(3 * I, 2);
    let setup = move || {
        let gcra = Gcra::new(&[old]);
        gcra.set_tats([2 * I].into_iter());
        gcra
    };
    let sequential = move |change_first: bool| {
        let gcra = setup();
        let commit = |g: &Gcra| g.try_acquire(0, 1).is_ok();
        let admitted = if change_first {
            gcra.set_quota(0, new, 0, 0);
            commit(&gcra)
        } else {
            let admitted = commit(&gcra);
            gcra.set_quota(0, new, 0, 0);
            admitted
        };
        (admitted, gcra.first_tat())
    };
    model(move || {
        // The two orders, one after the other (inside the model: loom's atomics live there).
        let orders = [sequential(true), sequential(false)];
        let gcra = Arc::new(setup());
        let commit = {
            let gcra = Arc::clone(&gcra);
            thread::spawn(move || gcra.try_acquire(0, 1).is_ok())
        };
        gcra.set_quota(0, new, 0, 0);
        let admitted = commit.join().unwrap();
        let outcome = (admitted, gcra.first_tat());
        assert!(
            orders.contains(&outcome),
            "{outcome:?} is neither of {orders:?}"
        );
    });
}

/// Two waiters and two refunds on a limiter whose burst is spent and whose clock stands
/// still: both waiters get a permit (no wake-up is lost in the hand-off from one head to the
/// next), the queue empties, and no more than the refunded permits are handed out.
#[test]
fn loom_the_wait_queue_hands_off_without_losing_a_waiter() {
    model(|| {
        let limiter = RateLimiter::builder(Quota::per_second(1).burst(2))
            .clock(FakeClock::new())
            .build();
        limiter.check().unwrap();
        limiter.check().unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let limiter = limiter.clone();
                thread::spawn(move || loom::future::block_on(limiter.acquire()).is_ok())
            })
            .collect();
        limiter.refund(1);
        limiter.refund(1);
        for waiter in waiters {
            assert!(waiter.join().unwrap());
        }
        assert_eq!(limiter.queued(), 0);
        assert!(limiter.check().is_err(), "two refunds, two permits");
        let _ = Duration::ZERO;
    });
}

impl Gcra {
    fn first_tat(&self) -> u64 {
        self.tats()[0]
    }
}
