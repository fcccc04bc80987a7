//! The cache at its edges: conditional requests and 304s, failed leaders, the folder-wide byte
//! cap, lock files, and credentials in a URL. Each test attacks one guarantee.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, echo, entry_files, files, status};
use http::{Request, Response};
use http_body_util::Full;
use tokio::task::JoinSet;
use tollway_cache::{CacheLayer, CacheStatus};

const URL: &str = "https://api.test/v2/user/followers?user_id=1&page_id=";

fn layer(dir: &tempfile::TempDir) -> tollway_cache::CacheBuilder {
    CacheLayer::builder(dir.path())
}

/// Answers `304` (empty body) to a conditional request and `200` to anything else, like an
/// origin whose resource never changes.
fn conditional_origin() -> common::Script {
    Arc::new(|n, request: &Request<()>| {
        let conditional = request.headers().contains_key("if-none-match")
            || request.headers().contains_key("if-modified-since");
        if conditional {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = http::StatusCode::NOT_MODIFIED;
            return Ok(response);
        }
        Ok(Response::new(Full::new(Bytes::from(format!("full #{n}")))))
    })
}

#[tokio::test]
async fn a_304_to_a_conditional_request_is_never_stored_or_served_to_a_plain_get() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(
        layer(&dir).build().unwrap(),
        Duration::ZERO,
        conditional_origin(),
    );
    let conditional = h
        .send(
            Request::get(URL)
                .header("if-none-match", "\"v1\"")
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(conditional.status, 304);
    let plain = h.get(URL).await;
    assert_eq!(plain.status, 200, "a plain GET never gets a stored 304");
    assert_eq!(plain.body, "full #1");
    assert_eq!(plain.cache, Some(CacheStatus::Miss));
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Hit));
}

#[tokio::test]
async fn a_304_answered_to_a_plain_get_is_passed_on_but_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(
        layer(&dir).build().unwrap(),
        Duration::ZERO,
        Arc::new(|_, _: &Request<()>| Ok(status(304))),
    );
    assert_eq!(h.get(URL).await.status, 304);
    let again = h.get(URL).await;
    assert_eq!(
        (again.status.as_u16(), again.cache),
        (304, Some(CacheStatus::Miss))
    );
    assert_eq!(h.calls(), 2);
    assert!(h.layer.is_empty());
}

#[tokio::test]
async fn conditional_requests_bypass_a_fresh_entry() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(
        layer(&dir).build().unwrap(),
        Duration::ZERO,
        conditional_origin(),
    );
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Miss));
    for (name, value) in [
        ("if-none-match", "\"v1\""),
        ("if-modified-since", "Tue, 01 Jan 2030 00:00:00 GMT"),
    ] {
        let reply = h
            .send(Request::get(URL).header(name, value).body(()).unwrap())
            .await
            .unwrap();
        // The caller asked the origin a question only the origin can answer.
        assert_eq!(
            (reply.status.as_u16(), reply.cache),
            (304, Some(CacheStatus::Miss)),
            "{name}"
        );
    }
    assert_eq!(h.calls(), 3);
    // The entry is untouched.
    let plain = h.get(URL).await;
    assert_eq!(
        (plain.body, plain.cache),
        ("full #0".into(), Some(CacheStatus::Hit))
    );
}

