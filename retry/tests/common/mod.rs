//! A scripted upstream for the retry tests: an in-process tower service on tokio's clock.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tokio::time::Instant;
use tollway_core::BoxError;
use tollway_retry::ReplayBody;
use tower::util::BoxCloneService;

/// What the upstream answers to one call.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    StatusWith(u16, &'static str, &'static str),
    Transport,
    Timeout,
    Rejected,
    /// Answers without reading the request body.
    StatusUnread(u16),
    /// Fails as a refused connection does: before reading a byte of the body.
    RefusedUnread,
}

/// One call the upstream saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
}

#[derive(Clone, Default)]
pub struct Script {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Script {
    pub fn new(replies: impl IntoIterator<Item = Reply>) -> Self {
        Self {
            replies: Arc::new(Mutex::new(replies.into_iter().collect())),
            seen: Arc::default(),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    pub fn calls(&self) -> usize {
        self.seen.lock().len()
    }

    /// The upstream: replies in order, then 200 forever.
    pub fn service<B>(&self) -> BoxCloneService<Request<ReplayBody<B>>, Response<()>, BoxError>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::fmt::Debug,
    {
        let script = self.clone();
        BoxCloneService::new(tower::service_fn(move |request: Request<ReplayBody<B>>| {
            let script = script.clone();
            async move {
                let reply = script
                    .replies
                    .lock()
                    .pop_front()
                    .unwrap_or(Reply::Status(200));
                let (parts, body) = request.into_parts();
                let body = match reply {
                    Reply::StatusUnread(_) | Reply::RefusedUnread => None,
                    _ => Some(body.collect().await.expect("body").to_bytes()),
                };
                script.seen.lock().push(Seen {
                    at: Instant::now(),
                    method: parts.method,
                    headers: parts.headers,
                    body,
                });
                respond(reply)
            }
        }))
    }
}

pub fn respond(reply: Reply) -> Result<Response<()>, BoxError> {
    let status = |code| StatusCode::from_u16(code).unwrap();
    match reply {
        Reply::Status(code) | Reply::StatusUnread(code) => {
            Ok(Response::builder().status(status(code)).body(()).unwrap())
        }
        Reply::StatusWith(code, name, value) => Ok(Response::builder()
            .status(status(code))
            .header(name, value)
            .body(())
            .unwrap()),
        Reply::Transport => Err(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        ))),
        Reply::RefusedUnread => Err(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))),
        Reply::Timeout => Err(Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut))),
        Reply::Rejected => Err(Box::new(tollway_core::RateLimited::new(
            Duration::from_secs(1),
        ))),
    }
}
