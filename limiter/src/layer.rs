//! [`LimiterLayer`].

use std::fmt;

use tower::Layer;

use crate::clock::{LimiterClock, QuantaClock};
use crate::limiter::RateLimiter;
use crate::quota::Quota;
use crate::service::Limiter;

/// Wraps services in a [`Limiter`]. Every service it makes, and every clone of them, shares
/// the one [`RateLimiter`]: cloning the layer does not create a second limiter.
pub struct LimiterLayer<C: LimiterClock = QuantaClock> {
    limiter: RateLimiter<C>,
}

impl LimiterLayer<QuantaClock> {
    /// A layer over a new limiter with one quota (no bounds, no adaptation). Use
    /// [`from_limiter`](Self::from_limiter) with [`RateLimiter::builder`] for more.
    pub fn new(quota: Quota) -> Self {
        Self::from_limiter(RateLimiter::new(quota))
    }
}

impl<C: LimiterClock> LimiterLayer<C> {
    /// A layer over `limiter` (the caller may keep a clone to read it or change its rate).
    pub fn from_limiter(limiter: RateLimiter<C>) -> Self {
        Self { limiter }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &RateLimiter<C> {
        &self.limiter
    }
}

impl<C: LimiterClock> Clone for LimiterLayer<C> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
        }
    }
}

impl<C: LimiterClock + fmt::Debug> fmt::Debug for LimiterLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimiterLayer")
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl<S, C: LimiterClock> Layer<S> for LimiterLayer<C> {
    type Service = Limiter<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Limiter::new(inner, self.limiter.clone())
    }
}
