//! [`Cache`], the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tollway_core::BoxError;
use tower::Service;

use crate::body::CacheBody;
use crate::future::ResponseFuture;
use crate::handle::CacheHandle;
use crate::layer::Shared;
use crate::serve::{Start, serve, start};

/// A disk cache in front of an HTTP service; built by [`CacheLayer`](crate::CacheLayer).
///
/// It is always ready: a request answered from the cache never waits for, or takes capacity
/// from, the inner service (a limiter's permit, say). On a miss the request drives a clone of
/// the inner service to readiness itself, so the inner service must be `Clone` (a tower
/// `Buffer`, or any client handle). It needs a tokio runtime with the blocking pool enabled:
/// file writes, and reads of large entries, run on it.
pub struct Cache<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Cache<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// A handle on this cache (shared with every clone of its layer and services), to
    /// invalidate entries.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(Arc::clone(&self.shared))
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
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

impl<S: Clone> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("dir", &self.shared.store.root())
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Cache<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<ResBody>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let plan = match start(&self.shared, &parts) {
            Start::Hit(response) => return ResponseFuture::ready(response),
            Start::PassThrough => None,
            Start::Cached(plan) => Some(plan),
        };
        let inner = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        ResponseFuture::boxed(Box::pin(serve(shared, inner, parts, body, plan)))
    }
}
