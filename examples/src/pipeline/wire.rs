//! [`WireLog`]: what each page's requests met on the wire, below every tollway layer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use parking_lot::Mutex;
use tollway_core::BoxError;
use tower::{Layer, Service};

/// A request extension that [`WireLogged`] fills with the answer to every attempt that was
/// sent for the request (retries included): the status, or `None` for a transport error or a
/// timeout. Attempts the layers refused locally never reach it. Clones share one log.
#[derive(Debug, Clone, Default)]
pub struct WireLog(Arc<Mutex<Vec<Option<StatusCode>>>>);

impl WireLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The answers so far, in order.
    pub fn entries(&self) -> Vec<Option<StatusCode>> {
        self.0.lock().clone()
    }

    fn push(&self, entry: Option<StatusCode>) {
        self.0.lock().push(entry);
    }
}

/// Wraps the base client: records each answer in the request's [`WireLog`], if it has one.
#[derive(Debug, Clone, Copy, Default)]
pub struct WireLogLayer;

impl<S> Layer<S> for WireLogLayer {
    type Service = WireLogged<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WireLogged { inner }
    }
}

/// The service [`WireLogLayer`] makes.
#[derive(Debug, Clone)]
pub struct WireLogged<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for WireLogged<S>
where
    S: Service<Request<B>, Response = Response<R>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let log = request.extensions().get::<WireLog>().cloned();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            if let Some(log) = log {
                log.push(result.as_ref().ok().map(Response::status));
            }
            result
        })
    }
}
