//! `tollway_breaker_*` metrics through the `metrics` facade (feature `metrics`), with handles
//! registered once per breaker so the hot path does no label lookup. Install the recorder before
//! building breakers. Without the feature every method is an empty inline function.

#[cfg(not(feature = "metrics"))]
use crate::event::State;

#[cfg(feature = "metrics")]
mod enabled {
    use std::sync::Arc;

    use metrics::{Counter, Gauge, counter, gauge};

    use crate::event::State;

    #[derive(Debug)]
    pub(crate) struct Metrics {
        name: Arc<str>,
        success: Counter,
        failure: Counter,
        ignored: Counter,
        rejected: Counter,
        state: Gauge,
    }

    impl Metrics {
        pub(crate) fn new(name: &Arc<str>) -> Self {
            let calls = |result: &'static str| counter!("tollway_breaker_calls_total", "breaker" => name.to_string(), "result" => result);
            let state = gauge!("tollway_breaker_state", "breaker" => name.to_string());
            state.set(State::Closed.as_gauge());
            Self {
                name: Arc::clone(name),
                success: calls("success"),
                failure: calls("failure"),
                ignored: calls("ignored"),
                rejected: counter!("tollway_breaker_rejected_total", "breaker" => name.to_string()),
                state,
            }
        }

        #[inline]
        pub(crate) fn call(&self, failed: Option<bool>) {
            match failed {
                Some(true) => self.failure.increment(1),
                Some(false) => self.success.increment(1),
                None => self.ignored.increment(1),
            }
        }

        #[inline]
        pub(crate) fn rejected(&self) {
            self.rejected.increment(1);
        }

        pub(crate) fn transition(&self, from: State, to: State) {
            self.state.set(to.as_gauge());
            counter!(
                "tollway_breaker_transitions_total",
                "breaker" => self.name.to_string(),
                "from" => from.as_str(),
                "to" => to.as_str()
            )
            .increment(1);
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) use enabled::Metrics;

#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(crate) struct Metrics;

#[cfg(not(feature = "metrics"))]
impl Metrics {
    pub(crate) fn new(_name: &std::sync::Arc<str>) -> Self {
        Self
    }

    #[inline]
    pub(crate) fn call(&self, _failed: Option<bool>) {}

    #[inline]
    pub(crate) fn rejected(&self) {}

    pub(crate) fn transition(&self, _from: State, _to: State) {}
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use parking_lot::Mutex;
    use tollway_core::FakeClock;

    use crate::circuit::{Circuit, Verdict};
    use crate::config::{BreakerConfig, OpenDuration};
    use crate::event::State;

    /// Keeps every counter and gauge by `name{label=value,..}`.
    #[derive(Default)]
    struct Captured(Mutex<HashMap<String, Arc<AtomicU64>>>);

    impl Captured {
        fn slot(&self, key: &Key) -> Arc<AtomicU64> {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            Arc::clone(self.0.lock().entry(name).or_default())
        }

        fn get(&self, name: &str) -> u64 {
            self.0
                .lock()
                .get(name)
                .map_or(0, |v| v.load(Ordering::Relaxed))
        }
    }

    struct TestRecorder(Arc<Captured>);

    impl Recorder for TestRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.0.slot(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.0.slot(key))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn counts_calls_rejections_transitions_and_state() {
        let captured = Arc::new(Captured::default());
        let recorder = TestRecorder(Arc::clone(&captured));
        metrics::with_local_recorder(&recorder, || {
            let config = BreakerConfig::builder()
                .name("api")
                .consecutive_failures(2)
                .open_duration(OpenDuration::fixed(Duration::from_secs(1)))
                .build()
                .unwrap();
            let circuit = Circuit::new(config, FakeClock::new());
            for verdict in [
                Verdict::Success,
                Verdict::Ignored,
                Verdict::Failure { hint: None },
                Verdict::Failure { hint: None },
            ] {
                let ticket = circuit.admit().unwrap();
                circuit.finish(ticket, verdict, 0);
            }
            assert_eq!(circuit.state(), State::Open);
            assert!(circuit.admit().is_err());
            assert!(circuit.admit().is_err());
        });
        let get = |name: &str| captured.get(name);
        assert_eq!(
            get("tollway_breaker_calls_total{breaker=api,result=success}"),
            1
        );
        assert_eq!(
            get("tollway_breaker_calls_total{breaker=api,result=ignored}"),
            1
        );
        assert_eq!(
            get("tollway_breaker_calls_total{breaker=api,result=failure}"),
            2
        );
        assert_eq!(get("tollway_breaker_rejected_total{breaker=api}"), 2);
        assert_eq!(
            get("tollway_breaker_transitions_total{breaker=api,from=closed,to=open}"),
            1
        );
        let state = f64::from_bits(get("tollway_breaker_state{breaker=api}"));
        assert_eq!(state, State::Open.as_gauge());
    }
}
