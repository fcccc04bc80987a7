//! [`BreakerHandle`]: read a breaker's state and counts, and override it.

use std::sync::Arc;

use crate::circuit::{BreakerCounts, Circuit};
use crate::event::{Mode, State};

/// A handle on a breaker's shared state; cheap to clone. Get one from
/// [`BreakerLayer::handle`](crate::BreakerLayer::handle), [`Breaker::handle`](crate::Breaker::handle)
/// or [`KeyedBreakerHandle::get`](crate::KeyedBreakerHandle::get).
///
/// Every override starts a new generation: results of calls admitted before it are ignored.
#[derive(Debug)]
pub struct BreakerHandle {
    circuit: Arc<Circuit>,
}

impl Clone for BreakerHandle {
    fn clone(&self) -> Self {
        Self {
            circuit: Arc::clone(&self.circuit),
        }
    }
}

impl BreakerHandle {
    pub(crate) const fn new(circuit: Arc<Circuit>) -> Self {
        Self { circuit }
    }

    /// The breaker's name (its key, for keyed breakers).
    pub fn name(&self) -> &str {
        self.circuit.config().name()
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.circuit.state()
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.circuit.mode()
    }

    /// A snapshot of the state and counts.
    pub fn counts(&self) -> BreakerCounts {
        self.circuit.counts()
    }

    /// Holds the breaker open: every call fails fast with
    /// [`CircuitOpen`](crate::CircuitOpen) (its `retry_after` is the base open duration) until
    /// [`force_closed`](Self::force_closed) or [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.circuit.force(State::Open, Mode::ForcedOpen, false);
    }

    /// Closes the breaker now and returns it to normal mode, clearing the window and the
    /// consecutive-failure count. The trip count is kept, so if the upstream is still down the
    /// next open lasts longer; [`reset`](Self::reset) forgets it too.
    pub fn force_closed(&self) {
        self.circuit.force(State::Closed, Mode::Normal, false);
    }

    /// Lets every call through and counts nothing, until [`reset`](Self::reset),
    /// [`force_closed`](Self::force_closed) or another override.
    pub fn disable(&self) {
        self.circuit.force(State::Closed, Mode::Disabled, false);
    }

    /// Lets every call through and counts it (metrics, counts), but never trips: a would-be
    /// trip is logged at `debug`. Use it to tune thresholds on live traffic.
    pub fn metrics_only(&self) {
        self.circuit.force(State::Closed, Mode::MetricsOnly, false);
    }

    /// Back to the initial state: closed, normal mode, empty window, no trips.
    pub fn reset(&self) {
        self.circuit.force(State::Closed, Mode::Normal, true);
    }
}
