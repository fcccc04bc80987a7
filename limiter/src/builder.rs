//! [`RateLimiterBuilder`]: how a [`RateLimiter`] (or a keyed one) is configured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::adaptive::{Adaptive, AimdState};
use crate::clock::{LimiterClock, QuantaClock};
use crate::gcra::Gcra;
use crate::limiter::{RateLimiter, Rates, Shared};
use crate::queue::WaitQueue;
use crate::quota::Quota;
use crate::store::{MemoryStore, SharedOptions, Store};
use crate::sync::{AtomicU64, AtomicUsize, Mutex};

/// Builds a [`RateLimiter`]; start with [`RateLimiter::builder`].
///
/// ```
/// use std::time::Duration;
/// use tollway_limiter::{Adaptive, Quota, RateLimiter};
///
/// let limiter = RateLimiter::builder(Quota::per_second(11).burst(1))
///     .quota(Quota::per_day(1_000_000).burst(1_000))
///     .max_wait(Duration::from_secs(30))
///     .max_queue(1_000)
///     .adaptive(Adaptive::new())
///     .build();
/// assert_eq!(limiter.quotas().len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct RateLimiterBuilder<C> {
    pub(crate) quotas: Vec<Quota>,
    clock: Option<C>,
    max_wait: Option<Duration>,
    max_queue: usize,
    adaptive: Option<Adaptive>,
    /// Read by shared stores only.
    pub(crate) shared_options: SharedOptions,
}

impl RateLimiterBuilder<QuantaClock> {
    pub(crate) fn new(quota: Quota) -> Self {
        Self {
            quotas: vec![quota],
            clock: None,
            max_wait: None,
            max_queue: usize::MAX,
            adaptive: None,
            shared_options: SharedOptions::default(),
        }
    }
}

impl<C: LimiterClock> RateLimiterBuilder<C> {
    /// Adds a quota that must also admit every request (all-or-nothing).
    #[must_use]
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// The longest a caller may wait in [`acquire`](RateLimiter::acquire) (or in the
    /// [`Limiter`](crate::Limiter)'s `poll_ready`). A caller whose expected wait is longer fails
    /// at once with [`RateLimited`](tollway_core::RateLimited); one already queued fails, at
    /// its turn, if a pause pushed its total wait past it (the queue then drains at once).
    /// `Duration::ZERO` never waits. Default: no bound.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The most callers that may wait at once; one more fails at once with
    /// [`RateLimited`](tollway_core::RateLimited). Default: no bound.
    #[must_use]
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = max_queue;
        self
    }

    /// Follows the upstream's answers; see [`Adaptive`]. Responses reach the limiter through
    /// the [`AdaptiveLimiter`](crate::AdaptiveLimiter) service (or
    /// [`RateLimiter::observe_response`]).
    #[must_use]
    pub fn adaptive(mut self, adaptive: Adaptive) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// Reads time from `clock` (for tests: `TokioClock` on tokio's paused clock, or a
    /// `FakeClock`). Default: [`QuantaClock`].
    pub fn clock<C2: LimiterClock>(self, clock: C2) -> RateLimiterBuilder<C2> {
        RateLimiterBuilder {
            quotas: self.quotas,
            clock: Some(clock),
            max_wait: self.max_wait,
            max_queue: self.max_queue,
            adaptive: self.adaptive,
            shared_options: self.shared_options,
        }
    }
}

impl<C: LimiterClock + Default> RateLimiterBuilder<C> {
    /// The limiter.
    pub fn build(self) -> RateLimiter<C> {
        let clock = self.clock.clone().unwrap_or_default();
        self.build_with(clock)
    }
}

impl<C: LimiterClock> RateLimiterBuilder<C> {
    pub(crate) fn build_with(&self, clock: C) -> RateLimiter<C> {
        let origin = clock.origin();
        self.build_with_origin(clock, origin, &self.quotas)
    }

    /// A limiter with `quotas` that counts time from `origin` (a value `clock.origin()`
    /// returned), so that limiters sharing a clock and an origin can be handed one reading.
    pub(crate) fn build_with_origin(
        &self,
        clock: C,
        origin: Instant,
        quotas: &[Quota],
    ) -> RateLimiter<C> {
        self.build_store(clock, origin, quotas, MemoryStore)
    }

    /// A limiter whose admissions `store` decides.
    pub(crate) fn build_store<St: Store<C>>(
        &self,
        clock: C,
        origin: Instant,
        quotas: &[Quota],
        store: St,
    ) -> RateLimiter<C, St> {
        RateLimiter {
            shared: Arc::new(Shared {
                gcra: Gcra::new(quotas),
                origin,
                clock,
                queue: Mutex::new(WaitQueue::default()),
                queued: AtomicUsize::new(0),
                max_wait: self.max_wait,
                max_queue: self.max_queue,
                adaptive: self.adaptive.clone(),
                paused_until: AtomicU64::new(0),
                rates: Mutex::new(Rates {
                    quotas: quotas.to_vec(),
                    aimd: AimdState::new(quotas[0]),
                }),
                store,
            }),
        }
    }

    /// A limiter over a shared `store`, with this builder's quotas.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn build_with_store<St: Store<C>>(&self, clock: C, store: St) -> RateLimiter<C, St> {
        let origin = clock.origin();
        self.build_store(clock, origin, &self.quotas, store)
    }

    /// Keeps `quota` as the only quota (a fleet limiter's local fallback).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn keep_only(&mut self, quota: Quota) {
        self.quotas = vec![quota];
    }

    pub(crate) fn has_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }

    pub(crate) fn clock_or(&self, default: impl FnOnce() -> C) -> C {
        self.clock.clone().unwrap_or_else(default)
    }
}
