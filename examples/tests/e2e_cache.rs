//! End-to-end: tollway-cache in front of a real HTTP client talking to the upstream simulator
//! over a socket. The simulator, which runs no tollway code, counts what reached it.

use std::time::Duration;
use tollway_test_support::TempDir;

use axum::body::Bytes;
use axum::http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tollway_cache::{CacheLayer, CacheStatus};
use tollway_examples::upstream::{DEFAULT_KEY, SEED_USER_IDS, Upstream};
use tower::{Layer, ServiceExt};

const CALLERS: usize = 32;

fn followers(sim: &Upstream, key: &str) -> Request<Empty<Bytes>> {
    let user = SEED_USER_IDS[0];
    Request::get(format!(
        "{}/v2/user/followers?user_id={user}&page_id=",
        sim.url()
    ))
    .header("x-access-key", key)
    .body(Empty::new())
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_callers_cost_one_fetch() {
    let sim = Upstream::builder()
        .add_key("second-key")
        .latency(Duration::from_millis(300))
        .spawn()
        .await
        .unwrap();
    let dir = TempDir::new("coalesce");
    let layer = CacheLayer::builder(dir.path()).build().unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let service = layer.layer(client);

    let mut callers = JoinSet::new();
    for _ in 0..CALLERS {
        let service = service.clone();
        let request = followers(&sim, DEFAULT_KEY);
        callers.spawn(async move {
            let response = service.oneshot(request).await.unwrap();
            let cache = CacheStatus::from_headers(response.headers());
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, cache, body)
        });
    }
    let mut bodies = Vec::new();
    let mut misses = 0;
    while let Some(joined) = callers.join_next().await {
        let (status, cache, body) = joined.unwrap();
        assert_eq!(status, 200);
        misses += usize::from(cache == Some(CacheStatus::Miss));
        bodies.push(body);
    }
    let stats = sim.stats();
    assert_eq!(stats.requests, 1, "{stats:?}");
    assert_eq!(stats.credits_charged, 1);
    assert_eq!(stats.duplicate_page_fetches, 0);
    assert_eq!(misses, 1);
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    let page: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert!(page["response"]["users"].is_array());

    // Later callers are hits; another key pays for its own copy, once.
    let hit = service
        .clone()
        .oneshot(followers(&sim, DEFAULT_KEY))
        .await
        .unwrap();
    assert_eq!(
        CacheStatus::from_headers(hit.headers()),
        Some(CacheStatus::Hit)
    );
    for _ in 0..2 {
        let other = service
            .clone()
            .oneshot(followers(&sim, "second-key"))
            .await
            .unwrap();
        assert_eq!(other.status(), 200);
    }
    assert_eq!(sim.stats().requests, 2);

    // A restarted process pays nothing for what was already bought.
    drop(service);
    let reopened = CacheLayer::builder(dir.path()).build().unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let again = reopened
        .layer(client)
        .oneshot(followers(&sim, DEFAULT_KEY))
        .await
        .unwrap();
    assert_eq!(
        CacheStatus::from_headers(again.headers()),
        Some(CacheStatus::Hit)
    );
    assert_eq!(sim.stats().requests, 2);
    sim.shutdown().await;
}
