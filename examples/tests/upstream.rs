//! End-to-end tests of the upstream simulator over real sockets (and one in process, on paused
//! time). Each test starts its own simulator; timings leave wide margins, and assertions that
//! only hold if a burst lands within one second are checked only when it did.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tollway_examples::upstream::{
    DEFAULT_KEY, RateHeaders, SEED_USER_IDS, Stats, Upstream, WindowKind, follower_count, pages_for,
};
use tower::ServiceExt;

/// A user that exists by default.
const USER: &str = "1553030189";

/// A small HTTP/1.1 client bound to one simulator.
#[derive(Clone)]
struct Http {
    client: Client<HttpConnector, Empty<Bytes>>,
    base: String,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<u64> {
        self.headers.get(name)?.to_str().ok()?.parse().ok()
    }
}

impl Http {
    fn new(sim: &Upstream) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: sim.url(),
        }
    }

    async fn get(&self, path_and_query: &str, key: Option<&str>) -> Reply {
        let mut request = Request::get(format!("{}{path_and_query}", self.base));
        if let Some(key) = key {
            request = request.header("x-access-key", key);
        }
        let response = self
            .client
            .request(request.body(Empty::new()).unwrap())
            .await
            .expect("the simulator answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn followers(&self, user_id: &str, page_id: &str) -> Reply {
        let path = format!("/v2/user/followers?user_id={user_id}&page_id={page_id}&force=on");
        self.get(&path, Some(DEFAULT_KEY)).await
    }

    async fn balance(&self) -> Reply {
        self.get("/sys/balance", Some(DEFAULT_KEY)).await
    }

    async fn stats(&self) -> Stats {
        let reply = self.get("/__stats", None).await;
        assert_eq!(reply.status, StatusCode::OK);
        serde_json::from_value(reply.body).unwrap()
    }
}

/// Sends `n` followers requests for `user_id`'s first page at once; returns the replies and how
/// long the burst took.
async fn burst(http: &Http, user_id: &'static str, n: usize) -> (Vec<Reply>, Duration) {
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..n {
        let http = http.clone();
        set.spawn(async move { http.followers(user_id, "").await });
    }
    let replies = set.join_all().await;
    (replies, start.elapsed())
}

fn count(replies: &[Reply], status: StatusCode) -> usize {
    replies.iter().filter(|r| r.status == status).count()
}

#[tokio::test]
async fn paging_returns_every_page_and_ends_with_null() {
    let sim = Upstream::builder().rate(1000).spawn().await.unwrap();
    let http = Http::new(&sim);
    let users: BTreeSet<&str> = SEED_USER_IDS
        .iter()
        .copied()
        .filter(|&id| id != "12345")
        .collect();
    let mut expected_pages = 0;
    for &user in &users {
        let mut page_id = String::new();
        let mut pages = 0;
        let mut pks = BTreeSet::new();
        loop {
            let reply = http.followers(user, &page_id).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{user} page {pages}: {reply:?}"
            );
            pages += 1;
            for follower in reply.body["response"]["users"].as_array().unwrap() {
                assert!(follower["username"].is_string());
                assert!(pks.insert(follower["pk"].as_str().unwrap().to_owned()));
            }
            match &reply.body["next_page_id"] {
                Value::String(next) => page_id.clone_from(next),
                Value::Null => break,
                other => panic!("next_page_id is {other}"),
            }
        }
        assert_eq!(pages, pages_for(user), "{user}");
        assert_eq!(pks.len(), follower_count(user, 25), "{user}");
        expected_pages += u64::from(pages);
    }

    let stats = http.stats().await;
    assert_eq!(stats.credits_charged, expected_pages);
    assert_eq!(stats.status(200), expected_pages);
    assert_eq!(stats.duplicate_page_fetches, 0);
    assert_eq!(stats.credits_left, 1_000_000 - expected_pages);
    sim.shutdown().await;
}

#[tokio::test]
async fn page_size_and_first_page_without_page_id() {
    let sim = Upstream::builder()
        .rate(1000)
        .page_size(7)
        .spawn()
        .await
        .unwrap();
    let http = Http::new(&sim);
    let user = "57606704380";
    assert!(pages_for(user) > 1);
    let without = http
        .get(
            &format!("/v2/user/followers?user_id={user}"),
            Some(DEFAULT_KEY),
        )
        .await;
    let with_empty = http.followers(user, "").await;
    assert_eq!(without.status, StatusCode::OK);
    assert_eq!(without.body, with_empty.body);
    assert_eq!(
        without.body["response"]["users"].as_array().unwrap().len(),
        7
    );
    assert!(without.body["next_page_id"].is_string());
    assert_eq!(sim.stats().duplicate_page_fetches, 1);
}

