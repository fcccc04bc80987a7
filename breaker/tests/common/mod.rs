//! A scripted inner service for the breaker's tests.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use parking_lot::Mutex;
use tollway_core::BoxError;
use tower::{Service, ServiceExt};

/// What the mock upstream does with one call.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    StatusWithRetryAfter(u16, &'static str),
    Io(std::io::ErrorKind),
    /// Answers with the status after the delay (on tokio's clock).
    After(Duration, u16),
    /// Never answers.
    Hang,
}

#[derive(Debug, Clone, Default)]
pub struct Mock {
    pub script: Arc<Mutex<VecDeque<Reply>>>,
    pub calls: Arc<AtomicUsize>,
    pub polls: Arc<AtomicUsize>,
}

impl Mock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues replies; when the script is empty the mock answers 200.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().extend(replies);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<()>, BoxError>> + Send>>;

impl Service<Request<()>> for Mock {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> BoxFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let reply = self.script.lock().pop_front().unwrap_or(Reply::Status(200));
        Box::pin(async move {
            let status = |code: u16| {
                Response::builder()
                    .status(code)
                    .body(())
                    .map_err(BoxError::from)
            };
            match reply {
                Reply::Status(code) => status(code),
                Reply::StatusWithRetryAfter(code, after) => Ok(Response::builder()
                    .status(code)
                    .header("retry-after", after)
                    .body(())?),
                Reply::Io(kind) => Err(std::io::Error::from(kind).into()),
                Reply::After(delay, code) => {
                    tokio::time::sleep(delay).await;
                    status(code)
                }
                Reply::Hang => std::future::pending().await,
            }
        })
    }
}

/// Sends one request; the status, or the error.
pub async fn send<S>(service: &mut S) -> Result<StatusCode, BoxError>
where
    S: Service<Request<()>, Response = Response<()>, Error = BoxError>,
{
    let response = service.ready().await?.call(Request::new(())).await?;
    Ok(response.status())
}

/// The `retry_after` of a `CircuitOpen` error, or a panic saying what came instead.
pub fn open_for(result: Result<StatusCode, BoxError>) -> Duration {
    match result {
        Err(e) => e
            .downcast_ref::<tollway_core::CircuitOpen>()
            .unwrap_or_else(|| panic!("expected CircuitOpen, got {e}"))
            .retry_after(),
        Ok(status) => panic!("expected CircuitOpen, got {status}"),
    }
}
