//! [`BreakerLayer`]: builds [`Breaker`]s that share one breaker.

use std::sync::Arc;

use tollway_core::{Clock, SharedClock};
use tower::Layer;

use crate::circuit::Circuit;
use crate::config::BreakerConfig;
use crate::handle::BreakerHandle;
use crate::service::Breaker;

/// Wraps services in a [`Breaker`]. The breaker is created with the layer: every service the
/// layer (or a clone of it) wraps shares it.
#[derive(Debug)]
pub struct BreakerLayer {
    circuit: Arc<Circuit>,
}

impl Clone for BreakerLayer {
    fn clone(&self) -> Self {
        Self {
            circuit: Arc::clone(&self.circuit),
        }
    }
}

impl BreakerLayer {
    /// A layer with one new breaker on tokio's clock.
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_clock(config, SharedClock::default())
    }

    /// A layer with one new breaker reading time from `clock`
    /// ([`FakeClock`](tollway_core::FakeClock) in tests).
    pub fn with_clock(config: BreakerConfig, clock: impl Clock) -> Self {
        Self {
            circuit: Circuit::new(config, SharedClock::new(clock)),
        }
    }

    /// A handle on the breaker's state.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(Arc::clone(&self.circuit))
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker::from_circuit(inner, Arc::clone(&self.circuit))
    }
}
