//! Behaviour of the cache service against a counting mock upstream, on tokio's paused clock
//! (coalescing) and tollway's FakeClock (lifetimes).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, echo, entry_files, files, status};
use http::{Method, Request, Response};
use http_body_util::Full;
use tokio::task::JoinSet;
use tollway_cache::{CacheLayer, CacheStatus};
use tollway_core::{BudgetExhausted, CircuitOpen, ExhaustedReason, FakeClock};

const URL: &str = "https://api.test/v2/user/followers?user_id=1&page_id=";

fn layer(dir: &tempfile::TempDir) -> tollway_cache::CacheBuilder {
    CacheLayer::builder(dir.path())
}

#[tokio::test]
async fn second_identical_request_is_a_hit_and_query_order_does_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(layer(&dir).build().unwrap(), Duration::ZERO, echo());
    let first = h.get(URL).await;
    assert_eq!(first.cache, Some(CacheStatus::Miss));
    let second = h
        .get("https://api.test/v2/user/followers?page_id=&user_id=1")
        .await;
    assert_eq!(second.cache, Some(CacheStatus::Hit));
    assert_eq!(second.body, first.body);
    assert!(second.headers.contains_key(http::header::AGE));
    assert_eq!(h.calls(), 1);
    // HEAD is cached under its own key.
    let head = h.send(Request::head(URL).body(()).unwrap()).await.unwrap();
    assert_eq!(head.cache, Some(CacheStatus::Miss));
    assert_eq!(h.calls(), 2);
    assert_eq!(h.layer.len(), 2);
    assert_eq!(entry_files(dir.path()).len(), 2);
}

#[tokio::test]
async fn entries_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = Harness::new(layer(&dir).build().unwrap(), Duration::ZERO, echo());
    let paid = first.get(URL).await;
    drop(first);
    let second = Harness::new(layer(&dir).build().unwrap(), Duration::ZERO, echo());
    assert_eq!(second.layer.len(), 1);
    let again = second.get(URL).await;
    assert_eq!(again.cache, Some(CacheStatus::Hit));
    assert_eq!(again.body, paid.body);
    assert_eq!(second.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn concurrent_identical_misses_send_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let h = Arc::new(Harness::new(
        layer(&dir).build().unwrap(),
        Duration::from_millis(200),
        echo(),
    ));
    let mut tasks = JoinSet::new();
    for _ in 0..64 {
        let h = Arc::clone(&h);
        tasks.spawn(async move { h.get(URL).await });
    }
    let mut by_status = std::collections::HashMap::new();
    let mut bodies = std::collections::HashSet::new();
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        *by_status.entry(reply.cache.unwrap()).or_insert(0) += 1;
        bodies.insert(reply.body);
    }
    assert_eq!(h.calls(), 1);
    assert_eq!(bodies.len(), 1);
    assert_eq!(by_status.get(&CacheStatus::Miss), Some(&1));
    assert_eq!(
        by_status.get(&CacheStatus::Coalesced).copied().unwrap_or(0)
            + by_status.get(&CacheStatus::Hit).copied().unwrap_or(0),
        63
    );
    // Different keys are not coalesced.
    let other = h.get("https://api.test/v2/user/followers?user_id=2").await;
    assert_eq!(other.cache, Some(CacheStatus::Miss));
    assert_eq!(h.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_leader_is_replaced_by_a_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let h = Arc::new(Harness::new(
        layer(&dir).build().unwrap(),
        Duration::from_millis(100),
        echo(),
    ));
    let leader = {
        let h = Arc::clone(&h);
        tokio::spawn(async move { h.get(URL).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(h.calls(), 1);
    let mut waiters = JoinSet::new();
    for _ in 0..8 {
        let h = Arc::clone(&h);
        waiters.spawn(async move { h.get(URL).await });
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    let mut misses = 0;
    while let Some(reply) = waiters.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200);
        misses += usize::from(reply.cache == Some(CacheStatus::Miss));
    }
    assert_eq!(misses, 1, "exactly one waiter took over");
    assert_eq!(h.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_leader_is_replaced_and_errors_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let h = Arc::new(Harness::new(
        layer(&dir).build().unwrap(),
        Duration::from_millis(100),
        Arc::new(|n, _: &Request<()>| {
            if n == 0 {
                Err("connection reset".into())
            } else {
                Ok(Response::new(Full::new(Bytes::from("ok"))))
            }
        }),
    ));
    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let h = Arc::clone(&h);
        tasks.spawn(async move { h.send(Request::get(URL).body(()).unwrap()).await });
    }
    let (mut errors, mut oks) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(reply) => {
                assert_eq!(reply.body, "ok");
                oks += 1;
            }
            Err(_) => errors += 1,
        }
    }
    assert_eq!((errors, oks), (1, 9));
    assert_eq!(
        h.calls(),
        2,
        "the error was not shared, one waiter took over"
    );
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Hit));
}

