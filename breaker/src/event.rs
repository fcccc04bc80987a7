//! States, modes and the state-change events the breaker reports.

use std::fmt;
use std::sync::Arc;

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls fail fast with [`CircuitOpen`](crate::CircuitOpen); the inner service is not called.
    Open,
    /// A bounded number of probes go through; the rest fail fast.
    HalfOpen,
}

impl State {
    /// A short lowercase name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The value of the `tollway_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub const fn as_gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is in charge: the state machine, or an operator through a
/// [`BreakerHandle`](crate::BreakerHandle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The state machine decides.
    Normal,
    /// Held open until an operator closes or resets it.
    ForcedOpen,
    /// Every call goes through and nothing is counted.
    Disabled,
    /// Every call goes through and is counted; the breaker never trips (it logs when it would).
    MetricsOnly,
}

/// Why the state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Too many failures in a row.
    ConsecutiveFailures,
    /// The failure rate in the window reached the threshold.
    FailureRate,
    /// The slow-call rate in the window reached the threshold.
    SlowCallRate,
    /// The open duration elapsed and a probe was admitted.
    OpenElapsed,
    /// Enough probes succeeded.
    ProbesSucceeded,
    /// A probe failed.
    ProbeFailed,
    /// No probe answered within the probe timeout.
    ProbeTimeout,
    /// An operator used the handle.
    Manual,
}

impl Reason {
    /// A short lowercase name, for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConsecutiveFailures => "consecutive_failures",
            Self::FailureRate => "failure_rate",
            Self::SlowCallRate => "slow_call_rate",
            Self::OpenElapsed => "open_elapsed",
            Self::ProbesSucceeded => "probes_succeeded",
            Self::ProbeFailed => "probe_failed",
            Self::ProbeTimeout => "probe_timeout",
            Self::Manual => "manual",
        }
    }
}

/// A state change, as given to the
/// [`on_state_change`](crate::BreakerConfigBuilder::on_state_change) callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The breaker's name (its key, for keyed breakers).
    pub breaker: Arc<str>,
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// The mode after.
    pub mode: Mode,
    /// Why.
    pub reason: Reason,
    /// The generation the breaker entered: every state change starts a new one, and results of
    /// calls admitted in an earlier generation are ignored.
    pub generation: u64,
}
