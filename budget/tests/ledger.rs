//! The ledger on a fake clock: windows, rollover, all-or-nothing limits, reserves, retry hints.

use std::time::{Duration, SystemTime};

use tollway_budget::{Ledger, Priority, UtcOffset, Window};
use tollway_core::{ExhaustedReason, FakeClock};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// 2024-01-31 22:00:00 UTC, a Wednesday.
fn jan31_22h() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_706_738_400)
}

fn spend(ledger: &Ledger, n: u64) {
    for _ in 0..n {
        ledger.reserve(1, Priority::Normal).unwrap().settle(1);
    }
}

fn refusal(ledger: &Ledger, cost: u64, priority: Priority) -> (ExhaustedReason, Option<Duration>) {
    let err = ledger.reserve(cost, priority).unwrap_err();
    let e = err.exhausted().expect("a budget refusal");
    (e.reason(), e.retry_after())
}

#[test]
fn daily_window_rolls_over_at_midnight() {
    let clock = FakeClock::starting_at(jan31_22h());
    let ledger = Ledger::builder()
        .limit(3, Window::day())
        .clock(clock.clone())
        .build();
    spend(&ledger, 3);
    assert_eq!(
        refusal(&ledger, 1, Priority::Normal),
        (ExhaustedReason::Window, Some(2 * HOUR))
    );
    clock.advance(2 * HOUR - Duration::from_millis(1));
    assert!(ledger.reserve(1, Priority::Normal).is_err());
    clock.advance(Duration::from_millis(1));
    spend(&ledger, 3);
    assert_eq!(ledger.snapshot().windows[0].spent, 3);
    assert_eq!(ledger.snapshot().windows[0].resets_in, Some(DAY));
}

#[test]
fn calendar_windows_follow_the_offset() {
    // At 22:00 UTC it is already 1 February in UTC+3: that day ends at 21:00 UTC on the 1st.
    let clock = FakeClock::starting_at(jan31_22h());
    let ledger = Ledger::builder()
        .limit(1, Window::day().with_offset(UtcOffset::hours(3)))
        .limit(10, Window::month().with_offset(UtcOffset::hours(3)))
        .limit(10, Window::month())
        .clock(clock.clone())
        .build();
    spend(&ledger, 1);
    let snapshot = ledger.snapshot();
    assert_eq!(snapshot.windows[0].resets_in, Some(23 * HOUR));
    assert_eq!(
        snapshot.windows[1].resets_in,
        Some(29 * DAY - HOUR),
        "Feb 2024 has 29 days"
    );
    assert_eq!(snapshot.windows[2].resets_in, Some(2 * HOUR));
    // The UTC month rolls over at midnight, the UTC+3 one does not.
    clock.advance(2 * HOUR);
    let snapshot = ledger.snapshot();
    assert_eq!(
        [
            snapshot.windows[0].spent,
            snapshot.windows[1].spent,
            snapshot.windows[2].spent
        ],
        [1, 1, 0]
    );
}

#[test]
fn weeks_start_on_monday() {
    let clock = FakeClock::starting_at(jan31_22h());
    let ledger = Ledger::builder()
        .limit(5, Window::week())
        .clock(clock.clone())
        .build();
    spend(&ledger, 5);
    // Wednesday 22:00 -> Monday 00:00 is 4 days and 2 hours.
    assert_eq!(
        refusal(&ledger, 1, Priority::Normal),
        (ExhaustedReason::Window, Some(4 * DAY + 2 * HOUR))
    );
    clock.advance(4 * DAY + 2 * HOUR);
    assert!(ledger.reserve(5, Priority::Normal).is_ok());
}

#[test]
fn rolling_window_frees_credit_as_spend_ages() {
    let clock = FakeClock::starting_at(jan31_22h());
    let ledger = Ledger::builder()
        .limit(2, Window::rolling(Duration::from_secs(60)))
        .clock(clock.clone())
        .build();
    spend(&ledger, 1);
    clock.advance(Duration::from_secs(30));
    spend(&ledger, 1);
    let (reason, retry) = refusal(&ledger, 1, Priority::Normal);
    assert_eq!(reason, ExhaustedReason::Window);
    // The first charge leaves between 60 s and 61 s after it was made: 30 s to 31 s from now.
    let retry = retry.expect("a rolling window knows when credit frees");
    assert!(
        retry >= Duration::from_secs(30) && retry <= Duration::from_secs(31),
        "{retry:?}"
    );
    clock.advance(Duration::from_secs(30));
    assert!(
        ledger.reserve(1, Priority::Normal).is_err(),
        "not before a full window"
    );
    clock.advance(retry - Duration::from_secs(30));
    spend(&ledger, 1);
    assert!(ledger.reserve(1, Priority::Normal).is_err());
}