#[tokio::test]
async fn two_credentials_never_share_an_entry_and_never_reach_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(layer(&dir).build().unwrap(), Duration::ZERO, echo());
    let secrets = [
        ("x-access-key", "key-AAAA-1111-secret"),
        ("x-access-key", "key-BBBB-2222-secret"),
        ("authorization", "Bearer tok-CCCC-3333"),
        ("x-api-key", "api-DDDD-4444"),
    ];
    for (name, value) in secrets {
        let reply = h
            .send(Request::get(URL).header(name, value).body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(reply.cache, Some(CacheStatus::Miss), "{name}: {value}");
    }
    assert_eq!(h.calls(), 4);
    assert_eq!(h.layer.len(), 4);
    let again = h
        .send(
            Request::get(URL)
                .header("x-access-key", "key-AAAA-1111-secret")
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(again.cache, Some(CacheStatus::Hit));
    for file in files(dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        for (_, value) in secrets {
            let found = bytes.windows(value.len()).any(|w| w == value.as_bytes());
            assert!(!found, "{value} found in {}", file.display());
        }
    }
}

#[tokio::test]
async fn ttl_rules_and_closure_decide_lifetimes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let layer = layer(&dir)
        .clock(clock.clone())
        .ttl(Duration::from_secs(60))
        .route_ttl("/sys/balance", Duration::ZERO)
        .route_ttl("/v2", Duration::from_secs(10))
        .route_ttl("/v2/long", Duration::from_secs(1000))
        .ttl_fn(|parts| (parts.uri.query() == Some("pin=1")).then_some(Duration::from_secs(5)))
        .build()
        .unwrap();
    let h = Harness::new(layer, Duration::ZERO, echo());
    let root = "https://api.test";
    for path in ["/v2/a", "/v2/long/a", "/other", "/x?pin=1"] {
        h.get(&format!("{root}{path}")).await;
    }
    h.get(&format!("{root}/sys/balance")).await;
    assert_eq!(h.layer.len(), 4, "the balance is never stored");
    assert_eq!(
        h.get(&format!("{root}/sys/balance")).await.cache,
        Some(CacheStatus::Miss)
    );
    clock.advance(Duration::from_secs(4));
    assert_eq!(cached(&h, root, "/x?pin=1").await, (true, true));
    clock.advance(Duration::from_secs(2)); // 6 s
    assert_eq!(cached(&h, root, "/x?pin=1").await, (false, false));
    assert_eq!(cached(&h, root, "/v2/a").await, (true, true));
    clock.advance(Duration::from_secs(5)); // 11 s
    assert_eq!(cached(&h, root, "/v2/a").await, (false, false));
    assert_eq!(cached(&h, root, "/v2/long/a").await, (true, true));
    assert_eq!(cached(&h, root, "/other").await, (true, true));
    clock.advance(Duration::from_secs(50)); // 61 s
    assert_eq!(cached(&h, root, "/other").await, (false, false));
    assert_eq!(cached(&h, root, "/v2/long/a").await, (true, true));
}

