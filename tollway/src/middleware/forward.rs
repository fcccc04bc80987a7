//! [`Forward`]: the innermost service of a bridged stack, which hands each attempt back to the
//! middleware call that drives the stack.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body;
use tokio::sync::{mpsc, oneshot};
use tollway_core::BoxError;
use tower::Service;

/// One attempt the stack wants sent: the request, and where its answer goes.
pub(super) struct Job {
    pub(super) request: http::Request<reqwest::Body>,
    pub(super) reply: oneshot::Sender<Result<http::Response<reqwest::Body>, BoxError>>,
}

/// The client at the bottom of a bridged tollway stack. It sends nothing itself: each request
/// travels over a channel to the [`TollwayMiddleware::handle`](super::TollwayMiddleware) call
/// that made the stack, which runs it through the rest of the reqwest-middleware chain
/// (`Next::run`) and sends the answer back. So the stack stays `'static` (as the cache and
/// `tokio::spawn` need) although reqwest-middleware's `Next<'_>` borrows.
///
/// A request sent through a `Forward` whose middleware call has ended fails with a
/// [`ForwardClosed`] error.
#[derive(Clone)]
pub struct Forward {
    jobs: mpsc::UnboundedSender<Job>,
}

impl fmt::Debug for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forward")
            .field("closed", &self.jobs.is_closed())
            .finish()
    }
}

impl Forward {
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<Job>) {
        let (jobs, receiver) = mpsc::unbounded_channel();
        (Self { jobs }, receiver)
    }
}

/// The error of a request sent through a [`Forward`] whose middleware call has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardClosed;

impl fmt::Display for ForwardClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the reqwest-middleware call that owned this tollway stack has ended")
    }
}

impl std::error::Error for ForwardClosed {}

impl<B> Service<http::Request<B>> for Forward
where
    B: Body + Send + Sync + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<reqwest::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request: request.map(reqwest::Body::wrap),
            reply,
        };
        let sent = self.jobs.send(job).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(ForwardClosed.into());
            }
            answer.await.map_err(|_| BoxError::from(ForwardClosed))?
        })
    }
}
