//! [`ResponseFuture`] and [`AdaptiveResponseFuture`]: the response, or the limiter's refusal.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tollway_core::{BoxError, RateLimited};

use crate::clock::{LimiterClock, QuantaClock};
use crate::limiter::RateLimiter;
use crate::store::{MemoryStore, Store};

pin_project! {
    /// The future a [`Limiter`](crate::Limiter) returns: the inner service's response, or the
    /// limiter's refusal.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called {
            #[pin]
            future: F,
        },
        Rejected {
            error: Option<BoxError>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(future: F) -> Self {
        Self {
            kind: Kind::Called { future },
        }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future } => future.poll(cx).map_err(Into::into),
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| Box::new(RateLimited::new(std::time::Duration::ZERO))))),
        }
    }
}

pin_project! {
    /// The future an [`AdaptiveLimiter`](crate::AdaptiveLimiter) returns: the
    /// [`ResponseFuture`], with the response fed to the limiter's adaptation on its way back.
    pub struct AdaptiveResponseFuture<F, C: LimiterClock = QuantaClock, St: Store<C> = MemoryStore> {
        #[pin]
        inner: ResponseFuture<F>,
        observer: Option<RateLimiter<C, St>>,
    }
}

impl<F, C: LimiterClock, St: Store<C>> AdaptiveResponseFuture<F, C, St> {
    pub(crate) fn new(inner: ResponseFuture<F>, observer: Option<RateLimiter<C, St>>) -> Self {
        Self { inner, observer }
    }
}

impl<F, C: LimiterClock, St: Store<C>> fmt::Debug for AdaptiveResponseFuture<F, C, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveResponseFuture")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<F, B, E, C, St> Future for AdaptiveResponseFuture<F, C, St>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    C: LimiterClock,
    St: Store<C>,
{
    type Output = Result<http::Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        if let Some(limiter) = this.observer.take() {
            limiter.observe_response(response.status(), response.headers());
        }
        Poll::Ready(Ok(response))
    }
}
