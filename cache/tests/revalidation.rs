//! Revalidation with `ETag` / `Last-Modified`, and the `Cache-Control` modes, on a fake clock.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, Script, status};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::task::JoinSet;
use tollway_cache::{CacheLayer, CacheStatus, Freshness, RevalidationMismatch};
use tollway_core::FakeClock;

const URL: &str = "https://api.test/v2/items?page=1";
const LAST_MODIFIED: &str = "Tue, 01 Jan 2030 00:00:00 GMT";

/// An origin whose resource is `version` (shared, so a test can change it): a full answer
/// carries its `ETag` (and `Last-Modified`), and a conditional request naming the current
/// version is answered `304`. Every request's headers are recorded.
struct Origin {
    version: Arc<Mutex<u32>>,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    extra: Vec<(&'static str, &'static str)>,
}

impl Origin {
    fn new(extra: &[(&'static str, &'static str)]) -> Self {
        Self {
            version: Arc::new(Mutex::new(1)),
            seen: Arc::default(),
            extra: extra.to_vec(),
        }
    }

    fn script(&self, with_etag: bool) -> Script {
        let version = Arc::clone(&self.version);
        let seen = Arc::clone(&self.seen);
        let extra = self.extra.clone();
        Arc::new(move |_, request: &Request<()>| {
            seen.lock().unwrap().push(request.headers().clone());
            let current = *version.lock().unwrap();
            let etag = format!("\"v{current}\"");
            let matches = if with_etag {
                request
                    .headers()
                    .get("if-none-match")
                    .is_some_and(|tag| tag.to_str().unwrap().contains(&etag))
            } else {
                current == 1
                    && request
                        .headers()
                        .get("if-modified-since")
                        .is_some_and(|date| date == LAST_MODIFIED)
            };
            let mut response = if matches {
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                response
            } else {
                Response::new(Full::new(Bytes::from(format!("body of v{current}"))))
            };
            let headers = response.headers_mut();
            if with_etag {
                headers.insert("etag", etag.parse().unwrap());
            } else if current == 1 {
                headers.insert("last-modified", LAST_MODIFIED.parse().unwrap());
            }
            for (name, value) in &extra {
                headers.insert(*name, value.parse().unwrap());
            }
            Ok(response)
        })
    }

    fn last_request(&self) -> HeaderMap {
        self.seen.lock().unwrap().last().unwrap().clone()
    }
}

fn harness(dir: &tempfile::TempDir, clock: &FakeClock, script: Script) -> Harness {
    let layer = CacheLayer::builder(dir.path())
        .clock(clock.clone())
        .ttl(Duration::from_secs(10))
        .build()
        .unwrap();
    Harness::new(layer, Duration::ZERO, script)
}

#[tokio::test]
async fn a_stale_entry_with_an_etag_is_revalidated_and_a_304_renews_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let origin = Origin::new(&[]);
    let h = harness(&dir, &clock, origin.script(true));
    assert_eq!(h.get(URL).await.body, "body of v1");
    clock.advance(Duration::from_secs(11));

    let reply = h.get(URL).await;
    assert_eq!(origin.last_request()["if-none-match"], "\"v1\"");
    assert_eq!(
        (reply.status.as_u16(), reply.cache),
        (200, Some(CacheStatus::Revalidated))
    );
    assert_eq!(reply.body, "body of v1", "the stored body, not the 304's");
    assert_eq!(h.calls(), 2);
    // Renewed for a whole lifetime from the 304.
    clock.advance(Duration::from_secs(9));
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Hit));
    assert_eq!(h.calls(), 2);
    // And it survives a restart renewed.
    let again = harness(&dir, &clock, origin.script(true));
    assert_eq!(again.get(URL).await.cache, Some(CacheStatus::Hit));
}

#[tokio::test]
async fn a_changed_resource_is_downloaded_and_replaces_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let origin = Origin::new(&[]);
    let h = harness(&dir, &clock, origin.script(true));
    h.get(URL).await;
    *origin.version.lock().unwrap() = 2;
    clock.advance(Duration::from_secs(11));
    let reply = h.get(URL).await;
    assert_eq!(
        (reply.body, reply.cache),
        ("body of v2".into(), Some(CacheStatus::Miss))
    );
    assert_eq!(h.get(URL).await.body, "body of v2");
    assert_eq!(h.calls(), 2);
}

#[tokio::test]
async fn last_modified_revalidates_with_if_modified_since() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let origin = Origin::new(&[]);
    let h = harness(&dir, &clock, origin.script(false));
    h.get(URL).await;
    clock.advance(Duration::from_secs(11));
    let reply = h.get(URL).await;
    assert_eq!(origin.last_request()["if-modified-since"], LAST_MODIFIED);
    assert!(!origin.last_request().contains_key("if-none-match"));
    assert_eq!(reply.cache, Some(CacheStatus::Revalidated));
    assert_eq!(reply.body, "body of v1");
}

