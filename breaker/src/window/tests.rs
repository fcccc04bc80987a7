use super::*;

fn hot() -> &'static HotWords {
    crate::hot::Slot::acquire(std::sync::Weak::new(), 0).leak()
}

const fn t(calls: u64, failures: u64, slow: u64) -> Totals {
    Totals {
        calls,
        failures,
        slow,
    }
}

#[test]
fn count_ring_evicts_what_it_overwrites() {
    let ring = Tally::new(FailureWindow::Count(3), hot());
    let r = |f, s| ring.record(0, f, s, 0).expect("current");
    assert_eq!(r(true, false), t(1, 1, 0));
    assert_eq!(r(true, true), t(2, 2, 1));
    assert_eq!(r(false, false), t(3, 2, 1));
    assert_eq!(r(false, false), t(3, 1, 1), "evicts the first failure");
    assert_eq!(r(false, false), t(3, 0, 0), "evicts the slow failure");
    assert_eq!(r(false, false), t(3, 0, 0), "the loads-only path");
    assert_eq!(r(true, false), t(3, 1, 0));
}

#[test]
fn count_ring_spans_many_slots() {
    let ring = Tally::new(FailureWindow::Count(130), hot());
    for i in 0..400u32 {
        ring.record(5, i % 4 == 0, false, 0);
    }
    // The last 130 calls are 270..400: multiples of 4 among them.
    let expected = (270..400).filter(|i| i % 4 == 0).count() as u64;
    assert_eq!(ring.totals(5, 0), t(130, expected, 0));
}

#[test]
fn a_newer_generation_starts_afresh_and_an_older_one_is_dropped() {
    for window in [FailureWindow::Count(10), FailureWindow::Time(10)] {
        let tally = Tally::new(window, hot());
        for _ in 0..4 {
            tally.record(7, true, false, 0);
        }
        assert_eq!(tally.totals(7, 0), t(4, 4, 0));
        // The breaker cycled: the first result of generation 10 resets the window.
        assert_eq!(tally.record(10, false, false, 0), Some(t(1, 0, 0)));
        assert_eq!(tally.totals(7, 0), Totals::default());
        // A result read before the cycle (generation 7) arrives late: dropped.
        assert_eq!(tally.record(7, true, false, 0), None);
        assert_eq!(tally.totals(10, 0), t(1, 0, 0));
    }
    let consecutive = Consecutive(&hot().consecutive);
    assert_eq!(consecutive.record(3, true), Some(1));
    assert_eq!(consecutive.record(3, true), Some(2));
    assert_eq!(consecutive.record(6, true), Some(1));
    assert_eq!(consecutive.record(3, true), None);
    assert_eq!(consecutive.get(6), 1);
    assert_eq!(consecutive.record(6, false), Some(0));
}

#[test]
fn a_time_window_holds_a_call_for_exactly_its_length() {
    const SEC: u64 = 1_000_000;
    let tally = Tally::new(FailureWindow::Time(10), hot());
    // A failure at 5.9 s is still counted at 15.89 s (9.99 s later) and gone by 16.06 s
    // (10.16 s later: the window's length plus at most 1/64 of it).
    tally.record(0, true, false, 5 * SEC + 900_000);
    assert_eq!(tally.totals(0, 15 * SEC + 890_000).failures, 1);
    assert_eq!(tally.totals(0, 16 * SEC + 60_000).failures, 0);
    // Two calls a second for a minute: the window holds the last ten seconds' worth.
    for half in 0..120u64 {
        tally.record(0, half % 2 == 0, false, 20 * SEC + half * SEC / 2);
    }
    let totals = tally.totals(0, 80 * SEC);
    assert!((20..=21).contains(&totals.calls), "{totals:?}");
    assert!((10..=11).contains(&totals.failures), "{totals:?}");
    // Nothing for an hour: all of it is gone, in O(1) work.
    assert_eq!(tally.totals(0, 3_700 * SEC), Totals::default());
}
