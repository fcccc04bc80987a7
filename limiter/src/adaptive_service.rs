//! [`AdaptiveLimiter`]: the [`Limiter`] for HTTP clients, fed every response.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use tollway_core::BoxError;
use tower::Service;

use crate::clock::{LimiterClock, QuantaClock};
use crate::future::AdaptiveResponseFuture;
use crate::limiter::RateLimiter;
use crate::service::Limiter;
use crate::store::{MemoryStore, Store};

/// A [`Limiter`] around an HTTP client that also feeds every response to the limiter's
/// [`Adaptive`](crate::Adaptive) settings: the upstream's stated limit paces it, a 429 with
/// `Retry-After` (or a used-up window that contradicts the schedule) pauses every caller, and
/// [`Aimd`](crate::Aimd) lowers the rate until successes bring it back.
///
/// It needs responses that are `http::Response`s; everything else about waiting is the
/// [`Limiter`]'s. A limiter built without `Adaptive` settings ignores what it is fed.
///
/// See the [crate docs](crate) for an example.
pub struct AdaptiveLimiter<S, C: LimiterClock = QuantaClock, St: Store<C> = MemoryStore> {
    inner: Limiter<S, C, St>,
}

impl<S, C: LimiterClock, St: Store<C>> AdaptiveLimiter<S, C, St> {
    /// Wraps `inner` in `limiter` (shared with every clone of it).
    pub fn new(inner: S, limiter: RateLimiter<C, St>) -> Self {
        Self {
            inner: Limiter::new(inner, limiter),
        }
    }

    /// Waits at most `max_wait` for a permit; see [`Limiter::max_wait`].
    #[must_use]
    pub fn max_wait(self, max_wait: Duration) -> Self {
        Self {
            inner: self.inner.max_wait(max_wait),
        }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &RateLimiter<C, St> {
        self.inner.limiter()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// The inner service; a permit taken by `poll_ready` and not spent is given back.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S: Clone, C: LimiterClock, St: Store<C>> Clone for AdaptiveLimiter<S, C, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: fmt::Debug, C: LimiterClock + fmt::Debug, St: Store<C>> fmt::Debug
    for AdaptiveLimiter<S, C, St>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AdaptiveLimiter").field(&self.inner).finish()
    }
}

impl<S, Req, B, C, St> Service<Req> for AdaptiveLimiter<S, C, St>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    C: LimiterClock,
    St: Store<C>,
{
    type Response = http::Response<B>;
    type Error = BoxError;
    type Future = AdaptiveResponseFuture<S::Future, C, St>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let limiter = self.inner.limiter();
        let observer = limiter.is_adaptive().then(|| limiter.clone());
        AdaptiveResponseFuture::new(self.inner.call(request), observer)
    }
}
