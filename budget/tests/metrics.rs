//! The `metrics` feature: counters and gauges reach the installed recorder.
#![cfg(feature = "metrics")]

use tollway_budget::{Ledger, Priority, Window};
use tollway_test_support::metrics::CapturingRecorder;

#[test]
fn ledger_reports_charges_refunds_rejections_and_levels() {
    let memory = CapturingRecorder::new();
    metrics::with_local_recorder(&memory, || {
        let ledger = Ledger::builder()
            .limit(5, Window::lifetime())
            .name("api")
            .build();
        ledger.reserve(2, Priority::Normal).unwrap().settle(2);
        let held = ledger.reserve(3, Priority::Normal).unwrap();
        assert!(ledger.reserve(1, Priority::Normal).is_err());
        assert_eq!(
            memory.gauge("tollway_budget_reserved_credits{ledger=api}"),
            Some(3.0)
        );
        assert_eq!(
            memory.gauge("tollway_budget_remaining_credits{ledger=api}"),
            Some(0.0)
        );
        drop(held);
        ledger.latch();
    });
    assert_eq!(
        memory.counter("tollway_budget_charged_credits_total{ledger=api}"),
        2
    );
    assert_eq!(
        memory.counter("tollway_budget_refunded_credits_total{ledger=api}"),
        3
    );
    assert_eq!(
        memory.counter("tollway_budget_rejected_total{ledger=api,reason=window}"),
        1
    );
    assert_eq!(
        memory.gauge("tollway_budget_spent_credits{ledger=api}"),
        Some(2.0)
    );
    assert_eq!(
        memory.gauge("tollway_budget_reserved_credits{ledger=api}"),
        Some(0.0)
    );
    assert_eq!(
        memory.gauge("tollway_budget_latched{ledger=api}"),
        Some(1.0)
    );
}