#[tokio::test]
async fn unknown_user_is_404_and_costs_nothing() {
    let sim = Upstream::builder().rate(1000).spawn().await.unwrap();
    let http = Http::new(&sim);
    for user in ["12345", "777", "not-a-number"] {
        let reply = http.followers(user, "").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{user}");
        assert_eq!(reply.body, json!({ "detail": "User not found" }));
    }
    let stats = sim.stats();
    assert_eq!(stats.status(404), 3);
    assert_eq!(stats.credits_charged, 0);
    assert_eq!(http.balance().await.body["amount"], 1_000_000);
}

#[tokio::test]
async fn all_numeric_users_exist_except_missing_ones() {
    let sim = Upstream::builder()
        .rate(1000)
        .all_numeric_users_exist(true)
        .missing_user("666")
        .spawn()
        .await
        .unwrap();
    let http = Http::new(&sim);
    assert_eq!(http.followers("777", "").await.status, StatusCode::OK);
    assert_eq!(http.followers(USER, "").await.status, StatusCode::OK);
    for user in ["12345", "666", "abc"] {
        assert_eq!(http.followers(user, "").await.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn bad_requests_are_400_and_cost_nothing() {
    let sim = Upstream::builder().rate(1000).spawn().await.unwrap();
    let http = Http::new(&sim);
    let made_up = http.followers(USER, "2").await;
    assert_eq!(made_up.status, StatusCode::BAD_REQUEST);
    assert_eq!(made_up.body, json!({ "detail": "Invalid page_id" }));
    let no_user = http.get("/v2/user/followers", Some(DEFAULT_KEY)).await;
    assert_eq!(no_user.status, StatusCode::BAD_REQUEST);
    assert!(no_user.body["detail"].is_string());
    assert_eq!(sim.stats().credits_charged, 0);
}

#[tokio::test]
async fn missing_or_wrong_key_is_401() {
    let sim = Upstream::builder()
        .rate(1000)
        .key("primary")
        .add_key("secondary")
        .spawn()
        .await
        .unwrap();
    let http = Http::new(&sim);
    let path = format!("/v2/user/followers?user_id={USER}");
    for key in [None, Some("wrong"), Some(DEFAULT_KEY)] {
        for path in [path.as_str(), "/sys/balance"] {
            let reply = http.get(path, key).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path} {key:?}");
            assert!(reply.body["detail"].is_string());
        }
    }
    for key in ["primary", "secondary"] {
        assert_eq!(http.get(&path, Some(key)).await.status, StatusCode::OK);
    }
    let stats = http.stats().await;
    assert_eq!(
        stats.requests, 8,
        "/__stats needs no key and is not counted"
    );
    assert_eq!(stats.status(401), 6);
    assert_eq!(stats.credits_charged, 2);
}

#[tokio::test]
async fn burst_of_3r_admits_exactly_r_then_retry_after_is_honest() {
    const RATE: u32 = 11;
    let sim = Upstream::builder().rate(RATE).spawn().await.unwrap();
    let http = Http::new(&sim);
    let (replies, took) = burst(&http, USER, 3 * RATE as usize).await;

    let ok = count(&replies, StatusCode::OK);
    let limited = count(&replies, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(ok + limited, 3 * RATE as usize);
    assert!(ok >= RATE as usize);
    if took < Duration::from_millis(900) {
        assert_eq!(ok, RATE as usize, "the burst took {took:?}");
    }
    for reply in &replies {
        assert_eq!(reply.header("x-ratelimit-limit"), Some(u64::from(RATE)));
        assert!(reply.header("x-ratelimit-remaining").is_some());
        assert!(reply.header("x-ratelimit-reset").unwrap() >= 1);
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(reply.header("retry-after").unwrap() >= 1);
            assert_eq!(reply.header("x-ratelimit-remaining"), Some(0));
        }
    }
    let stats = sim.stats();
    assert_eq!(stats.max_in_any_1s_window, u64::from(RATE));
    assert_eq!(stats.max_in_any_1s_window_all_keys, u64::from(RATE));
    assert_eq!(stats.status(429), limited as u64);
    assert_eq!(stats.credits_charged, ok as u64);
    assert_eq!(stats.duplicate_page_fetches, ok as u64 - 1);

    // Waiting as long as the last 429 said is always enough.
    let retry_after = replies
        .iter()
        .filter_map(|reply| reply.header("retry-after"))
        .max()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(http.followers(USER, "").await.status, StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test]
async fn each_key_has_its_own_window() {
    let sim = Upstream::builder()
        .rate(2)
        .add_key("other")
        .spawn()
        .await
        .unwrap();
    let http = Http::new(&sim);
    let path = format!("/v2/user/followers?user_id={USER}");
    let start = Instant::now();
    let mut set = JoinSet::new();
    for key in [
        DEFAULT_KEY,
        DEFAULT_KEY,
        DEFAULT_KEY,
        "other",
        "other",
        "other",
    ] {
        let http = http.clone();
        let path = path.clone();
        set.spawn(async move { http.get(&path, Some(key)).await });
    }
    let replies = set.join_all().await;
    let took = start.elapsed();
    let stats = sim.stats();
    assert_eq!(stats.max_in_any_1s_window, 2);
    assert!(stats.max_in_any_1s_window_all_keys <= 4);
    if took < Duration::from_millis(900) {
        assert_eq!(count(&replies, StatusCode::OK), 4);
        assert_eq!(stats.max_in_any_1s_window_all_keys, 4);
    }
}

#[tokio::test]
async fn credits_run_out_with_402_and_never_go_negative() {
    let sim = Upstream::builder()
        .rate(1000)
        .credits(5)
        .spawn()
        .await
        .unwrap();
    let http = Http::new(&sim);
    let (replies, _) = burst(&http, USER, 20).await;
    assert_eq!(count(&replies, StatusCode::OK), 5);
    assert_eq!(count(&replies, StatusCode::PAYMENT_REQUIRED), 15);
    let refused = replies
        .iter()
        .find(|reply| reply.status == StatusCode::PAYMENT_REQUIRED)
        .unwrap();
    assert_eq!(refused.body, json!({ "detail": "Insufficient balance" }));

    assert_eq!(
        http.balance().await.body,
        json!({ "rate": 1000, "amount": 0 })
    );
    assert_eq!(
        http.followers("12345", "").await.status,
        StatusCode::NOT_FOUND
    );
    let stats = sim.stats();
    assert_eq!(stats.credits_charged, 5);
    assert_eq!(stats.credits_left, 0);
    assert_eq!(sim.handle().credits_left(), 0);
}

#[tokio::test]
async fn fault_every_nth_admitted_request_is_500() {
    let sim = Upstream::builder()
        .rate(1000)
        .fault_every(3)
        .spawn()
        .await
        .unwrap();
    let http = Http::new(&sim);
    let mut statuses = Vec::new();
    for _ in 0..9 {
        statuses.push(http.followers(USER, "").await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 500, 200, 200, 500, 200, 200, 500]);
    let stats = sim.stats();
    assert_eq!(stats.credits_charged, 6, "a 500 costs nothing");
    assert_eq!(stats.status(500), 3);
}

#[tokio::test]
async fn outage_answers_503_with_retry_after() {
    let start = Instant::now();
    let sim = Upstream::builder()
        .rate(1000)
        .outage(Duration::ZERO, Duration::from_secs(1))
        .spawn()
        .await
        .unwrap();
    let http = Http::new(&sim);
    let down = http.followers(USER, "").await;
    let balance = http.balance().await;
    if start.elapsed() < Duration::from_millis(900) {
        assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.header("retry-after"), Some(1));
        assert_eq!(balance.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    tokio::time::sleep_until((start + Duration::from_millis(1200)).into()).await;
    assert_eq!(http.followers(USER, "").await.status, StatusCode::OK);
    let stats = sim.stats();
    assert_eq!(stats.credits_charged, 1, "a 503 costs nothing");
    assert_eq!(stats.max_in_any_1s_window, 1, "a 503 is not admitted");
}

#[tokio::test]
async fn concurrency_limit_answers_the_configured_status() {
    let sim = Upstream::builder()
        .rate(1000)
        .latency(Duration::from_millis(300))
        .concurrency_limit(Some(1))
        .concurrency_status(StatusCode::PAYMENT_REQUIRED)
        .spawn()
        .await
        .unwrap();
    let http = Http::new(&sim);
    let start = Instant::now();
    let (replies, took) = burst(&http, USER, 2).await;
    assert!(took >= Duration::from_millis(300), "latency is added");
    if took < Duration::from_millis(550) {
        assert_eq!(count(&replies, StatusCode::OK), 1);
        assert_eq!(count(&replies, StatusCode::PAYMENT_REQUIRED), 1);
        assert_eq!(sim.stats().max_in_flight, 2);
    }
    // The slot is given back once the answer is sent.
    assert_eq!(http.followers(USER, "").await.status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(600));
}

#[tokio::test]
async fn stats_count_every_outcome() {
    let sim = Upstream::builder().rate(1000).spawn().await.unwrap();
    let http = Http::new(&sim);
    assert_eq!(http.balance().await.status, StatusCode::OK);
    assert_eq!(http.followers(USER, "").await.status, StatusCode::OK);
    let second = http.followers(USER, "").await;
    assert_eq!(second.status, StatusCode::OK);
    let page_2 = second.body["next_page_id"].as_str().map(str::to_owned);
    if let Some(page_2) = page_2 {
        assert_eq!(http.followers(USER, &page_2).await.status, StatusCode::OK);
    }
    assert_eq!(
        http.followers("12345", "").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        http.get("/sys/balance", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    let stats = http.stats().await;
    assert_eq!(stats, sim.stats(), "/__stats and the handle agree");
    let served = 2 + u64::from(pages_for(USER) > 1);
    assert_eq!(stats.requests, served + 3);
    assert_eq!(stats.status(200), served + 1);
    assert_eq!(stats.status(404), 1);
    assert_eq!(stats.status(401), 1);
    assert_eq!(stats.credits_charged, served);
    assert_eq!(stats.duplicate_page_fetches, 1);
    assert_eq!(stats.max_in_flight, 1);
    assert!((1..=served + 1).contains(&stats.max_in_any_1s_window));
}

#[tokio::test]
async fn unknown_route_is_a_json_404() {
    let sim = Upstream::builder().spawn().await.unwrap();
    let reply = Http::new(&sim).get("/v1/nope", Some(DEFAULT_KEY)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.body["detail"].is_string());
    assert_eq!(sim.stats().requests, 0);
}

/// In process, on paused time: the window is exact to the nanosecond and `Retry-After` says
/// when the oldest admission leaves it.
#[tokio::test(start_paused = true)]
async fn router_on_paused_time_is_exact() {
    let (router, handle) = Upstream::builder().rate(2).into_router();
    let call = |router: axum::Router| async move {
        let request = Request::get(format!("/v2/user/followers?user_id={USER}"))
            .header("x-access-key", DEFAULT_KEY)
            .body(Body::empty())
            .unwrap();
        router.oneshot(request).await.unwrap()
    };
    assert_eq!(call(router.clone()).await.status(), StatusCode::OK);
    tokio::time::advance(Duration::from_millis(400)).await;
    let second = call(router.clone()).await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()["x-ratelimit-remaining"], "0");
    let refused = call(router.clone()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");

    // The first admission leaves the window exactly 1 s after it arrived.
    tokio::time::advance(Duration::from_millis(600) - Duration::from_nanos(1)).await;
    assert_eq!(
        call(router.clone()).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::advance(Duration::from_nanos(1)).await;
    assert_eq!(call(router.clone()).await.status(), StatusCode::OK);

    let stats = handle.stats();
    assert_eq!(stats.status(200), 3);
    assert_eq!(stats.status(429), 2);
    assert_eq!(stats.max_in_any_1s_window, 2);
    assert_eq!(stats.duplicate_page_fetches, 2);
}

/// One followers request through `router`, in process.
async fn call(router: &axum::Router) -> axum::response::Response {
    let request = Request::get(format!("/v2/user/followers?user_id={USER}"))
        .header("x-access-key", DEFAULT_KEY)
        .body(Body::empty())
        .unwrap();
    router.clone().oneshot(request).await.unwrap()
}

fn header<'a>(response: &'a axum::response::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Each family of rate-limit fields, as asked; the IETF pair names one policy.
#[tokio::test(start_paused = true)]
async fn rate_limit_fields_come_in_the_family_asked_for() {
    let (ietf, _) = Upstream::builder()
        .rate(3)
        .rate_headers(RateHeaders::Ietf)
        .into_router();
    let first = call(&ietf).await;
    assert_eq!(
        header(&first, "ratelimit-policy"),
        Some("\"default\";q=3;w=1")
    );
    assert_eq!(header(&first, "ratelimit"), Some("\"default\";r=2;t=1"));
    assert_eq!(header(&first, "x-ratelimit-limit"), None);
    let (both, _) = Upstream::builder()
        .rate(3)
        .rate_headers(RateHeaders::Both)
        .into_router();
    let first = call(&both).await;
    assert!(header(&first, "ratelimit").is_some() && header(&first, "x-ratelimit-limit").is_some());
    // Without fields, a 429 says only when to come back.
    let (none, _) = Upstream::builder()
        .rate(1)
        .rate_headers(RateHeaders::None)
        .into_router();
    let admitted = call(&none).await;
    assert!(
        admitted
            .headers()
            .keys()
            .all(|name| !name.as_str().contains("ratelimit")),
        "{:?}",
        admitted.headers()
    );
    let refused = call(&none).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "retry-after"), Some("1"));
    assert_eq!(header(&refused, "x-ratelimit-remaining"), None);
}

/// A fixed window counts each wall-clock second afresh and says when it ends as a unix time; a
/// leaky bucket lets no two through together and counts the refused one.
#[tokio::test(start_paused = true)]
async fn window_kinds_count_as_their_limiters_do() {
    let (fixed, _) = Upstream::builder()
        .rate(2)
        .window(WindowKind::FixedWindow)
        .into_router();
    let first = call(&fixed).await;
    let reset: u64 = header(&first, "x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(reset == now + 1 || reset == now + 2, "{reset} vs {now}");
    assert_eq!(call(&fixed).await.status(), StatusCode::OK);
    assert_eq!(call(&fixed).await.status(), StatusCode::TOO_MANY_REQUESTS);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(call(&fixed).await.status(), StatusCode::OK, "a new second");

    let (leaky, handle) = Upstream::builder()
        .rate(10)
        .window(WindowKind::LeakyBucket {
            tolerance: Duration::from_millis(10),
        })
        .into_router();
    assert_eq!(call(&leaky).await.status(), StatusCode::OK);
    assert_eq!(call(&leaky).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // The refusal counted: 100 ms later is still too early, 200 ms is not.
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(call(&leaky).await.status(), StatusCode::TOO_MANY_REQUESTS);
    tokio::time::advance(Duration::from_millis(290)).await;
    assert_eq!(call(&leaky).await.status(), StatusCode::OK);
    assert_eq!(
        handle.window(),
        WindowKind::LeakyBucket {
            tolerance: Duration::from_millis(10)
        }
    );

    let (token, handle) = Upstream::builder()
        .rate(2)
        .window("token-bucket".parse().unwrap())
        .into_router();
    assert_eq!(
        handle.window(),
        WindowKind::TokenBucket { burst: 4 },
        "twice the rate"
    );
    for _ in 0..4 {
        assert_eq!(call(&token).await.status(), StatusCode::OK);
    }
    assert_eq!(call(&token).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A change of plan: the next answer states the new limit, the balance reports it, and the
/// window admits by it.
#[tokio::test(start_paused = true)]
async fn the_rate_changes_at_runtime() {
    let (router, handle) = Upstream::builder().rate(1).into_router();
    assert_eq!(call(&router).await.status(), StatusCode::OK);
    assert_eq!(call(&router).await.status(), StatusCode::TOO_MANY_REQUESTS);
    handle.set_rate(3);
    let upgraded = call(&router).await;
    assert_eq!(upgraded.status(), StatusCode::OK);
    assert_eq!(header(&upgraded, "x-ratelimit-limit"), Some("3"));
    assert_eq!(handle.rate(), 3);
    let balance = Request::get("/sys/balance")
        .header("x-access-key", DEFAULT_KEY)
        .body(Body::empty())
        .unwrap();
    let balance = router.clone().oneshot(balance).await.unwrap();
    let body = balance.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["rate"], 3);
    handle.set_rate(0);
    assert_eq!(handle.rate(), 1, "at least one a second");
}
