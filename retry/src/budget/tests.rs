use super::*;
use tollway_core::FakeClock;

fn budget(window_secs: u64, min: u32, ratio: f64) -> (RetryBudget, FakeClock) {
    let clock = FakeClock::new();
    let budget = RetryBudget::builder()
        .window(Duration::from_secs(window_secs))
        .min_per_second(min)
        .retry_ratio(ratio)
        .clock(clock.clone())
        .build()
        .unwrap();
    (budget, clock)
}

#[test]
fn empty_budget_refuses() {
    let (b, _) = budget(1, 0, 1.0);
    assert!(!b.withdraw());
    assert_eq!(b.available(), 0);
}

#[test]
fn ratio_is_exact_not_truncated() {
    let (b, _) = budget(10, 0, 0.3);
    for _ in 0..10 {
        b.deposit();
    }
    assert_eq!(b.available(), 3);
    assert!(b.withdraw() && b.withdraw() && b.withdraw());
    assert!(!b.withdraw());
}

#[test]
fn reserve_is_the_floor_and_comes_back_after_the_window() {
    let (b, clock) = budget(1, 5, 1.0);
    for _ in 0..5 {
        assert!(b.withdraw());
    }
    assert!(!b.withdraw());
    clock.advance(Duration::from_millis(1100));
    assert_eq!(b.available(), 5);
}

#[test]
fn the_floor_covers_fractional_windows() {
    let clock = FakeClock::new();
    let b = RetryBudget::builder()
        .window(Duration::from_millis(1500))
        .min_per_second(2)
        .clock(clock)
        .build()
        .unwrap();
    assert_eq!(b.available(), 3);
}

#[test]
fn deposits_expire_slot_by_slot() {
    let (b, clock) = budget(1, 0, 0.5);
    b.deposit();
    b.deposit();
    clock.advance(Duration::from_millis(850));
    assert!(b.withdraw(), "900 ms later the deposits still count");
    clock.advance(Duration::from_millis(3000));
    b.deposit();
    clock.advance(Duration::from_millis(300));
    b.deposit();
    clock.advance(Duration::from_millis(750));
    b.deposit();
    // The first of the last three expired; the other two still count.
    assert_eq!(b.available(), 1);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(b.available(), 0);
}

#[test]
fn a_refund_returns_the_retry_to_its_slot_while_it_counts() {
    let (b, clock) = budget(1, 0, 1.0);
    b.deposit();
    let taken = b.take().expect("one retry");
    assert_eq!(b.available(), 0);
    b.refund(taken);
    assert_eq!(b.available(), 1);

    // Taken in one slot, refunded three slots later: the deposit and the refund expire
    // together, so the refund never outlives the window.
    let taken = b.take().expect("one retry");
    clock.advance(Duration::from_millis(300));
    b.refund(taken);
    assert_eq!(b.available(), 1);
    clock.advance(Duration::from_millis(750));
    assert_eq!(b.available(), 0);

    // A refund after the window has passed gives nothing back.
    b.deposit();
    let taken = b.take().expect("one retry");
    clock.advance(Duration::from_secs(2));
    b.refund(taken);
    assert_eq!(b.available(), 0);
}

#[test]
fn concurrent_deposits_and_withdrawals_never_overspend() {
    // Deposits take no lock: racing them against withdrawals and slot rotations must
    // neither lose a deposit within the window nor let a retry be taken twice.
    let (b, clock) = budget(10, 0, 0.5);
    let taken = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                for _ in 0..20_000 {
                    b.deposit();
                }
            });
        }
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..20_000 {
                    if b.withdraw() {
                        taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..50 {
                clock.advance(Duration::from_millis(20));
                std::thread::yield_now();
            }
        });
    });
    // 60,000 requests at half a retry each, all within the 10 s window.
    let taken = taken.into_inner();
    assert!(taken <= 30_000, "{taken} retries taken from 30,000");
    assert_eq!(taken + b.available(), 30_000, "no deposit lost");
}

#[test]
fn clones_share_one_budget() {
    let (b, _) = budget(10, 0, 1.0);
    let other = b.clone();
    b.deposit();
    assert!(other.withdraw());
    assert!(!b.withdraw());
}

#[test]
fn bad_settings_are_typed_errors() {
    let err = RetryBudget::builder()
        .window(Duration::from_millis(10))
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "window");
    let err = RetryBudget::builder()
        .retry_ratio(-1.0)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "retry_ratio");
    assert!(
        RetryBudget::builder()
            .retry_ratio(f64::NAN)
            .build()
            .is_err()
    );
}