#[tokio::test]
async fn no_store_is_respected_unless_overridden() {
    let script: common::Script = Arc::new(|_, _| {
        let mut response = status(200);
        response
            .headers_mut()
            .insert("cache-control", "private, no-store".parse().unwrap());
        Ok(response)
    });
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(
        layer(&dir).build().unwrap(),
        Duration::ZERO,
        Arc::clone(&script),
    );
    h.get(URL).await;
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Miss));
    assert_eq!(h.calls(), 2);
    assert!(h.layer.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let layer = layer(&dir).respect_no_store(false).build().unwrap();
    let h = Harness::new(layer, Duration::ZERO, script);
    h.get(URL).await;
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Hit));
    assert_eq!(h.calls(), 1);
}

#[tokio::test]
async fn statuses_follow_classification_and_404_has_its_own_ttl() {
    let script: common::Script = Arc::new(|_, request| {
        Ok(match request.uri().path() {
            "/missing" => status(404),
            "/broken" => status(500),
            "/bad" => status(400),
            _ => status(200),
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(
        layer(&dir).build().unwrap(),
        Duration::ZERO,
        Arc::clone(&script),
    );
    for path in ["/missing", "/broken", "/bad", "/missing", "/broken", "/bad"] {
        let reply = h.get(&format!("https://api.test{path}")).await;
        assert_eq!(reply.cache, Some(CacheStatus::Miss), "{path}");
    }
    assert_eq!(h.calls(), 6);

    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let layer = layer(&dir)
        .clock(clock.clone())
        .cache_not_found(Duration::from_secs(30))
        .build()
        .unwrap();
    let h = Harness::new(layer, Duration::ZERO, script);
    h.get("https://api.test/missing").await;
    let again = h.get("https://api.test/missing").await;
    assert_eq!(
        (again.status.as_u16(), again.cache),
        (404, Some(CacheStatus::Hit))
    );
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        h.get("https://api.test/missing").await.cache,
        Some(CacheStatus::Miss)
    );
    assert_eq!(h.calls(), 2);
}

#[tokio::test]
async fn other_methods_need_an_idempotency_key_and_an_opt_in() {
    let post = |key: Option<&str>| {
        let mut request = Request::post("https://api.test/orders");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.body(()).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(layer(&dir).build().unwrap(), Duration::ZERO, echo());
    h.send(post(Some("k1"))).await.unwrap();
    assert_eq!(
        h.send(post(Some("k1"))).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );

    let dir = tempfile::tempdir().unwrap();
    let layer = layer(&dir)
        .cache_method_with_idempotency_key(Method::POST)
        .build()
        .unwrap();
    let h = Harness::new(layer, Duration::ZERO, echo());
    h.send(post(None)).await.unwrap();
    assert_eq!(
        h.send(post(None)).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    h.send(post(Some("k1"))).await.unwrap();
    assert_eq!(
        h.send(post(Some("k1"))).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    assert_eq!(
        h.send(post(Some("k2"))).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    assert_eq!(h.calls(), 4);
}

#[tokio::test]
async fn stale_entries_stand_in_for_failures_within_max_stale() {
    for mode in ["transport", "breaker", "budget", "500", "400"] {
        let script: common::Script = Arc::new(move |n, _| {
            if n == 0 {
                return Ok(status(200));
            }
            match mode {
                "transport" => Err("connection refused".into()),
                "breaker" => Err(Box::new(CircuitOpen::new(Duration::from_secs(5)))),
                "budget" => Err(Box::new(BudgetExhausted::new(
                    ExhaustedReason::Window,
                    None,
                ))),
                "400" => Ok(status(400)),
                _ => Ok(status(500)),
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let clock = FakeClock::new();
        let layer = layer(&dir)
            .clock(clock.clone())
            .ttl(Duration::from_secs(10))
            .stale_if_error(Duration::from_secs(100))
            .build()
            .unwrap();
        let h = Harness::new(layer, Duration::ZERO, script);
        h.get(URL).await;
        clock.advance(Duration::from_secs(11));
        let reply = h.send(Request::get(URL).body(()).unwrap()).await.unwrap();
        if mode == "400" {
            // A client error is not an upstream failure a stale entry may hide.
            assert_eq!(
                (reply.status.as_u16(), reply.cache),
                (400, Some(CacheStatus::Miss))
            );
            continue;
        }
        assert_eq!(reply.cache, Some(CacheStatus::Stale), "{mode}");
        assert_eq!(reply.status, 200, "{mode}");
        assert!(reply.headers.contains_key(http::header::AGE));
        clock.advance(Duration::from_secs(100));
        let past = h.send(Request::get(URL).body(()).unwrap()).await;
        match mode {
            "500" => assert_eq!(past.unwrap().status, 500),
            _ => assert!(past.is_err(), "{mode}"),
        }
    }
}

#[tokio::test]
async fn without_stale_if_error_failures_come_through() {
    let script: common::Script = Arc::new(|n, _| {
        if n == 0 {
            Ok(status(200))
        } else {
            Ok(status(502))
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let layer = layer(&dir)
        .clock(clock.clone())
        .ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let h = Harness::new(layer, Duration::ZERO, script);
    h.get(URL).await;
    clock.advance(Duration::from_secs(2));
    assert_eq!(h.get(URL).await.status, 502);
    assert!(h.layer.is_empty(), "the expired entry was removed");
}

#[tokio::test]
async fn eviction_keeps_the_folder_under_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let big: common::Script =
        Arc::new(|_, _| Ok(Response::new(Full::new(Bytes::from(vec![b'x'; 1000])))));
    let layer = layer(&dir).max_bytes(10_000).build().unwrap();
    let h = Harness::new(layer, Duration::ZERO, big);
    for n in 0..40 {
        h.get(&format!("https://api.test/p?n={n}")).await;
        assert!(h.layer.total_bytes() <= 10_000);
    }
    let on_disk: u64 = entry_files(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(on_disk <= 10_000);
    assert_eq!(entry_files(dir.path()).len(), h.layer.len());
    assert!(h.layer.len() >= 8, "kept {}", h.layer.len());
    // The most recent survive, the oldest are gone.
    assert_eq!(
        h.get("https://api.test/p?n=39").await.cache,
        Some(CacheStatus::Hit)
    );
    assert_eq!(
        h.get("https://api.test/p?n=0").await.cache,
        Some(CacheStatus::Miss)
    );
}

#[tokio::test]
async fn bodies_over_the_entry_cap_stream_through_uncached() {
    let dir = tempfile::tempdir().unwrap();
    let script: common::Script = Arc::new(|_, request| {
        let len = if request.uri().path() == "/big" {
            5000
        } else {
            100
        };
        Ok(Response::new(Full::new(Bytes::from(vec![b'y'; len]))))
    });
    let layer = layer(&dir).max_entry_bytes(1000).build().unwrap();
    let h = Harness::new(layer, Duration::ZERO, script);
    let big = h.get("https://api.test/big").await;
    assert_eq!(big.body.len(), 5000);
    assert_eq!(big.cache, Some(CacheStatus::Miss));
    assert_eq!(
        h.get("https://api.test/big").await.cache,
        Some(CacheStatus::Miss)
    );
    h.get("https://api.test/small").await;
    assert_eq!(
        h.get("https://api.test/small").await.cache,
        Some(CacheStatus::Hit)
    );
    assert_eq!(h.layer.len(), 1);
}

#[tokio::test]
async fn a_corrupt_file_is_a_miss_removed_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    // Without the memory tier, every hit reads the file.
    let layer = layer(&dir).memory_bytes(0).build().unwrap();
    let h = Harness::new(layer, Duration::ZERO, echo());
    let first = h.get(URL).await;
    let [file] = entry_files(dir.path()).try_into().unwrap();
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 7]).unwrap();
    let reply = h.get(URL).await;
    assert_eq!(reply.cache, Some(CacheStatus::Miss));
    assert_ne!(reply.body, first.body, "served fresh from the upstream");
    assert_eq!(h.calls(), 2);
    let mut flipped = std::fs::read(&file).unwrap();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    std::fs::write(&file, &flipped).unwrap();
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Miss));
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Hit));
    assert_eq!(h.calls(), 3);
}

/// Whether `path` is served as a hit, and whether the upstream was left alone.
async fn cached(h: &Harness, root: &str, path: &str) -> (bool, bool) {
    let calls = h.calls();
    let reply = h.get(&format!("{root}{path}")).await;
    (reply.cache == Some(CacheStatus::Hit), h.calls() == calls)
}

#[tokio::test(start_paused = true)]
async fn processes_sharing_a_folder_fetch_once() {
    assert_eq!(fetches_by_two_processes(true).await, 1);
    // The control: without the lock files, each "process" fetches.
    assert_eq!(fetches_by_two_processes(false).await, 2);
}

async fn fetches_by_two_processes(cross_process: bool) -> usize {
    // Two layers on one folder share nothing in memory: they stand for two processes.
    let dir = tempfile::tempdir().unwrap();
    let build = || {
        layer(&dir)
            .cross_process_coalescing(cross_process)
            .build()
            .unwrap()
    };
    let first = Arc::new(Harness::new(build(), Duration::from_millis(300), echo()));
    let second = Arc::new(Harness::new(build(), Duration::from_millis(300), echo()));
    let mut tasks = JoinSet::new();
    for n in 0..20 {
        let h = Arc::clone(if n % 2 == 0 { &first } else { &second });
        tasks.spawn(async move { h.get(URL).await });
    }
    let mut bodies = std::collections::HashSet::new();
    let mut misses = 0;
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        misses += usize::from(reply.cache == Some(CacheStatus::Miss));
        bodies.insert(reply.body);
    }
    let fetches = first.calls() + second.calls();
    assert_eq!(misses, fetches);
    // Every caller of one "process" got that process's one response.
    assert!(bodies.len() <= fetches);
    assert!(
        files(dir.path())
            .iter()
            .filter(|p| p.parent() != Some(dir.path()))
            .all(|p| p.extension().is_none_or(|e| e != "lock")),
        "the key's lock file is gone"
    );
    fetches
}

#[tokio::test(start_paused = true)]
async fn a_lock_left_by_a_dead_process_is_broken_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(layer(&dir).build().unwrap(), Duration::ZERO, echo());
    // Learn the entry's file name, then remove the entry and leave a dead holder's lock.
    h.get(URL).await;
    let [file] = entry_files(dir.path()).try_into().unwrap();
    let fresh = Harness::new(layer(&dir).build().unwrap(), Duration::ZERO, echo());
    std::fs::remove_file(&file).unwrap();
    std::fs::write(file.with_extension("lock"), "4000000000").unwrap();
    let started = tokio::time::Instant::now();
    let reply = fresh.get(URL).await;
    assert_eq!(reply.cache, Some(CacheStatus::Miss));
    assert_eq!(fresh.calls(), 1);
    assert!(
        started.elapsed() < Duration::from_millis(25),
        "did not wait"
    );
    assert!(!file.with_extension("lock").exists());
}

#[tokio::test(start_paused = true)]
async fn unshareable_responses_release_waiters_at_once() {
    let script: common::Script = Arc::new(|_, request| {
        let mut response = status(200);
        if request.uri().path() == "/private" {
            response
                .headers_mut()
                .insert("cache-control", "no-store".parse().unwrap());
        }
        Ok(response)
    });
    let dir = tempfile::tempdir().unwrap();
    let layer = layer(&dir)
        .route_ttl("/balance", Duration::ZERO)
        .build()
        .unwrap();
    let h = Arc::new(Harness::new(layer, Duration::from_millis(100), script));
    for path in ["/private", "/balance"] {
        let started = tokio::time::Instant::now();
        let calls = h.calls();
        let mut tasks = JoinSet::new();
        for _ in 0..10 {
            let h = Arc::clone(&h);
            tasks.spawn(async move { h.get(&format!("https://api.test{path}")).await });
        }
        while let Some(reply) = tasks.join_next().await {
            let reply = reply.unwrap();
            assert_eq!(
                (reply.status.as_u16(), reply.cache),
                (200, Some(CacheStatus::Miss))
            );
        }
        assert_eq!(h.calls() - calls, 10, "{path}");
        // Queued one behind another they would take a second; released, two latencies at most.
        assert!(
            started.elapsed() <= Duration::from_millis(250),
            "{path}: {:?}",
            started.elapsed()
        );
    }
    assert!(h.layer.is_empty());
}
