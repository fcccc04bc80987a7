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
use crate::limiter::RateLimiter;
use crate::metrics;
use crate::queue::Acquire;

/// Sends requests no faster than its [`RateLimiter`] allows.
///
/// - `poll_ready` first waits for the inner service, then for a permit (so the permit is taken
///   as close to the send as possible), queueing fairly on tokio's timer. The permit it takes is
///   spent by the next `call`; a service dropped while holding one gives it back.
/// - If the wait would pass the limiter's `max_wait` or `max_queue`, `poll_ready` still returns
///   ready and the next `call` fails at once with [`RateLimited`] (the service itself stays
///   usable, as with tower's `LoadShed`).
/// - `call` without `poll_ready` does not panic: it takes a permit if one is free right now and
///   otherwise fails with [`RateLimited`].
/// - Every response is fed to the limiter's [`Adaptive`](crate::Adaptive) settings, if it has
///   them (429s and used-up windows pause all callers).
///
/// See the [crate docs](crate) for an example.
pub struct Limiter<S, C: LimiterClock = QuantaClock> {
    inner: S,
    gate: Gate<C>,
}

/// The service's permit state, with a `Drop` that returns an unspent permit.
struct Gate<C: LimiterClock> {
    limiter: RateLimiter<C>,
    state: State<C>,
}

enum State<C: LimiterClock> {
    Idle,
    Waiting(Acquire<C>),
    Permit,
    /// A refusal (`RateLimited`), or in fleet mode the store's error.
    Rejected(BoxError),
}

impl<C: LimiterClock> Drop for Gate<C> {
    fn drop(&mut self) {
        if matches!(self.state, State::Permit) {
            self.limiter.refund(1);
        }
    }
}

impl<S, C: LimiterClock> Limiter<S, C> {
    /// Wraps `inner` in `limiter` (shared with every clone of it).
    pub fn new(inner: S, limiter: RateLimiter<C>) -> Self {
        Self {
            inner,
            gate: Gate {
                limiter,
                state: State::Idle,
            },
        }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &RateLimiter<C> {
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

impl<S: Clone, C: LimiterClock> Clone for Limiter<S, C> {
    /// A clone shares the limiter; it holds no permit of its own yet.
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.gate.limiter.clone())
    }
}

impl<S: fmt::Debug, C: LimiterClock + fmt::Debug> fmt::Debug for Limiter<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.gate.state {
            State::Idle => "idle",
            State::Waiting(_) => "waiting",
            State::Permit => "permit",
            State::Rejected(_) => "rejected",
        };
        f.debug_struct("Limiter")
            .field("inner", &self.inner)
            .field("limiter", &self.gate.limiter)
            .field("state", &state)
            .finish()
    }
}

impl<S, Req, B, C> Service<Req> for Limiter<S, C>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    C: LimiterClock,
{
    type Response = http::Response<B>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.inner.poll_ready(cx)).map_err(Into::into)?;
        let gate = &mut self.gate;
        loop {
            match &mut gate.state {
                State::Permit | State::Rejected(_) => return Poll::Ready(Ok(())),
                State::Idle => match gate.limiter.shared.try_acquire_fast(1) {
                    Ok(()) => {
                        metrics::admitted();
                        gate.state = State::Permit;
                    }
                    Err(_) => gate.state = State::Waiting(gate.limiter.acquire()),
                },
                State::Waiting(acquire) => {
                    gate.state = match ready!(Pin::new(&mut *acquire).poll(cx)) {
                        Ok(()) => State::Permit,
                        Err(refused) => State::Rejected(
                            acquire.take_failure().unwrap_or_else(|| Box::new(refused)),
                        ),
                    };
                }
            }
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let gate = &mut self.gate;
        let admitted = match std::mem::replace(&mut gate.state, State::Idle) {
            State::Permit => Ok(()),
            State::Rejected(refused) => Err(refused),
            // `call` without a permit from `poll_ready` (a caller's bug): no waiting here, a
            // permit if one is free now, a refusal otherwise.
            State::Idle | State::Waiting(_) => match gate.limiter.shared.try_acquire_fast(1) {
                Ok(()) => {
                    metrics::admitted();
                    Ok(())
                }
                Err(wait) => {
                    metrics::rejected();
                    Err(Box::new(RateLimited::new(Duration::from_nanos(wait))) as BoxError)
                }
            },
        };
        match admitted {
            Ok(()) => {
                let observer = gate.limiter.is_adaptive().then(|| gate.limiter.clone());
                ResponseFuture::called(self.inner.call(request), observer)
            }
            Err(refused) => ResponseFuture::rejected(refused),
        }
    }
}