#[tokio::test(start_paused = true)]
async fn plain_gets_never_share_a_conditional_leader_s_304() {
    let dir = tempfile::tempdir().unwrap();
    let h = Arc::new(Harness::new(
        layer(&dir).build().unwrap(),
        Duration::from_millis(100),
        conditional_origin(),
    ));
    let leader = {
        let h = Arc::clone(&h);
        tokio::spawn(async move {
            h.send(
                Request::get(URL)
                    .header("if-none-match", "\"v1\"")
                    .body(())
                    .unwrap(),
            )
            .await
            .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut plain = JoinSet::new();
    for _ in 0..5 {
        let h = Arc::clone(&h);
        plain.spawn(async move { h.get(URL).await });
    }
    assert_eq!(leader.await.unwrap().status, 304);
    while let Some(reply) = plain.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200);
        assert!(reply.body.starts_with(b"full #"));
    }
}

/// Ten concurrent callers, the leader's answer a failure, then success: the failure goes to
/// the leader's caller only, and exactly one waiter takes over.
async fn failed_leader_hands_over(code: u16) {
    let dir = tempfile::tempdir().unwrap();
    let h = Arc::new(Harness::new(
        layer(&dir).build().unwrap(),
        Duration::from_millis(100),
        Arc::new(move |n, _: &Request<()>| {
            if n == 0 {
                Ok(status(code))
            } else {
                Ok(Response::new(Full::new(Bytes::from("ok"))))
            }
        }),
    ));
    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let h = Arc::clone(&h);
        tasks.spawn(async move { h.get(URL).await });
    }
    let mut statuses = Vec::new();
    while let Some(reply) = tasks.join_next().await {
        statuses.push(reply.unwrap().status.as_u16());
    }
    statuses.sort_unstable();
    let mut expected = vec![200; 9];
    expected.push(code);
    expected.sort_unstable();
    assert_eq!(statuses, expected, "{code}");
    assert_eq!(
        h.calls(),
        2,
        "{code}: one failure, one takeover, no stampede"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_response_hands_the_flight_to_one_waiter() {
    for code in [503, 429, 402, 500, 404] {
        failed_leader_hands_over(code).await;
    }
}

#[tokio::test]
async fn two_credentials_in_userinfo_never_share_an_entry_or_reach_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    // Unlike `echo`, the body does not repeat the URL (with its password).
    let numbered: common::Script =
        Arc::new(|n, _| Ok(Response::new(Full::new(Bytes::from(format!("#{n}"))))));
    let h = Harness::new(layer(&dir).build().unwrap(), Duration::ZERO, numbered);
    let alice = "https://alice:pw-AAAA-1111@api.test/v2/me";
    let bob = "https://alice:pw-BBBB-2222@api.test/v2/me";
    assert_eq!(h.get(alice).await.cache, Some(CacheStatus::Miss));
    assert_eq!(h.get(bob).await.cache, Some(CacheStatus::Miss));
    assert_eq!(
        h.get("https://api.test/v2/me").await.cache,
        Some(CacheStatus::Miss)
    );
    assert_eq!(h.get(alice).await.cache, Some(CacheStatus::Hit));
    assert_eq!(h.calls(), 3);
    for file in files(dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        for secret in ["pw-AAAA-1111", "pw-BBBB-2222"] {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{secret} found in {}", file.display());
        }
    }
}

/// The lock file of the entry at `file`.
fn lock_of(file: &std::path::Path) -> std::path::PathBuf {
    file.with_extension("lock")
}

/// A folder holding the entry for `URL`'s key once, with the entry removed again: returns
/// the entry's path (to find its lock file).
async fn entry_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let h = Harness::new(layer(dir).build().unwrap(), Duration::ZERO, echo());
    h.get(URL).await;
    let [file] = entry_files(dir.path()).try_into().unwrap();
    std::fs::remove_file(&file).unwrap();
    file
}

