//! Finding: server keys were stored as the whole header value, so 2,000 API keys of 200 KB
//! took the example server to 450 MB (here: 2,000 keys of 64 KB). Keys are fixed-size digests now: the key map's memory is
//! bounded in bytes whatever the headers carry. (Its own binary: it reads this process's
//! resident memory.)
#![cfg(all(feature = "server", target_os = "linux"))]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroUsize;

use axum::body::Body;
use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use http::{HeaderName, Request, Response};
use tollway_core::FakeClock;
use tollway_limiter::Quota;
use tollway_limiter::server::{HeaderKey, Limit, ServerLimiterLayer};
use tower::{Layer, Service, service_fn};

fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn huge_distinct_api_keys_cost_the_key_map_a_fixed_size_each() {
    let layer = ServerLimiterLayer::builder()
        .clock(FakeClock::new())
        .limit(Limit::new(
            "key",
            HeaderKey::new(HeaderName::from_static("x-api-key")),
            Quota::per_hour(1).burst(1),
        ))
        .max_keys(NonZeroUsize::new(2_000).unwrap())
        .build()
        .unwrap();
    let inner = service_fn(|_req: Request<Body>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Body::empty())))
    });
    let mut service = layer.layer(inner);
    let before = rss();
    for i in 0..2_000 {
        // 64 KB of key, different for each request.
        let key = format!("{i:08}{}", "k".repeat(64 * 1024));
        let mut request = Request::get("/")
            .header("x-api-key", key)
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo("192.0.2.1:1".parse::<SocketAddr>().unwrap()));
        let response = service.call(request).now_or_never().unwrap().unwrap();
        assert_eq!(response.status(), 200);
    }
    let grown = rss().saturating_sub(before);
    assert!((1_800..=layer.key_bound()).contains(&layer.tracked_keys()));
    assert!(layer.memory_used() <= layer.memory_bound());
    assert!(
        layer.memory_bound() < 1 << 20,
        "{} bytes for 2,000 keys",
        layer.memory_bound()
    );
    // The keys' text alone is 400 MB: none of it is kept.
    assert!(
        grown < 32 << 20,
        "resident memory grew by {} MiB",
        grown >> 20
    );
}
