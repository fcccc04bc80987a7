//! What the application does to the cache: reject responses before they are stored
//! (`CacheBuilder::validate`) and take back stored ones (`CacheHandle::invalidate`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, Script, echo};
use http::{Request, Response};
use http_body_util::Full;
use tokio::task::JoinSet;
use tollway_cache::{CacheLayer, CacheStatus};

const URL: &str = "https://api.test/v2/user/followers?user_id=1&page_id=";

/// An upstream that answers a truncated page `broken` times, then the whole page.
fn flaky(broken: usize) -> Script {
    Arc::new(move |n, _: &Request<()>| {
        let body = if n < broken {
            "{\"users\": [1, 2"
        } else {
            "{\"users\": [1, 2, 3]}"
        };
        Ok(Response::new(Full::new(Bytes::from(body))))
    })
}

fn parses(body: &[u8]) -> bool {
    body.starts_with(b"{") && body.ends_with(b"}")
}

#[tokio::test]
async fn a_rejected_response_reaches_its_caller_but_is_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let layer = CacheLayer::builder(dir.path())
        .validate(|head, body| head.status == 200 && parses(body))
        .build()
        .unwrap();
    let h = Harness::new(layer, Duration::ZERO, flaky(2));
    for _ in 0..2 {
        let broken = h.get(URL).await;
        assert_eq!(broken.body, "{\"users\": [1, 2");
        assert_eq!(broken.cache, Some(CacheStatus::Miss));
    }
    assert!(h.layer.is_empty());
    let good = h.get(URL).await;
    assert_eq!(good.body, "{\"users\": [1, 2, 3]}");
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Hit));
    assert_eq!(h.calls(), 3);
}

#[tokio::test]
async fn without_the_check_a_broken_page_would_stay() {
    // The control: the same upstream, no validation, serves the broken page for its lifetime.
    let dir = tempfile::tempdir().unwrap();
    let layer = CacheLayer::builder(dir.path()).build().unwrap();
    let h = Harness::new(layer, Duration::ZERO, flaky(1));
    h.get(URL).await;
    let again = h.get(URL).await;
    assert_eq!(
        (again.body, again.cache),
        ("{\"users\": [1, 2".into(), Some(CacheStatus::Hit))
    );
}

#[tokio::test(start_paused = true)]
async fn a_rejected_leader_hands_over_to_one_waiter_not_to_all() {
    let dir = tempfile::tempdir().unwrap();
    let layer = CacheLayer::builder(dir.path())
        .validate(|_, body| parses(body))
        .build()
        .unwrap();
    let h = Arc::new(Harness::new(layer, Duration::from_millis(100), flaky(1)));
    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let h = Arc::clone(&h);
        tasks.spawn(async move { h.get(URL).await });
    }
    let mut broken = 0;
    while let Some(reply) = tasks.join_next().await {
        broken += usize::from(!parses(&reply.unwrap().body));
    }
    assert_eq!(
        broken, 1,
        "nobody but its own caller gets the rejected page"
    );
    assert_eq!(h.calls(), 2);
}

#[tokio::test]
async fn invalidate_takes_back_a_stored_answer_for_every_clone() {
    let dir = tempfile::tempdir().unwrap();
    let layer = CacheLayer::builder(dir.path()).build().unwrap();
    let h = Harness::new(layer.clone(), Duration::ZERO, flaky(1));
    assert_eq!(h.get(URL).await.body, "{\"users\": [1, 2");
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Hit));
    // The application finds it broken; a handle from another clone of the layer, or from the
    // service, reaches the same cache (disk and memory tier).
    let handle = layer.clone().handle();
    let request = Request::get(URL).body(()).unwrap();
    assert!(handle.invalidate(&request).await.unwrap());
    assert!(!h.service.handle().invalidate(&request).await.unwrap());
    let fresh = h.get(URL).await;
    assert_eq!(
        (fresh.body, fresh.cache),
        ("{\"users\": [1, 2, 3]}".into(), Some(CacheStatus::Miss))
    );
    assert_eq!(h.calls(), 2);
    assert_eq!(handle.len(), 1);
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Hit));
}

#[tokio::test]
async fn invalidate_uses_the_request_s_key_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let layer = CacheLayer::builder(dir.path()).build().unwrap();
    let h = Harness::new(layer.clone(), Duration::ZERO, echo());
    let keyed = |key: &str| {
        Request::get(URL)
            .header("x-access-key", key)
            .body(())
            .unwrap()
    };
    h.send(keyed("a")).await.unwrap();
    h.send(keyed("b")).await.unwrap();
    // Query order does not matter, the credential does.
    let reordered = Request::get("https://api.test/v2/user/followers?page_id=&user_id=1")
        .header("x-access-key", "a")
        .body(())
        .unwrap();
    assert!(layer.handle().invalidate(&reordered).await.unwrap());
    drop(h);
    let reopened = CacheLayer::builder(dir.path()).build().unwrap();
    let h = Harness::new(reopened, Duration::ZERO, echo());
    assert_eq!(
        h.send(keyed("a")).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    assert_eq!(
        h.send(keyed("b")).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
}

#[tokio::test]
async fn invalidation_reaches_another_process_sharing_the_folder() {
    // Two layers on one folder stand for two processes.
    let dir = tempfile::tempdir().unwrap();
    let first = Harness::new(
        CacheLayer::builder(dir.path())
            .memory_bytes(0)
            .build()
            .unwrap(),
        Duration::ZERO,
        echo(),
    );
    let second = Harness::new(
        CacheLayer::builder(dir.path())
            .memory_bytes(0)
            .build()
            .unwrap(),
        Duration::ZERO,
        echo(),
    );
    first.get(URL).await;
    assert_eq!(second.get(URL).await.cache, Some(CacheStatus::Hit));
    let request = Request::get(URL).body(()).unwrap();
    assert!(first.layer.handle().invalidate(&request).await.unwrap());
    assert_eq!(second.get(URL).await.cache, Some(CacheStatus::Miss));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalidation_racing_readers_is_never_undone_by_the_memory_tier() {
    // Readers that loaded the file just before it was removed must not put it back in their
    // memory tier after the removal. One layer writes; the other (with its memory tier) reads
    // from disk, races its own invalidation, and must not serve the old body afterwards.
    let dir = tempfile::tempdir().unwrap();
    let writer = Harness::new(
        CacheLayer::builder(dir.path()).build().unwrap(),
        Duration::ZERO,
        echo(),
    );
    let reader = Arc::new(Harness::new(
        CacheLayer::builder(dir.path()).build().unwrap(),
        Duration::ZERO,
        Arc::new(|n, _: &Request<()>| {
            Ok(Response::new(Full::new(Bytes::from(format!("fresh {n}")))))
        }),
    ));
    let handle = reader.layer.handle();
    for round in 0..200 {
        let url = format!("https://api.test/race?round={round}");
        let stored = writer.get(&url).await.body;
        let mut readers = JoinSet::new();
        for _ in 0..3 {
            let reader = Arc::clone(&reader);
            let url = url.clone();
            readers.spawn(async move { reader.get(&url).await });
        }
        let request = Request::get(url.as_str()).body(()).unwrap();
        handle.invalidate(&request).await.unwrap();
        while let Some(reply) = readers.join_next().await {
            reply.unwrap();
        }
        let after = reader.get(&url).await;
        assert_ne!(
            after.body, stored,
            "round {round}: the invalidated entry came back"
        );
    }
}