#[test]
fn several_limits_are_all_or_nothing() {
    let clock = FakeClock::starting_at(jan31_22h());
    let ledger = Ledger::builder()
        .limit(5, Window::day())
        .limit(7, Window::month())
        .clock(clock.clone())
        .build();
    spend(&ledger, 5);
    assert_eq!(
        refusal(&ledger, 1, Priority::Normal).0,
        ExhaustedReason::Window
    );
    // Both roll at midnight (January ends); a day later only the day does.
    clock.advance(3 * HOUR);
    spend(&ledger, 5);
    clock.advance(DAY);
    spend(&ledger, 2);
    let (reason, retry) = refusal(&ledger, 1, Priority::Normal);
    assert_eq!(reason, ExhaustedReason::Window);
    assert!(retry.unwrap() > 20 * DAY, "the month binds, not the day");
    let snapshot = ledger.snapshot();
    assert_eq!(snapshot.windows[0].spent, 2);
    assert_eq!(snapshot.windows[1].spent, 7);
    assert_eq!(snapshot.reserved, 0, "a refused reservation holds nothing");
}

#[test]
fn critical_reserve_is_kept_for_critical_requests() {
    let ledger = Ledger::builder()
        .limit(10, Window::lifetime())
        .critical_reserve(4)
        .build();
    spend(&ledger, 6);
    assert_eq!(
        refusal(&ledger, 1, Priority::Normal),
        (ExhaustedReason::CriticalReserve, None)
    );
    assert_eq!(
        refusal(&ledger, 1, Priority::Backfill).0,
        ExhaustedReason::CriticalReserve
    );
    let critical = ledger.reserve(4, Priority::Critical).unwrap();
    assert_eq!(
        refusal(&ledger, 1, Priority::Critical).0,
        ExhaustedReason::Window
    );
    drop(critical);
    assert_eq!(ledger.remaining(), 4);
}

#[test]
fn reservations_hold_credit_until_settled_or_dropped() {
    let ledger = Ledger::new(10, Window::lifetime());
    let a = ledger.reserve(6, Priority::Normal).unwrap();
    let b = ledger.reserve(4, Priority::Normal).unwrap();
    assert_eq!(
        refusal(&ledger, 1, Priority::Critical).0,
        ExhaustedReason::Window
    );
    assert_eq!(ledger.snapshot().reserved, 10);
    a.settle(2); // charged less than reserved: the rest comes back
    assert_eq!(ledger.remaining(), 4);
    b.refund();
    assert_eq!(ledger.remaining(), 8);
    // A charge above the reservation is recorded honestly, even past the limit.
    ledger.reserve(1, Priority::Normal).unwrap().settle(20);
    let snapshot = ledger.snapshot();
    assert_eq!(snapshot.windows[0].spent, 22);
    assert_eq!(snapshot.remaining, 0);
    assert!(
        ledger.reserve(0, Priority::Normal).is_ok(),
        "free requests still pass"
    );
}

#[test]
fn balance_sync_bounds_spend_and_is_lowered_by_charges() {
    let ledger = Ledger::new(1_000, Window::day());
    assert_eq!(ledger.snapshot().balance, None);
    ledger.sync_balance(2);
    spend(&ledger, 1);
    assert_eq!(ledger.snapshot().balance, Some(1));
    spend(&ledger, 1);
    let (reason, _) = refusal(&ledger, 1, Priority::Critical);
    assert_eq!(reason, ExhaustedReason::Upstream402);
    ledger.sync_balance(50);
    assert_eq!(ledger.remaining(), 50);
}

#[test]
fn clones_share_one_ledger() {
    let ledger = Ledger::new(2, Window::lifetime());
    let other = ledger.clone();
    let _held = other.reserve(2, Priority::Normal).unwrap();
    assert_eq!(ledger.remaining(), 0);
}

#[test]
fn balance_bodies_parse_strictly() {
    let balance = tollway_budget::Balance::parse(br#"{"rate": 11, "amount": 1000.75}"#).unwrap();
    assert_eq!((balance.amount(), balance.rate()), (1000, Some(11)));
    for bad in [&b"nope"[..], b"[]", br#"{"rate": 1}"#, br#"{"amount": -3}"#] {
        assert!(tollway_budget::Balance::parse(bad).is_err());
    }
}

#[test]
fn huge_charges_in_a_rolling_window_are_never_forgotten_early() {
    // An upstream's charge header is untrusted: two absurd charges saturate the window's total.
    // When the older one ages out, the newer one is still inside the window and must still
    // count: the window may not hand out credit it has not got back.
    let clock = FakeClock::starting_at(jan31_22h());
    let ledger = Ledger::builder()
        .limit(100, Window::rolling(Duration::from_secs(60)))
        .clock(clock.clone())
        .build();
    ledger
        .reserve(1, Priority::Normal)
        .unwrap()
        .settle(u64::MAX);
    clock.advance(Duration::from_secs(30));
    // The window is full, so this one is a header charge on a free probe (cost 0).
    ledger
        .reserve(0, Priority::Normal)
        .unwrap()
        .settle(u64::MAX - 1);
    // The first charge ages out; the second has 29 s to go.
    clock.advance(Duration::from_secs(32));
    let (reason, _) = refusal(&ledger, 1, Priority::Normal);
    assert_eq!(reason, ExhaustedReason::Window);
    // Once the second ages out too, the window is empty again.
    clock.advance(Duration::from_secs(31));
    spend(&ledger, 100);
}
