//! [`ResponseFuture`]: the response, observed on its way back.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tollway_core::{BoxError, RateLimited};

use crate::clock::{LimiterClock, QuantaClock};
use crate::limiter::RateLimiter;

pin_project! {
    /// The future a [`Limiter`](crate::Limiter) returns: the inner service's response, fed to
    /// the limiter's adaptation on the way back, or the limiter's refusal.
    pub struct ResponseFuture<F, C: LimiterClock = QuantaClock> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C: LimiterClock> {
        Called {
            #[pin]
            future: F,
            observer: Option<RateLimiter<C>>,
        },
        Rejected {
            error: Option<BoxError>,
        },
    }
}

impl<F, C: LimiterClock> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, observer: Option<RateLimiter<C>>) -> Self {
        Self {
            kind: Kind::Called { future, observer },
        }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, C: LimiterClock> fmt::Debug for ResponseFuture<F, C> {
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

impl<F, B, E, C> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    C: LimiterClock,
{
    type Output = Result<http::Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, observer } => {
                let response = ready!(future.poll(cx)).map_err(Into::into)?;
                if let Some(limiter) = observer.take() {
                    limiter.observe_response(response.status(), response.headers());
                }
                Poll::Ready(Ok(response))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| Box::new(RateLimited::new(std::time::Duration::ZERO))))),
        }
    }
}