#[tokio::test(start_paused = true)]
async fn a_lock_file_naming_a_live_pid_but_held_by_nobody_is_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let file = entry_path(&dir).await;
    // A dead process's lock whose pid was reused: pid 1 is alive in every container, and so
    // is this process.
    for pid in [1, std::process::id()] {
        std::fs::write(lock_of(&file), pid.to_string()).unwrap();
        let fresh = Harness::new(layer(&dir).build().unwrap(), Duration::ZERO, echo());
        let started = tokio::time::Instant::now();
        assert_eq!(fresh.get(URL).await.cache, Some(CacheStatus::Miss));
        assert!(
            started.elapsed() < Duration::from_millis(25),
            "pid {pid}: waited {:?}",
            started.elapsed()
        );
        std::fs::remove_file(&file).unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_held_lock_is_waited_for_and_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let file = entry_path(&dir).await;
    let held = tollway_core::durable::LockFile::try_lock(lock_of(&file))
        .unwrap()
        .expect("free");
    let h = Arc::new(Harness::new(
        layer(&dir).build().unwrap(),
        Duration::ZERO,
        echo(),
    ));
    let waiter = {
        let h = Arc::clone(&h);
        tokio::spawn(async move { h.get(URL).await })
    };
    // Another holder is alive: wait (well past the old ten-second "unwritten" grace).
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.calls(), 0, "fetched while another holder had the lock");
        assert!(lock_of(&file).exists(), "another's lock file was deleted");
    }
    drop(held);
    let reply = waiter.await.unwrap();
    assert_eq!(reply.cache, Some(CacheStatus::Miss));
    assert_eq!(h.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_racing_on_many_keys_fetch_each_once() {
    // Two layers on one folder share nothing in memory: they stand for two processes. Every
    // key is asked of both at once; a waiter that takes the lock after the holder finished
    // must find the entry, not fetch again.
    let dir = tempfile::tempdir().unwrap();
    let first = Arc::new(Harness::new(
        layer(&dir).build().unwrap(),
        Duration::ZERO,
        echo(),
    ));
    let second = Arc::new(Harness::new(
        layer(&dir).build().unwrap(),
        Duration::ZERO,
        echo(),
    ));
    let mut tasks = JoinSet::new();
    for n in 0..150 {
        for h in [&first, &second] {
            let h = Arc::clone(h);
            tasks.spawn(async move { h.get(&format!("https://api.test/k?n={n}")).await });
        }
    }
    while let Some(reply) = tasks.join_next().await {
        assert_eq!(reply.unwrap().status, 200);
    }
    assert_eq!(first.calls() + second.calls(), 150);
}

#[tokio::test]
async fn the_byte_cap_holds_for_the_folder_not_per_process() {
    let dir = tempfile::tempdir().unwrap();
    let big: common::Script =
        Arc::new(|_, _| Ok(Response::new(Full::new(Bytes::from(vec![b'x'; 1000])))));
    let build = || layer(&dir).max_bytes(10_000).build().unwrap();
    let first = Harness::new(build(), Duration::ZERO, Arc::clone(&big));
    let second = Harness::new(build(), Duration::ZERO, big);
    for n in 0..40 {
        let h = if n % 2 == 0 { &first } else { &second };
        h.get(&format!("https://api.test/p?n={n}")).await;
        let on_disk: u64 = entry_files(dir.path())
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        assert!(on_disk <= 10_000, "after {n}: {on_disk} bytes on disk");
    }
    // Both still cache: the most recent of each are hits.
    assert_eq!(
        first.get("https://api.test/p?n=38").await.cache,
        Some(CacheStatus::Hit)
    );
    assert_eq!(
        second.get("https://api.test/p?n=39").await.cache,
        Some(CacheStatus::Hit)
    );
}

#[tokio::test]
async fn a_failed_write_still_serves_the_response_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(layer(&dir).build().unwrap(), Duration::ZERO, echo());
    h.get(URL).await;
    let [file] = entry_files(dir.path()).try_into().unwrap();
    let shard = file.parent().unwrap().to_owned();
    assert!(
        h.layer
            .handle()
            .invalidate(&Request::get(URL).body(()).unwrap())
            .await
            .unwrap()
    );
    // The entry's shard folder is now a plain file: every write under it fails.
    std::fs::remove_dir_all(&shard).unwrap();
    std::fs::write(&shard, b"in the way").unwrap();
    for n in 1..=2 {
        let reply = h.get(URL).await;
        assert_eq!(reply.cache, Some(CacheStatus::Miss));
        assert!(reply.body.ends_with(format!("#{n}").as_bytes()));
    }
    assert!(h.layer.is_empty());
    std::fs::remove_file(&shard).unwrap();
    h.get(URL).await;
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Hit));
    assert_eq!(h.layer.len(), 1);
}

#[tokio::test]
async fn an_unusable_journal_fails_writes_until_it_can_be_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(layer(&dir).build().unwrap(), Duration::ZERO, echo());
    h.get("https://api.test/a").await;
    let journal = dir.path().join("journal");
    std::fs::remove_file(&journal).unwrap();
    std::fs::create_dir(&journal).unwrap();
    let reply = h.get("https://api.test/b").await;
    assert_eq!(
        (reply.status.as_u16(), reply.cache),
        (200, Some(CacheStatus::Miss))
    );
    assert_eq!(
        h.get("https://api.test/b").await.cache,
        Some(CacheStatus::Miss)
    );
    std::fs::remove_dir(&journal).unwrap();
    h.get("https://api.test/b").await;
    assert_eq!(
        h.get("https://api.test/b").await.cache,
        Some(CacheStatus::Hit)
    );
    assert_eq!(
        h.get("https://api.test/a").await.cache,
        Some(CacheStatus::Hit)
    );
    assert_eq!(h.layer.len(), 2, "rebuilt from the files");
}

#[tokio::test]
async fn lifetimes_past_any_date_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let layer = layer(&dir)
        .ttl(Duration::MAX)
        .stale_if_error(Duration::MAX)
        .revalidate(Duration::MAX)
        .build()
        .unwrap();
    let h = Harness::new(layer, Duration::ZERO, echo());
    h.get(URL).await;
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Hit));
}

