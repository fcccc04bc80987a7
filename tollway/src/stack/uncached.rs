//! [`Uncached`]: the stack's stand-in for a cache that is switched off.

use std::task::{Context, Poll};

use super::future::UncachedFuture;
use http::Response;
use tollway_cache::CacheBody;
use tower::Service;

/// Passes requests to the inner service and wraps each response body in
/// [`CacheBody::uncached`], so that a [`ClientStack`](super::ClientStack) without a cache has
/// the same response type as one with it.
#[derive(Debug, Clone)]
pub struct Uncached<S> {
    inner: S,
}

impl<S> Uncached<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, B> Service<Req> for Uncached<S>
where
    S: Service<Req, Response = Response<B>>,
{
    type Response = Response<CacheBody<B>>;
    type Error = S::Error;
    type Future = UncachedFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        UncachedFuture::new(self.inner.call(request))
    }
}
