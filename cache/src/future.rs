//! [`ResponseFuture`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use tollway_core::BoxError;

use crate::body::CacheBody;

pub(crate) type Boxed<B> =
    Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, BoxError>> + Send>>;

pin_project! {
    /// The future [`Cache`](crate::Cache) returns.
    ///
    /// A hit (from memory, or from a small file read in `call`) is ready at once: no
    /// allocation, no state machine. Everything else is boxed on purpose: a miss goes through
    /// several awaits (perhaps a wait for another caller's request, the upstream call, reading
    /// the body, a durable write), each costing microseconds or more; one allocation is not
    /// measurable next to them, and an `async` body is far easier to keep correct than a
    /// ten-state machine.
    pub struct ResponseFuture<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Ready { response: Option<Response<CacheBody<B>>> },
        Boxed { inner: Boxed<B> },
    }
}

impl<B> ResponseFuture<B> {
    pub(crate) fn ready(response: Response<CacheBody<B>>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    pub(crate) fn boxed(inner: Boxed<B>) -> Self {
        Self {
            kind: Kind::Boxed { inner },
        }
    }
}

impl<B> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ready = matches!(self.kind, Kind::Ready { .. });
        f.debug_struct("ResponseFuture")
            .field("ready", &ready)
            .finish_non_exhaustive()
    }
}

impl<B> Future for ResponseFuture<B> {
    type Output = Result<Response<CacheBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("ResponseFuture polled after it completed"),
            },
            KindProj::Boxed { inner } => inner.as_mut().poll(cx),
        }
    }
}
