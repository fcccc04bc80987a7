//! The `metrics` feature: counters and gauges reach the installed recorder.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use tollway_budget::{Ledger, Priority, Window};

/// Remembers the last value of every counter and gauge by name and labels.
#[derive(Default, Clone)]
struct Memory {
    values: Arc<Mutex<HashMap<String, Arc<Cell>>>>,
}

#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        self.0.store(value as u64, Ordering::SeqCst);
    }
}

impl Memory {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut name = key.name().to_owned();
        for label in key.labels() {
            name.push_str(&format!(",{}={}", label.key(), label.value()));
        }
        Arc::clone(self.values.lock().unwrap().entry(name).or_default())
    }

    fn get(&self, name: &str) -> u64 {
        self.values
            .lock()
            .unwrap()
            .get(name)
            .map_or(u64::MAX, |c| c.0.load(Ordering::SeqCst))
    }
}

impl Recorder for Memory {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn ledger_reports_charges_refunds_rejections_and_levels() {
    let memory = Memory::default();
    metrics::with_local_recorder(&memory, || {
        let ledger = Ledger::builder()
            .limit(5, Window::lifetime())
            .name("api")
            .build();
        ledger.reserve(2, Priority::Normal).unwrap().settle(2);
        let held = ledger.reserve(3, Priority::Normal).unwrap();
        assert!(ledger.reserve(1, Priority::Normal).is_err());
        assert_eq!(memory.get("tollway_budget_reserved_credits,ledger=api"), 3);
        assert_eq!(memory.get("tollway_budget_remaining_credits,ledger=api"), 0);
        drop(held);
        ledger.latch();
    });
    assert_eq!(
        memory.get("tollway_budget_charged_credits_total,ledger=api"),
        2
    );
    assert_eq!(
        memory.get("tollway_budget_refunded_credits_total,ledger=api"),
        3
    );
    assert_eq!(
        memory.get("tollway_budget_rejected_total,ledger=api,reason=window"),
        1
    );
    assert_eq!(memory.get("tollway_budget_spent_credits,ledger=api"), 2);
    assert_eq!(memory.get("tollway_budget_reserved_credits,ledger=api"), 0);
    assert_eq!(memory.get("tollway_budget_latched,ledger=api"), 1);
}
