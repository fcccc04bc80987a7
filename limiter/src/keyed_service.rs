//! [`KeyedLimiter`]: one limiter per host (or per a key computed from the request).

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tollway_core::{BoxError, RateLimited};
use tower::{Layer, Service};

use crate::clock::{LimiterClock, QuantaClock};
use crate::keyed::KeyedRateLimiter;
use crate::limiter::RateLimiter;
use crate::queue::Acquire;

/// Computes the key a request is limited by.
///
/// Implemented for closures `Fn(&Req) -> K` and for [`ByHost`].
pub trait KeyFor<Req> {
    /// The key.
    type Key: Hash + Eq + Clone;

    /// The key of `request`.
    fn key(&self, request: &Req) -> Self::Key;
}

impl<F, Req, K> KeyFor<Req> for F
where
    F: Fn(&Req) -> K,
    K: Hash + Eq + Clone,
{
    type Key = K;

    fn key(&self, request: &Req) -> K {
        self(request)
    }
}

/// Keys a request by its host: the URI's authority (`host:port`), or else the `Host` header,
/// lowercased; an empty key for neither.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByHost;

impl<B> KeyFor<http::Request<B>> for ByHost {
    type Key = String;

    /// The request's authority, lowercased (the breaker keys hosts the same way); an empty key
    /// when the request names none or a malformed one.
    fn key(&self, request: &http::Request<B>) -> String {
        tollway_core::headers::request_authority(request).map_or_else(String::new, String::from)
    }
}

/// Wraps services in a [`KeyedLimiter`]; clones share the one [`KeyedRateLimiter`].
pub struct KeyedLimiterLayer<F, K, C: LimiterClock = QuantaClock> {
    limiters: KeyedRateLimiter<K, C>,
    key: F,
}

impl<K, C: LimiterClock> KeyedLimiterLayer<ByHost, K, C> {
    /// One limiter per request host.
    pub fn by_host(limiters: KeyedRateLimiter<K, C>) -> Self {
        Self::new(limiters, ByHost)
    }
}

impl<F, K, C: LimiterClock> KeyedLimiterLayer<F, K, C> {
    /// One limiter per `key(request)`.
    pub fn new(limiters: KeyedRateLimiter<K, C>, key: F) -> Self {
        Self { limiters, key }
    }
}

impl<F: Clone, K, C: LimiterClock> Clone for KeyedLimiterLayer<F, K, C> {
    fn clone(&self) -> Self {
        Self {
            limiters: self.limiters.clone(),
            key: self.key.clone(),
        }
    }
}

impl<F, K, C: LimiterClock> fmt::Debug for KeyedLimiterLayer<F, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiterLayer")
            .field("limiters", &self.limiters)
            .finish_non_exhaustive()
    }
}

impl<S, F: Clone, K, C: LimiterClock> Layer<S> for KeyedLimiterLayer<F, K, C> {
    type Service = KeyedLimiter<S, F, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedLimiter {
            inner,
            limiters: self.limiters.clone(),
            key: self.key.clone(),
        }
    }
}

/// Limits each request by its key's limiter.
///
/// `poll_ready` waits for the inner service only (the key is not known before the request).
/// `call` takes a permit from the request's key if one is free; otherwise the returned future
/// waits for one in that key's fair queue (holding the ready inner service, and leaving a clone
/// in its place), then sends. A refusal (max wait, max queue) is a [`RateLimited`] error.
pub struct KeyedLimiter<S, F, K, C: LimiterClock = QuantaClock> {
    inner: S,
    limiters: KeyedRateLimiter<K, C>,
    key: F,
}

impl<S, F, K, C: LimiterClock> KeyedLimiter<S, F, K, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The shared limiters.
    pub fn limiters(&self) -> &KeyedRateLimiter<K, C> {
        &self.limiters
    }
}

impl<S: Clone, F: Clone, K, C: LimiterClock> Clone for KeyedLimiter<S, F, K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiters: self.limiters.clone(),
            key: self.key.clone(),
        }
    }
}