#[tokio::test]
async fn hostile_response_headers_are_stored_or_refused_never_a_panic() {
    let script: common::Script = Arc::new(|n, request: &Request<()>| {
        let mut response = Response::new(Full::new(Bytes::from(format!("#{n}"))));
        let headers = response.headers_mut();
        match request.uri().path() {
            "/ages" => {
                headers.insert("age", "18446744073709551615".parse().unwrap());
                headers.insert(
                    "cache-control",
                    "max-age=99999999999999999999999".parse().unwrap(),
                );
                headers.insert("expires", "Fri, 31 Dec 9999 23:59:59 GMT".parse().unwrap());
                headers.insert("last-modified", "garbage".parse().unwrap());
                headers.insert(
                    "etag",
                    "\u{7f}"
                        .parse()
                        .unwrap_or(http::HeaderValue::from_static("x")),
                );
            }
            "/many" => {
                for i in 0..5000 {
                    headers.append("x-many", i.to_string().parse().unwrap());
                }
            }
            _ => {
                headers.insert("x-huge", "v".repeat(200_000).parse().unwrap());
            }
        }
        Ok(response)
    });
    for freshness in [
        tollway_cache::Freshness::Configured,
        tollway_cache::Freshness::HttpPrivate,
        tollway_cache::Freshness::HttpShared,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let layer = layer(&dir).freshness(freshness).build().unwrap();
        let h = Harness::new(layer, Duration::ZERO, Arc::clone(&script));
        for path in ["/ages", "/many", "/huge"] {
            let url = format!("https://api.test{path}");
            let first = h.get(&url).await;
            assert_eq!(first.status, 200, "{freshness:?} {path}");
            let again = h.get(&url).await;
            assert_eq!(again.status, 200, "{freshness:?} {path}");
            if path != "/ages" {
                // (An unreadable max-age reads as zero in the HTTP modes: refetched, rightly.)
                assert_eq!(again.body, first.body, "{freshness:?} {path}");
            }
        }
        let many = h.get("https://api.test/many").await;
        assert_eq!(many.headers.get_all("x-many").iter().count(), 5000);
    }
}

#[tokio::test(start_paused = true)]
async fn an_upstream_that_keeps_failing_sees_one_request_at_a_time() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    #[derive(Clone)]
    struct Gauge {
        in_flight: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }
    impl tower::Service<Request<()>> for Gauge {
        type Response = Response<Full<Bytes>>;
        type Error = tollway_core::BoxError;
        type Future = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
        >;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            let in_flight = Arc::clone(&self.in_flight);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(status(503))
            })
        }
    }
    let layer = layer(&dir).build().unwrap();
    let service = tower::Layer::layer(
        &layer,
        Gauge {
            in_flight: Arc::clone(&in_flight),
            most: Arc::clone(&most),
        },
    );
    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let service = service.clone();
        tasks.spawn(async move {
            use tower::ServiceExt;
            service
                .oneshot(Request::get(URL).body(()).unwrap())
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 503);
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "failures never release a stampede"
    );
}

#[tokio::test]
async fn a_body_that_fails_midway_is_an_error_and_never_stored() {
    use futures_util::stream;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{Layer, ServiceExt};

    type Chunks = stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let upstream = tower::service_fn(move |_: Request<()>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut frames = vec![Ok(Frame::data(Bytes::from_static(b"{\"users\": [1,")))];
            if n == 0 {
                frames.push(Err(std::io::Error::other("connection reset mid-body")));
            } else {
                frames.push(Ok(Frame::data(Bytes::from_static(b" 2]}"))));
            }
            let body: StreamBody<Chunks> = StreamBody::new(stream::iter(frames));
            Ok::<_, tollway_core::BoxError>(Response::new(body))
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cache = layer(&dir).build().unwrap();
    let service = cache.layer(upstream);
    let send = || service.clone().oneshot(Request::get(URL).body(()).unwrap());
    let error = send().await.unwrap_err();
    assert!(error.to_string().contains("mid-body"), "{error}");
    assert!(cache.is_empty());
    let ok = send().await.unwrap();
    assert_eq!(
        CacheStatus::from_headers(ok.headers()),
        Some(CacheStatus::Miss)
    );
    let again = send().await.unwrap();
    assert_eq!(
        CacheStatus::from_headers(again.headers()),
        Some(CacheStatus::Hit)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Another process holds the folder lock and never lets go (stopped with `SIGSTOP`, stuck on a
/// stalled disk): a response the upstream already sent (and charged) must still reach its
/// caller on time, unstored, not wait for the lock forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_lock_held_forever_delays_a_response_boundedly_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(layer(&dir).build().unwrap(), Duration::ZERO, echo());
    let holder = tollway_core::durable::LockFile::lock(dir.path().join("folder.lock")).unwrap();
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(30), h.get(URL))
        .await
        .expect("the response is not held hostage by the folder lock");
    let took = started.elapsed();
    assert_eq!(
        (reply.status.as_u16(), reply.cache),
        (200, Some(CacheStatus::Miss))
    );
    // The store gives up on the lock after five seconds; the rest is margin for a busy machine.
    assert!(took < Duration::from_secs(12), "{took:?}");
    drop(holder);
    // Nothing was stored: the next request goes upstream again, and that one is kept.
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Miss));
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Hit));
}
