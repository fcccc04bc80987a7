//! [`ServerLimiterLayer`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tower::Layer;

use super::builder::ServerLimiterBuilder;
use super::service::ServerLimiter;
use super::shared::{ShadowReport, Shared};
use crate::clock::{LimiterClock, QuantaClock};

/// Protects a service (an axum `Router`) with per-key rate limits, per-key concurrency and
/// priority admission. Clones share every bucket, counter and queue.
///
/// See [the module docs](crate::server) for an example.
pub struct ServerLimiterLayer<C: LimiterClock = QuantaClock> {
    pub(crate) shared: Arc<Shared<C>>,
}

impl<C: LimiterClock> Clone for ServerLimiterLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: LimiterClock> fmt::Debug for ServerLimiterLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerLimiterLayer")
            .field("limits", &self.shared.limits)
            .field("shadow", &self.shared.shadow)
            .finish_non_exhaustive()
    }
}

impl ServerLimiterLayer<QuantaClock> {
    /// Starts a layer: no limit, default headers and rejection, enforcing.
    pub fn builder() -> ServerLimiterBuilder<QuantaClock> {
        ServerLimiterBuilder::new()
    }
}

impl<C: LimiterClock> ServerLimiterLayer<C> {
    /// Keys the rate limits remember now, across every limit (the
    /// `tollway_limiter_tracked_keys` gauge).
    pub fn tracked_keys(&self) -> usize {
        self.shared.limits.tracked_keys()
    }

    /// The most keys the rate limits ever remember: each limit's `max_keys` rounded up to a
    /// multiple of its shard count, summed.
    pub fn key_bound(&self) -> usize {
        self.shared.limits.key_bound()
    }

    /// The most heap memory the rate limits' key maps ever hold, in bytes, however many
    /// distinct keys arrive and however long the headers they come from: keys are fixed-size
    /// (see [`Key`](super::Key)). About 80 bytes per key of
    /// [`max_keys`](ServerLimiterBuilder::max_keys) for a limit of one quota, 8 more per
    /// further quota.
    pub fn memory_bound(&self) -> usize {
        self.shared.limits.memory_bound()
    }

    /// The heap memory the rate limits' key maps hold now, in bytes (at most
    /// [`memory_bound`](Self::memory_bound)).
    pub fn memory_used(&self) -> usize {
        self.shared.limits.memory_used()
    }

    /// What shadow mode counted. Enforcing layers count too: `would_reject` is then the
    /// number of refusals, and `near_limit` is counted whenever policy state is read (policy
    /// headers on, or shadow mode).
    pub fn shadow_report(&self) -> ShadowReport {
        ShadowReport {
            would_reject: self.shared.limits.would_reject.load(Relaxed),
            near_limit: self.shared.limits.near_limit.load(Relaxed),
        }
    }

    /// Keys with a request in progress under the concurrency limit.
    pub fn in_flight_keys(&self) -> usize {
        self.shared
            .concurrency
            .as_ref()
            .map_or(0, |(_, in_flight)| in_flight.keys())
    }

    /// Requests holding a priority-admission slot, and requests waiting for one.
    pub fn queue_load(&self) -> (usize, usize) {
        self.shared
            .priority
            .as_ref()
            .map_or((0, 0), |(_, admission)| admission.load())
    }
}

impl<S, C: LimiterClock> Layer<S> for ServerLimiterLayer<C> {
    type Service = ServerLimiter<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerLimiter::new(inner, Arc::clone(&self.shared))
    }
}
