//! [`Limiter`]: the client-side rate-limiting service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tollway_core::{BoxError, RateLimited};
use tower::Service;

use crate::clock::{LimiterClock, QuantaClock};
use crate::future::ResponseFuture;
use crate::gcra::Grant;
use crate::limiter::RateLimiter;
use crate::metrics;
use crate::queue::Acquire;
use crate::store::{MemoryStore, Store};

/// Sends requests no faster than its [`RateLimiter`] allows. Works around any
/// `tower::Service`: rate limiting needs nothing from the requests or the responses.
///
/// - `poll_ready` first waits for the inner service, then for a permit (so the permit is taken
///   as close to the send as possible), queueing fairly on tokio's timer. The permit it takes is
///   spent by the next `call`; a service dropped while holding one gives it back (exactly: only
///   if nothing was admitted on top of it since, so it never hands out another caller's
///   permit; limiters of more than two quotas keep no record and do not give it back).
/// - If the wait would pass the limiter's `max_wait` (or this service's own
///   [`max_wait`](Self::max_wait)) or `max_queue`, `poll_ready` still returns ready and the
///   next `call` fails at once with [`RateLimited`] (the service itself stays usable, as with
///   tower's `LoadShed`).
/// - `call` without `poll_ready` does not panic: it takes a permit if one is free right now and
///   otherwise fails with [`RateLimited`].
/// - It reads no response. To follow the upstream's 429s and rate-limit headers, wrap an HTTP
///   client in [`AdaptiveLimiter`](crate::AdaptiveLimiter) instead.
///
/// ```
/// use tollway_limiter::{LimiterLayer, Quota};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tollway_limiter::BoxError> {
/// // Any service: here one that doubles numbers.
/// let double = service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x * 2) });
/// let limited = LimiterLayer::new(Quota::per_second(10).burst(2)).layer(double);
/// assert_eq!(limited.clone().oneshot(21).await?, 42);
/// # Ok(())
/// # }
/// ```
pub struct Limiter<S, C: LimiterClock = QuantaClock, St: Store<C> = MemoryStore> {
    inner: S,
    gate: Gate<C, St>,
}

/// The service's permit state, with a `Drop` that returns an unspent permit.
struct Gate<C: LimiterClock, St: Store<C>> {
    limiter: RateLimiter<C, St>,
    max_wait: Option<Duration>,
    /// A permit taken by `poll_ready` for the next `call`. Apart from `pending` (and never
    /// both): a `Grant` is plain data, so the hot path takes and gives it without drop glue.
    permit: Option<Grant>,
    pending: Pending<C, St>,
}

enum Pending<C: LimiterClock, St: Store<C>> {
    None,
    /// Boxed: the waiting state is large and rare.
    Waiting(Box<Acquire<C, St>>),
    /// A refusal (`RateLimited`), or in fleet mode the store's error.
    Rejected(BoxError),
}

impl<C: LimiterClock, St: Store<C>> Drop for Gate<C, St> {
    fn drop(&mut self) {
        if let Some(grant) = &self.permit {
            self.limiter.shared.undo(grant);
        }
    }
}

impl<S, C: LimiterClock, St: Store<C>> Limiter<S, C, St> {
    /// Wraps `inner` in `limiter` (shared with every clone of it).
    pub fn new(inner: S, limiter: RateLimiter<C, St>) -> Self {
        Self {
            inner,
            gate: Gate {
                limiter,
                max_wait: None,
                permit: None,
                pending: Pending::None,
            },
        }
    }

    /// Waits at most `max_wait` for a permit, on top of the limiter's own bound: a longer
    /// wait (a long pause the upstream ordered, a long queue) fails at once with
    /// [`RateLimited`] carrying the time left. Clones keep it.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.gate.max_wait = Some(max_wait);
        self
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &RateLimiter<C, St> {
        &self.gate.limiter
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service; a permit taken by `poll_ready` and not spent is given back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: LimiterClock, St: Store<C>> Clone for Limiter<S, C, St> {
    /// A clone shares the limiter; it holds no permit of its own yet.
    fn clone(&self) -> Self {
        let mut clone = Self::new(self.inner.clone(), self.gate.limiter.clone());
        clone.gate.max_wait = self.gate.max_wait;
        clone
    }
}

impl<S: fmt::Debug, C: LimiterClock + fmt::Debug, St: Store<C>> fmt::Debug for Limiter<S, C, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (&self.gate.permit, &self.gate.pending) {
            (Some(_), _) => "permit",
            (None, Pending::None) => "idle",
            (None, Pending::Waiting(_)) => "waiting",
            (None, Pending::Rejected(_)) => "rejected",
        };
        f.debug_struct("Limiter")
            .field("inner", &self.inner)
            .field("limiter", &self.gate.limiter)
            .field("max_wait", &self.gate.max_wait)
            .field("state", &state)
            .finish()
    }
}

impl<S, Req, C, St> Service<Req> for Limiter<S, C, St>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: LimiterClock,
    St: Store<C>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.inner.poll_ready(cx)).map_err(Into::into)?;
        let gate = &mut self.gate;
        if gate.permit.is_some() {
            return Poll::Ready(Ok(()));
        }
        loop {
            match &mut gate.pending {
                Pending::Rejected(_) => return Poll::Ready(Ok(())),
                Pending::None => match gate.limiter.shared.try_acquire_fast(1) {
                    Ok(grant) => {
                        metrics::admitted();
                        gate.permit = Some(grant);
                        return Poll::Ready(Ok(()));
                    }
                    Err(_) => {
                        let acquire = gate.limiter.acquire().within(gate.max_wait);
                        gate.pending = Pending::Waiting(Box::new(acquire));
                    }
                },
                Pending::Waiting(acquire) => {
                    let outcome = ready!(Pin::new(&mut **acquire).poll(cx));
                    match outcome {
                        Ok(()) => {
                            let grant = acquire.grant();
                            gate.pending = Pending::None;
                            gate.permit = Some(grant);
                        }
                        Err(refused) => {
                            let error = acquire.take_failure().unwrap_or_else(|| Box::new(refused));
                            gate.pending = Pending::Rejected(error);
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let gate = &mut self.gate;
        if gate.permit.take().is_some() {
            return ResponseFuture::called(self.inner.call(request));
        }
        match std::mem::replace(&mut gate.pending, Pending::None) {
            Pending::Rejected(refused) => ResponseFuture::rejected(refused),
            // `call` without a permit from `poll_ready` (a caller's bug): no waiting here, a
            // permit if one is free now, a refusal otherwise.
            Pending::None | Pending::Waiting(_) => match gate.limiter.shared.try_acquire_fast(1) {
                Ok(_) => {
                    metrics::admitted();
                    ResponseFuture::called(self.inner.call(request))
                }
                Err(wait) => {
                    metrics::rejected();
                    ResponseFuture::rejected(Box::new(RateLimited::new(Duration::from_nanos(wait))))
                }
            },
        }
    }
}