impl<S: fmt::Debug, F, K, C: LimiterClock> fmt::Debug for KeyedLimiter<S, F, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("inner", &self.inner)
            .field("limiters", &self.limiters)
            .finish_non_exhaustive()
    }
}

impl<S, F, Req, B, C> Service<Req> for KeyedLimiter<S, F, F::Key, C>
where
    S: Service<Req, Response = http::Response<B>> + Clone,
    S::Error: Into<BoxError>,
    F: KeyFor<Req>,
    C: LimiterClock,
{
    type Response = http::Response<B>;
    type Error = BoxError;
    type Future = KeyedResponseFuture<S, Req, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let key = self.key.key(&request);
        // Adaptation needs the key's full limiter to feed responses to; otherwise the bare
        // bucket answers, and the full limiter is made only if the request must wait.
        let observer = self
            .limiters
            .is_adaptive()
            .then(|| self.limiters.limiter(&key));
        let admitted = match &observer {
            Some(limiter) => limiter.shared.try_acquire_fast(1).is_ok(),
            None => self.limiters.check(&key).is_ok(),
        };
        if admitted {
            if observer.is_some() {
                crate::metrics::admitted();
            }
            return KeyedResponseFuture {
                state: KeyedState::Called {
                    future: self.inner.call(request),
                    observer,
                },
            };
        }
        // Wait in the key's queue with the service that was made ready.
        let limiter = observer
            .clone()
            .unwrap_or_else(|| self.limiters.limiter(&key));
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        KeyedResponseFuture {
            state: KeyedState::Waiting {
                acquire: limiter.acquire(),
                service: Some(ready),
                request: Some(request),
                observer,
            },
        }
    }
}

pin_project! {
    /// The future a [`KeyedLimiter`] returns.
    pub struct KeyedResponseFuture<S, Req, C>
    where
        S: Service<Req>,
        C: LimiterClock,
    {
        #[pin]
        state: KeyedState<S, Req, C>,
    }
}

pin_project! {
    #[project = KeyedStateProj]
    enum KeyedState<S, Req, C>
    where
        S: Service<Req>,
        C: LimiterClock,
    {
        Waiting {
            acquire: Acquire<C>,
            service: Option<S>,
            request: Option<Req>,
            observer: Option<RateLimiter<C>>,
        },
        Called {
            #[pin]
            future: S::Future,
            observer: Option<RateLimiter<C>>,
        },
        Done,
    }
}

impl<S, Req, C> fmt::Debug for KeyedResponseFuture<S, Req, C>
where
    S: Service<Req>,
    C: LimiterClock,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedResponseFuture")
            .finish_non_exhaustive()
    }
}

impl<S, Req, B, C> Future for KeyedResponseFuture<S, Req, C>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    C: LimiterClock,
{
    type Output = Result<http::Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                KeyedStateProj::Waiting {
                    acquire,
                    service,
                    request,
                    observer,
                } => {
                    let admitted: Result<(), RateLimited> = ready!(Pin::new(acquire).poll(cx));
                    let (Some(mut service), Some(request)) = (service.take(), request.take())
                    else {
                        return Poll::Ready(Err(
                            "KeyedResponseFuture polled after completion".into()
                        ));
                    };
                    let observer = observer.take();
                    if let Err(refused) = admitted {
                        state.set(KeyedState::Done);
                        return Poll::Ready(Err(Box::new(refused)));
                    }
                    let future = service.call(request);
                    state.set(KeyedState::Called { future, observer });
                }
                KeyedStateProj::Called { future, observer } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if let Some(limiter) = observer.take() {
                        limiter.observe_response(response.status(), response.headers());
                    }
                    return Poll::Ready(Ok(response));
                }
                KeyedStateProj::Done => {
                    return Poll::Ready(Err("KeyedResponseFuture polled after completion".into()));
                }
            }
        }
    }
}
