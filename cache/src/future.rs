//! [`ResponseFuture`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use tollway_core::BoxError;

use crate::body::CacheBody;

pub(crate) type Boxed<B> =
    Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, BoxError>> + Send>>;

/// The future [`Cache`](crate::Cache) returns.
///
/// It is boxed on purpose: a request goes through several awaits (a file read on the blocking
/// pool, perhaps a wait for another caller's request, the upstream call, reading the body, a
/// durable write), each of which costs microseconds; one allocation per call is not measurable
/// next to them, and an `async` body is far easier to keep correct than a ten-state machine.
pub struct ResponseFuture<B> {
    inner: Boxed<B>,
}

impl<B> ResponseFuture<B> {
    pub(crate) fn new(inner: Boxed<B>) -> Self {
        Self { inner }
    }
}

impl<B> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<B> Future for ResponseFuture<B> {
    type Output = Result<Response<CacheBody<B>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
