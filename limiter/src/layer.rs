//! [`LimiterLayer`] and [`AdaptiveLimiterLayer`].

use std::fmt;
use std::time::Duration;

use tower::Layer;

use crate::adaptive_service::AdaptiveLimiter;
use crate::clock::{LimiterClock, QuantaClock};
use crate::limiter::RateLimiter;
use crate::quota::Quota;
use crate::service::Limiter;
use crate::store::{MemoryStore, Store};

/// Wraps services in a [`Limiter`]: any `tower::Service`. Every service it makes, and every
/// clone of them, shares the one [`RateLimiter`]: cloning the layer does not create a second
/// limiter.
pub struct LimiterLayer<C: LimiterClock = QuantaClock, St: Store<C> = MemoryStore> {
    limiter: RateLimiter<C, St>,
    max_wait: Option<Duration>,
}

impl LimiterLayer<QuantaClock> {
    /// A layer over a new limiter with one quota (no bounds, no adaptation). Use
    /// [`from_limiter`](Self::from_limiter) with [`RateLimiter::builder`] for more.
    pub fn new(quota: Quota) -> Self {
        Self::from_limiter(RateLimiter::new(quota))
    }
}

impl<C: LimiterClock, St: Store<C>> LimiterLayer<C, St> {
    /// A layer over `limiter` (the caller may keep a clone to read it or change its rate).
    ///
    /// The services it makes read no response: a limiter built with
    /// [`adaptive`](crate::RateLimiterBuilder::adaptive) settings belongs in an
    /// [`AdaptiveLimiterLayer`] (a warning is logged otherwise).
    pub fn from_limiter(limiter: RateLimiter<C, St>) -> Self {
        if limiter.is_adaptive() {
            tracing::warn!(
                "an adaptive rate limiter in a LimiterLayer reads no response: \
                 use AdaptiveLimiterLayer to follow the upstream's 429s"
            );
        }
        Self {
            limiter,
            max_wait: None,
        }
    }

    /// Each service waits at most `max_wait` for a permit; see [`Limiter::max_wait`].
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &RateLimiter<C, St> {
        &self.limiter
    }
}

impl<C: LimiterClock, St: Store<C>> Clone for LimiterLayer<C, St> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            max_wait: self.max_wait,
        }
    }
}

impl<C: LimiterClock + fmt::Debug, St: Store<C>> fmt::Debug for LimiterLayer<C, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimiterLayer")
            .field("limiter", &self.limiter)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl<S, C: LimiterClock, St: Store<C>> Layer<S> for LimiterLayer<C, St> {
    type Service = Limiter<S, C, St>;

    fn layer(&self, inner: S) -> Self::Service {
        let service = Limiter::new(inner, self.limiter.clone());
        match self.max_wait {
            Some(max_wait) => service.max_wait(max_wait),
            None => service,
        }
    }
}

/// Wraps HTTP clients in an [`AdaptiveLimiter`]: a [`Limiter`] that also feeds every
/// response to the limiter's [`Adaptive`](crate::Adaptive) settings. Clones share the one
/// [`RateLimiter`].
pub struct AdaptiveLimiterLayer<C: LimiterClock = QuantaClock, St: Store<C> = MemoryStore> {
    limiter: RateLimiter<C, St>,
    max_wait: Option<Duration>,
}

impl<C: LimiterClock, St: Store<C>> AdaptiveLimiterLayer<C, St> {
    /// A layer over `limiter`.
    pub fn new(limiter: RateLimiter<C, St>) -> Self {
        Self {
            limiter,
            max_wait: None,
        }
    }

    /// Each service waits at most `max_wait` for a permit; see [`Limiter::max_wait`].
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &RateLimiter<C, St> {
        &self.limiter
    }
}

impl<C: LimiterClock, St: Store<C>> Clone for AdaptiveLimiterLayer<C, St> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            max_wait: self.max_wait,
        }
    }
}

impl<C: LimiterClock + fmt::Debug, St: Store<C>> fmt::Debug for AdaptiveLimiterLayer<C, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimiterLayer")
            .field("limiter", &self.limiter)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl<S, C: LimiterClock, St: Store<C>> Layer<S> for AdaptiveLimiterLayer<C, St> {
    type Service = AdaptiveLimiter<S, C, St>;

    fn layer(&self, inner: S) -> Self::Service {
        let service = AdaptiveLimiter::new(inner, self.limiter.clone());
        match self.max_wait {
            Some(max_wait) => service.max_wait(max_wait),
            None => service,
        }
    }
}