#[tokio::test]
async fn an_entry_without_a_validator_is_simply_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let log = Arc::clone(&seen);
    let script: Script = Arc::new(move |n, request: &Request<()>| {
        log.lock().unwrap().push(request.headers().clone());
        Ok(Response::new(Full::new(Bytes::from(format!("#{n}")))))
    });
    let h = harness(&dir, &clock, script);
    h.get(URL).await;
    clock.advance(Duration::from_secs(11));
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Miss));
    let last = seen.lock().unwrap().last().unwrap().clone();
    assert!(!last.contains_key("if-none-match") && !last.contains_key("if-modified-since"));
}

#[tokio::test]
async fn entries_are_kept_to_revalidate_only_for_the_configured_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let origin = Origin::new(&[]);
    let layer = CacheLayer::builder(dir.path())
        .clock(clock.clone())
        .ttl(Duration::from_secs(10))
        .revalidate(Duration::from_secs(60))
        .build()
        .unwrap();
    let h = Harness::new(layer, Duration::ZERO, origin.script(true));
    h.get(URL).await;
    // Within fresh (10 s) + kept (60 s): revalidated.
    clock.advance(Duration::from_secs(69));
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Revalidated));
    // Past them: removed, fetched whole.
    clock.advance(Duration::from_secs(71));
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Miss));
    assert!(!origin.last_request().contains_key("if-none-match"));
}

#[tokio::test]
async fn a_304_naming_another_version_drops_the_entry_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let script: Script = Arc::new(|n, _: &Request<()>| {
        let mut response = if n == 1 {
            status(304)
        } else {
            Response::new(Full::new(Bytes::from(format!("#{n}"))))
        };
        let etag = if n == 1 { "\"other\"" } else { "\"v1\"" };
        response.headers_mut().insert("etag", etag.parse().unwrap());
        Ok(response)
    });
    let h = harness(&dir, &clock, script);
    h.get(URL).await;
    clock.advance(Duration::from_secs(11));
    let error = h
        .send(Request::get(URL).body(()).unwrap())
        .await
        .unwrap_err();
    assert!(
        error.downcast_ref::<RevalidationMismatch>().is_some(),
        "{error}"
    );
    let reply = h.get(URL).await;
    assert_eq!(
        (reply.body, reply.cache),
        ("#2".into(), Some(CacheStatus::Miss))
    );
}

#[tokio::test]
async fn a_failed_revalidation_serves_stale_within_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let script: Script = Arc::new(|n, _: &Request<()>| {
        if n == 0 {
            let mut response = Response::new(Full::new(Bytes::from("good")));
            response
                .headers_mut()
                .insert("etag", "\"v1\"".parse().unwrap());
            Ok(response)
        } else {
            Ok(status(503))
        }
    });
    let layer = CacheLayer::builder(dir.path())
        .clock(clock.clone())
        .ttl(Duration::from_secs(10))
        .stale_if_error(Duration::from_secs(30))
        .build()
        .unwrap();
    let h = Harness::new(layer, Duration::ZERO, script);
    h.get(URL).await;
    clock.advance(Duration::from_secs(20));
    let reply = h.get(URL).await;
    assert_eq!(
        (reply.body, reply.cache),
        ("good".into(), Some(CacheStatus::Stale))
    );
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        h.get(URL).await.status,
        503,
        "kept to revalidate, not to serve stale"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_revalidation() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let origin = Origin::new(&[]);
    let layer = CacheLayer::builder(dir.path())
        .clock(clock.clone())
        .ttl(Duration::from_secs(10))
        .build()
        .unwrap();
    let h = Arc::new(Harness::new(
        layer,
        Duration::from_millis(100),
        origin.script(true),
    ));
    h.get(URL).await;
    clock.advance(Duration::from_secs(11));
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let h = Arc::clone(&h);
        tasks.spawn(async move { h.get(URL).await });
    }
    let mut statuses = Vec::new();
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.body, "body of v1");
        statuses.push(reply.cache.unwrap());
    }
    assert_eq!(h.calls(), 2);
    let revalidated = statuses
        .iter()
        .filter(|s| **s == CacheStatus::Revalidated)
        .count();
    assert_eq!(revalidated, 1, "{statuses:?}");
}

fn http_harness(
    dir: &tempfile::TempDir,
    clock: &FakeClock,
    freshness: Freshness,
    script: Script,
) -> Harness {
    let layer = CacheLayer::builder(dir.path())
        .clock(clock.clone())
        .ttl(Duration::from_secs(100))
        .freshness(freshness)
        .build()
        .unwrap();
    Harness::new(layer, Duration::ZERO, script)
}

fn answering(headers: &'static [(&'static str, &'static str)]) -> Script {
    Arc::new(move |n, _: &Request<()>| {
        let mut response = Response::new(Full::new(Bytes::from(format!("#{n}"))));
        for (name, value) in headers {
            response.headers_mut().append(*name, value.parse().unwrap());
        }
        Ok(response)
    })
}

