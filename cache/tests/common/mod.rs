//! A counting mock upstream shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tollway_cache::{Cache, CacheBody, CacheLayer, CacheStatus};
use tollway_core::BoxError;
use tower::{Layer, ServiceExt};

/// What the mock answers to its `n`th call (from 0), given the request.
pub type Script =
    Arc<dyn Fn(usize, &Request<()>) -> Result<Response<Full<Bytes>>, BoxError> + Send + Sync>;

/// An upstream that counts its calls, waits `latency` (tokio time) and answers by `script`.
///
/// A named type rather than a boxed service: a type parameter holding `BoxError` would make
/// spawned futures trip rustc's "implementation of `From` is not general enough" (its
/// lifetime is erased in the future's witness).
#[derive(Clone)]
pub struct Upstream {
    calls: Arc<AtomicUsize>,
    latency: Duration,
    script: Script,
}

impl tower::Service<Request<()>> for Upstream {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let script = Arc::clone(&self.script);
        let latency = self.latency;
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            script(n, &request)
        })
    }
}

pub fn upstream(calls: Arc<AtomicUsize>, latency: Duration, script: Script) -> Upstream {
    Upstream {
        calls,
        latency,
        script,
    }
}

/// Answers 200 with a body naming the path, query and call number.
pub fn echo() -> Script {
    Arc::new(|n, request| {
        Ok(Response::new(Full::new(Bytes::from(format!(
            "{} #{n}",
            request.uri()
        )))))
    })
}

pub fn status(code: u16) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("status {code}"))));
    *response.status_mut() = StatusCode::from_u16(code).unwrap();
    response
}

/// A cache over `upstream`, with the call counter.
pub struct Harness {
    pub layer: CacheLayer,
    pub service: Cache<Upstream>,
    pub calls: Arc<AtomicUsize>,
}

impl Harness {
    pub fn new(layer: CacheLayer, latency: Duration, script: Script) -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let service = layer.layer(upstream(Arc::clone(&calls), latency, script));
        Self {
            layer,
            service,
            calls,
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub async fn send(&self, request: Request<()>) -> Result<Reply, BoxError> {
        let response = self.service.clone().oneshot(request).await?;
        Reply::read(response).await
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send(Request::get(uri).body(()).unwrap())
            .await
            .expect("a response")
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub cache: Option<CacheStatus>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(response: Response<CacheBody<Full<Bytes>>>) -> Result<Reply, BoxError> {
        let (head, body) = response.into_parts();
        Ok(Reply {
            status: head.status,
            cache: CacheStatus::from_headers(&head.headers),
            headers: head.headers,
            body: body.collect().await?.to_bytes(),
        })
    }
}

/// Every regular file under `dir`, recursively.
pub fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The entry files (64-hex names in shard folders) under `dir`.
pub fn entry_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect()
}
