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