#[tokio::test]
async fn max_age_decides_the_lifetime_in_the_http_modes_only() {
    let script = || answering(&[("cache-control", "max-age=5")]);
    for (freshness, fresh_at_50) in [
        (Freshness::HttpPrivate, false),
        (Freshness::HttpShared, false),
        (Freshness::Configured, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = FakeClock::new();
        let h = http_harness(&dir, &clock, freshness, script());
        h.get(URL).await;
        clock.advance(Duration::from_secs(4));
        assert_eq!(
            h.get(URL).await.cache,
            Some(CacheStatus::Hit),
            "{freshness:?}"
        );
        clock.advance(Duration::from_secs(46));
        let hit = h.get(URL).await.cache == Some(CacheStatus::Hit);
        assert_eq!(hit, fresh_at_50, "{freshness:?}");
    }
}

#[tokio::test]
async fn silence_gets_the_configured_lifetime_and_no_cache_always_revalidates() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let h = http_harness(&dir, &clock, Freshness::HttpPrivate, answering(&[]));
    h.get(URL).await;
    clock.advance(Duration::from_secs(99));
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Hit));

    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::new(&[("cache-control", "no-cache")]);
    let h = http_harness(&dir, &clock, Freshness::HttpPrivate, origin.script(true));
    h.get(URL).await;
    for _ in 0..3 {
        let reply = h.get(URL).await;
        assert_eq!(reply.cache, Some(CacheStatus::Revalidated));
        assert_eq!(reply.body, "body of v1");
    }
    assert_eq!(
        h.calls(),
        4,
        "every use asks the origin, none downloads again"
    );
}

#[tokio::test]
async fn private_answers_are_stored_by_a_private_cache_only() {
    for (freshness, stored) in [
        (Freshness::HttpPrivate, true),
        (Freshness::HttpShared, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = FakeClock::new();
        let h = http_harness(
            &dir,
            &clock,
            freshness,
            answering(&[("cache-control", "private, max-age=60")]),
        );
        h.get(URL).await;
        let hit = h.get(URL).await.cache == Some(CacheStatus::Hit);
        assert_eq!(hit, stored, "{freshness:?}");
    }
}

#[tokio::test]
async fn a_shared_cache_still_caches_api_key_clients_one_credential_each() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let h = http_harness(
        &dir,
        &clock,
        Freshness::HttpShared,
        answering(&[("cache-control", "max-age=60")]),
    );
    let with = |token: &str| {
        Request::get(URL)
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
    };
    h.send(with("a")).await.unwrap();
    assert_eq!(
        h.send(with("a")).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    assert_eq!(
        h.send(with("b")).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    assert_eq!(h.calls(), 2);
}

#[tokio::test]
async fn a_request_s_own_cache_control_is_honoured_in_the_http_modes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let origin = Origin::new(&[("cache-control", "max-age=60")]);
    let h = http_harness(&dir, &clock, Freshness::HttpPrivate, origin.script(true));
    h.get(URL).await;
    let insist = h
        .send(
            Request::get(URL)
                .header("cache-control", "no-cache")
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(insist.cache, Some(CacheStatus::Revalidated));
    assert_eq!(origin.last_request()["if-none-match"], "\"v1\"");
    let no_store = h
        .send(
            Request::get(URL)
                .header("cache-control", "no-store")
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(no_store.cache, Some(CacheStatus::Miss));
    assert!(!origin.last_request().contains_key("if-none-match"));
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Hit));
    assert_eq!(h.calls(), 3);
}

#[tokio::test]
async fn must_revalidate_is_never_served_stale_in_the_http_modes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let script: Script = Arc::new(|n, _: &Request<()>| {
        if n == 0 {
            let mut response = Response::new(Full::new(Bytes::from("good")));
            response.headers_mut().insert(
                "cache-control",
                "max-age=5, must-revalidate".parse().unwrap(),
            );
            Ok(response)
        } else {
            Ok(status(503))
        }
    });
    let layer = CacheLayer::builder(dir.path())
        .clock(clock.clone())
        .freshness(Freshness::HttpPrivate)
        .stale_if_error(Duration::from_secs(600))
        .build()
        .unwrap();
    let h = Harness::new(layer, Duration::ZERO, script);
    h.get(URL).await;
    clock.advance(Duration::from_secs(6));
    assert_eq!(h.get(URL).await.status, 503);
}

#[tokio::test]
async fn in_the_http_modes_a_response_varying_on_an_unkeyed_header_is_not_stored() {
    let script = || answering(&[("cache-control", "max-age=60"), ("vary", "Accept-Language")]);
    let in_french = || {
        Request::get(URL)
            .header("accept-language", "fr")
            .body(())
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let h = http_harness(&dir, &clock, Freshness::HttpPrivate, script());
    h.send(in_french()).await.unwrap();
    assert_eq!(
        h.send(in_french()).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    // Once the header is part of the key, each language has its entry.
    let dir = tempfile::tempdir().unwrap();
    let layer = CacheLayer::builder(dir.path())
        .clock(clock.clone())
        .freshness(Freshness::HttpPrivate)
        .vary_header(http::header::ACCEPT_LANGUAGE)
        .build()
        .unwrap();
    let h = Harness::new(layer, Duration::ZERO, script());
    h.send(in_french()).await.unwrap();
    assert_eq!(
        h.send(in_french()).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    assert_eq!(h.get(URL).await.cache, Some(CacheStatus::Miss));
}
