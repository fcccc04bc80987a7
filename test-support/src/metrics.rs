//! [`CapturingRecorder`]: a `metrics` recorder that keeps every counter, gauge and histogram in
//! memory, so that a test can read what a layer reported.
//!
//! ```
//! use tollway_test_support::metrics::CapturingRecorder;
//!
//! let recorder = CapturingRecorder::new();
//! metrics::with_local_recorder(&recorder, || {
//!     metrics::counter!("tollway_demo_calls_total", "result" => "ok").increment(2);
//!     metrics::gauge!("tollway_demo_state").set(1.0);
//! });
//! assert_eq!(recorder.counter("tollway_demo_calls_total{result=ok}"), 2);
//! assert_eq!(recorder.gauge("tollway_demo_state"), Some(1.0));
//! assert_eq!(recorder.counter("tollway_demo_never_total"), 0);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Keeps every metric by its key written as `name{label=value,...}` (labels in the order the
/// call site gave them; just `name` without labels). Clones share what was captured.
#[derive(Clone, Default)]
pub struct CapturingRecorder {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(value);
    }
}

fn slot<T: Default>(map: &Mutex<BTreeMap<String, Arc<T>>>, key: &str) -> Arc<T> {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(map.entry(key.to_owned()).or_default())
}

fn existing<T>(map: &Mutex<BTreeMap<String, Arc<T>>>, key: &str) -> Option<Arc<T>> {
    map.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(key)
        .map(Arc::clone)
}

/// `name{label=value,...}`.
fn render(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|label| format!("{}={}", label.key(), label.value()))
        .collect();
    if labels.is_empty() {
        key.name().to_owned()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

impl CapturingRecorder {
    /// An empty recorder. Install it for a closure with [`metrics::with_local_recorder`] or
    /// for a scope with [`metrics::set_default_local_recorder`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter's total; 0 if it was never registered.
    pub fn counter(&self, key: &str) -> u64 {
        existing(&self.inner.counters, key).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// A gauge's value, if it was registered.
    pub fn gauge(&self, key: &str) -> Option<f64> {
        existing(&self.inner.gauges, key).map(|g| f64::from_bits(g.load(Ordering::Relaxed)))
    }

    /// Every value a histogram recorded, in order.
    pub fn histogram(&self, key: &str) -> Vec<f64> {
        existing(&self.inner.histograms, key).map_or_else(Vec::new, |h| {
            h.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
        })
    }

    /// Every key registered so far (counters, gauges and histograms), sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for map in [&self.inner.counters, &self.inner.gauges] {
            keys.extend(
                map.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .keys()
                    .cloned(),
            );
        }
        keys.extend(
            self.inner
                .histograms
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .keys()
                .cloned(),
        );
        keys.sort();
        keys
    }
}

impl fmt::Debug for CapturingRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapturingRecorder")
            .field("keys", &self.keys())
            .finish()
    }
}

impl Recorder for CapturingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(slot(&self.inner.counters, &render(key)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(slot(&self.inner.gauges, &render(key)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(slot(&self.inner.histograms, &render(key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_and_handles_registered_before_reads_count() {
        let recorder = CapturingRecorder::new();
        let other = recorder.clone();
        let counter = metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("h_seconds", "a" => "1", "b" => "2").record(0.5);
            metrics::counter!("c_total")
        });
        counter.increment(3);
        counter.absolute(7);
        assert_eq!(other.counter("c_total"), 7);
        assert_eq!(other.histogram("h_seconds{a=1,b=2}"), [0.5]);
        assert_eq!(other.gauge("g"), None);
        assert_eq!(other.keys(), ["c_total", "h_seconds{a=1,b=2}"]);
    }
}
