//! The server-side layer in process: rejections and headers, several policies at once,
//! proxies, concurrency, priority admission and shadow mode. Time is a `FakeClock`.
#![cfg(feature = "server")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tollway_core::FakeClock;
use tollway_limiter::Quota;
use tollway_limiter::server::{
    ConcurrencyLimit, Global, HeaderKey, HeaderOptions, Key, KeyExtractor, Limit, PeerIp,
    PriorityAdmission, Rejection, RequestHead, ResetStyle, ServerLimiterBuilder,
    ServerLimiterLayer,
};
use tower::{Layer, Service, ServiceExt, service_fn};

fn api_key() -> HeaderKey {
    HeaderKey::new(HeaderName::from_static("x-api-key"))
}

fn request(peer: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get("/hello");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    request
}

type Inner = tower::util::ServiceFn<
    fn(Request<Body>) -> std::future::Ready<Result<Response<Body>, Infallible>>,
>;

fn ok_service() -> Inner {
    service_fn(|_req: Request<Body>| std::future::ready(Ok(Response::new(Body::from("ok")))))
}

fn builder(clock: &FakeClock) -> ServerLimiterBuilder<FakeClock> {
    ServerLimiterLayer::builder().clock(clock.clone())
}

async fn send<S>(service: &mut S, request: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    service.ready().await.unwrap().call(request).await.unwrap()
}

async fn body(response: Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn refusal_rounds_retry_after_up_and_allowed_responses_carry_headers() {
    let clock = FakeClock::new();
    let layer = builder(&clock)
        .limit(Limit::new(
            "burst",
            PeerIp::new(),
            Quota::per_second(10).burst(1),
        ))
        .headers(HeaderOptions::all())
        .build()
        .unwrap();
    let mut service = layer.layer(ok_service());

    let allowed = send(&mut service, request("1.2.3.4:1", &[])).await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(allowed.headers()["ratelimit-policy"], r#""burst";q=10;w=1"#);
    assert_eq!(allowed.headers()["ratelimit"], r#""burst";r=0;t=1"#);
    assert_eq!(allowed.headers()["x-ratelimit-remaining"], "0");
    assert!(allowed.headers().get("retry-after").is_none());
    assert_eq!(body(allowed).await, "ok");

    // 100 ms to the next permit; 70 ms later, 30 ms: still `1`, never `0`.
    clock.advance(Duration::from_millis(70));
    let refused = send(&mut service, request("1.2.3.4:2", &[])).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["ratelimit"], r#""burst";r=0;t=1"#);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = serde_json::from_str(&body(refused).await).unwrap();
    assert_eq!(
        problem["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    assert_eq!(problem["status"], 429);

    // Another client has its own bucket; the first gets in again after the interval.
    let other = send(&mut service, request("5.6.7.8:1", &[])).await;
    assert_eq!(other.status(), StatusCode::OK);
    clock.advance(Duration::from_millis(30));
    assert_eq!(
        send(&mut service, request("1.2.3.4:3", &[])).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn quotas_of_one_key_are_all_or_nothing() {
    let clock = FakeClock::new();
    // A per-second burst limit and an hourly quota on the same key.
    let burst = Quota::per_second(2).burst(2);
    let hourly = Quota::per_hour(3).burst(3);
    let layer = builder(&clock)
        .limit(Limit::new("burst", api_key(), burst).and("hourly", hourly))
        .headers(HeaderOptions::default().legacy(true))
        .build()
        .unwrap();
    let mut service = layer.layer(ok_service());
    let key = [("x-api-key", "k1")];
    for _ in 0..2 {
        assert_eq!(
            send(&mut service, request("1.1.1.1:1", &key))
                .await
                .status(),
            200
        );
    }
    // The burst refuses the third; the hourly quota must not be charged for it.
    let refused = send(&mut service, request("1.1.1.1:1", &key)).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["ratelimit"],
        r#""burst";r=0;t=1, "hourly";r=1;t=2400"#
    );
    clock.advance(Duration::from_secs(1));
    let third = send(&mut service, request("1.1.1.1:1", &key)).await;
    assert_eq!(third.status(), 200);
    assert_eq!(
        third.headers()["ratelimit-policy"],
        r#""burst";q=2;w=1, "hourly";q=3;w=3600"#
    );
    // The legacy headers describe the tighter policy: the hourly one, now used up.
    assert_eq!(third.headers()["x-ratelimit-limit"], "3");
    assert_eq!(third.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(third.headers()["x-ratelimit-reset"], "3599");
    clock.advance(Duration::from_secs(1));
    let refused = send(&mut service, request("1.1.1.1:1", &key)).await;
    assert_eq!(refused.status(), 429);
    // Nearly 20 minutes until the hourly bucket admits one more.
    assert_eq!(refused.headers()["retry-after"], "1198");
}

#[tokio::test]
async fn limits_on_different_keys_are_all_or_nothing_and_a_fixed_json_body_fits() {
    let clock = FakeClock::new();
    let fixed_body = r#"{"status":"error","message":"Rate limit exceeded. Please try again later.","data":null}"#;
    let layer = builder(&clock)
        .limit(Limit::new(
            "ip",
            PeerIp::new(),
            Quota::per_minute(10).burst(10),
        ))
        .limit(Limit::new("client", api_key(), Quota::per_hour(1).burst(1)))
        .rejection(Rejection::fixed(
            StatusCode::TOO_MANY_REQUESTS,
            "application/json",
            fixed_body,
        ))
        .build()
        .unwrap();
    let mut service = layer.layer(ok_service());
    let with_key = [("x-api-key", "client-1")];
    assert_eq!(
        send(&mut service, request("9.9.9.9:1", &with_key))
            .await
            .status(),
        200
    );
    // The client quota refuses; the IP limit must give its permit back.
    for _ in 0..5 {
        let refused = send(&mut service, request("9.9.9.9:1", &with_key)).await;
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["content-type"], "application/json");
        assert_eq!(body(refused).await, fixed_body);
    }
    // A request without a key is only limited per IP: 9 of the 10 are left.
    let anonymous = send(&mut service, request("9.9.9.9:1", &[])).await;
    assert_eq!(anonymous.status(), 200);
    assert_eq!(anonymous.headers()["ratelimit"], r#""ip";r=8;t=12"#);
    assert_eq!(layer.tracked_keys(), 2);
    assert_eq!(layer.shadow_report().would_reject, 5);
}

#[tokio::test]
async fn a_spoofed_forwarded_for_does_not_buy_a_new_bucket() {
    let clock = FakeClock::new();
    let layer = builder(&clock)
        .limit(Limit::new(
            "ip",
            PeerIp::new().trust_proxy("10.0.0.0/8".parse().unwrap()),
            Quota::per_hour(1).burst(1),
        ))
        .build()
        .unwrap();
    let mut service = layer.layer(ok_service());
    let first = request("10.0.0.1:80", &[("x-forwarded-for", "203.0.113.5")]);
    assert_eq!(send(&mut service, first).await.status(), 200);
    for spoof in ["1.1.1.1", "2.2.2.2", "3.3.3.3, 4.4.4.4"] {
        let header = format!("{spoof}, 203.0.113.5");
        let spoofed = request("10.0.0.1:80", &[("x-forwarded-for", &header)]);
        assert_eq!(send(&mut service, spoofed).await.status(), 429, "{header}");
    }
    // An untrusted peer's header is ignored altogether.
    let direct = request("198.51.100.1:80", &[("x-forwarded-for", "203.0.113.5")]);
    assert_eq!(send(&mut service, direct).await.status(), 200);
    assert_eq!(layer.tracked_keys(), 2);
}

#[tokio::test]
async fn clones_of_the_layer_and_service_share_buckets() {
    let clock = FakeClock::new();
    let layer = builder(&clock)
        .limit(Limit::new("global", Global, Quota::per_hour(2).burst(1)))
        .build()
        .unwrap();
    let mut a = layer.clone().layer(ok_service());
    let mut b = a.clone();
    let mut c = layer.layer(ok_service());
    assert_eq!(send(&mut a, request("1.1.1.1:1", &[])).await.status(), 200);
    assert_eq!(send(&mut b, request("2.2.2.2:1", &[])).await.status(), 429);
    assert_eq!(send(&mut c, request("3.3.3.3:1", &[])).await.status(), 429);
}

#[tokio::test]
async fn closures_key_requests_and_bad_policy_names_fail_to_build() {
    let clock = FakeClock::new();
    let by_path = |parts: &RequestHead<'_>| Some(Key::from(parts.uri.path()));
    assert_eq!(
        by_path.extract(&RequestHead::of(&request("1.1.1.1:1", &[]))),
        Some(Key::from("/hello"))
    );
    let error = builder(&clock)
        .limit(Limit::new(
            "bad\nname",
            by_path,
            Quota::per_hour(2).burst(1),
        ))
        .build()
        .unwrap_err();
    assert_eq!(error.name(), "bad\nname");
    assert!(error.to_string().contains("visible ASCII"), "{error}");
    // Two policies of one name could not be paired with their status by name.
    let error = builder(&clock)
        .limit(Limit::new("ip", by_path, Quota::per_hour(2).burst(1)))
        .limit(Limit::new("ip", Global, Quota::per_hour(9).burst(9)))
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("same name"), "{error}");
}

/// An inner service that holds each request until the test adds a permit to `gate`.
macro_rules! gated {
    ($gate:expr) => {{
        let gate: Arc<Semaphore> = Arc::clone(&$gate);
        service_fn(move |_req: Request<Body>| {
            let gate = Arc::clone(&gate);
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, Infallible>(Response::new(Body::from("done")))
            }
        })
    }};
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn concurrency_limit_refuses_with_402_and_frees_on_completion() {
    let clock = FakeClock::new();
    let layer = builder(&clock)
        .concurrency(
            ConcurrencyLimit::new(api_key().or(PeerIp::new()), 1)
                .status(StatusCode::PAYMENT_REQUIRED),
        )
        .headers(HeaderOptions::none())
        .build()
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let mut service = layer.layer(gated!(gate));
    let key = [("x-api-key", "sponsor")];
    let first = tokio::spawn(
        service
            .ready()
            .await
            .unwrap()
            .call(request("1.1.1.1:1", &key)),
    );
    settle().await;
    assert_eq!(layer.in_flight_keys(), 1);
    let refused = send(&mut service, request("2.2.2.2:1", &key)).await;
    assert_eq!(refused.status(), StatusCode::PAYMENT_REQUIRED);
    // Another key is not affected.
    let other = tokio::spawn(
        service
            .ready()
            .await
            .unwrap()
            .call(request("2.2.2.2:1", &[])),
    );
    gate.add_permits(2);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(other.await.unwrap().unwrap().status(), 200);
    assert_eq!(layer.in_flight_keys(), 0);
    gate.add_permits(1);
    assert_eq!(
        send(&mut service, request("1.1.1.1:1", &key))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_dropped_request_gives_its_concurrency_place_back() {
    let clock = FakeClock::new();
    let layer = builder(&clock)
        .concurrency(ConcurrencyLimit::new(Global, 1))
        .build()
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let mut service = layer.layer(gated!(gate));
    let pending = tokio::spawn(
        service
            .ready()
            .await
            .unwrap()
            .call(request("1.1.1.1:1", &[])),
    );
    settle().await;
    assert_eq!(
        send(&mut service, request("1.1.1.1:1", &[])).await.status(),
        429
    );
    pending.abort();
    let _ = pending.await;
    assert_eq!(layer.in_flight_keys(), 0);
    gate.add_permits(1);
    assert_eq!(
        send(&mut service, request("1.1.1.1:1", &[])).await.status(),
        200
    );
}

#[tokio::test]
async fn priority_admission_evicts_the_lowest_waiter_with_503() {
    let clock = FakeClock::new();
    let tier = |parts: &RequestHead<'_>| {
        parts
            .headers
            .get("x-tier")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0)
    };
    let layer = builder(&clock)
        .priority(PriorityAdmission::new(1, 1).tier(tier))
        .build()
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let mut service = layer.layer(gated!(gate));
    let call = |service: &mut _, t: &'static str| {
        let request = request("1.1.1.1:1", &[("x-tier", t)]);
        let future = Service::call(service, request);
        tokio::spawn(future)
    };
    service.ready().await.unwrap();
    let running = call(&mut service, "0");
    service.ready().await.unwrap();
    let low = call(&mut service, "0");
    settle().await;
    assert_eq!(layer.queue_load(), (1, 1));
    service.ready().await.unwrap();
    let high = call(&mut service, "5");
    // The queue of one was full: the tier-5 arrival took the tier-0 waiter's place.
    let evicted = low.await.unwrap().unwrap();
    assert_eq!(evicted.status(), StatusCode::SERVICE_UNAVAILABLE);
    // An equal-priority arrival is refused at once.
    let same = send(&mut service, request("1.1.1.1:1", &[("x-tier", "5")])).await;
    assert_eq!(same.status(), StatusCode::SERVICE_UNAVAILABLE);
    gate.add_permits(2);
    assert_eq!(running.await.unwrap().unwrap().status(), 200);
    assert_eq!(high.await.unwrap().unwrap().status(), 200);
    assert_eq!(layer.queue_load(), (0, 0));
}

#[tokio::test]
async fn shadow_mode_counts_and_writes_headers_but_refuses_nothing() {
    let clock = FakeClock::new();
    let layer = builder(&clock)
        .limit(Limit::new(
            "ip",
            PeerIp::new(),
            Quota::per_hour(10).burst(10),
        ))
        .headers(HeaderOptions::all().reset_style(ResetStyle::UnixTimestamp))
        .shadow(true)
        .build()
        .unwrap();
    let mut service = layer.layer(ok_service());
    for _ in 0..15 {
        let response = send(&mut service, request("1.1.1.1:1", &[])).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().contains_key("ratelimit"));
        assert!(response.headers().get("retry-after").is_none());
    }
    let report = layer.shadow_report();
    assert_eq!(report.would_reject, 5);
    // After the 9th request 1 of 10 is left (10%): the 9th and 10th are near the limit, and
    // so are the five that would have been refused.
    assert_eq!(report.near_limit, 7);
    let last = send(&mut service, request("1.1.1.1:1", &[])).await;
    assert_eq!(last.headers()["ratelimit"], r#""ip";r=0;t=3600"#);
    let reset: u64 = last.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset > 1_600_000_000, "a unix timestamp: {reset}");
}

#[tokio::test]
async fn tracked_keys_stay_under_the_bound_through_the_service() {
    let clock = FakeClock::new();
    let layer = builder(&clock)
        .limit(Limit::new(
            "ip",
            PeerIp::new(),
            Quota::per_second(100).burst(1),
        ))
        .max_keys(std::num::NonZeroUsize::new(256).unwrap())
        .headers(HeaderOptions::none())
        .build()
        .unwrap();
    let mut service = layer.layer(ok_service());
    for i in 0..20_000u32 {
        let ip = std::net::Ipv4Addr::from_bits(i);
        let response = send(&mut service, request(&format!("{ip}:1"), &[])).await;
        assert_eq!(response.status(), 200);
        clock.advance(Duration::from_micros(100));
        assert!(layer.tracked_keys() <= layer.key_bound());
    }
    assert_eq!(layer.key_bound(), 256);
    assert!(layer.memory_used() <= layer.memory_bound());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_concurrency_limits_admit_exactly_and_refunds_are_exact() {
    let clock = FakeClock::new();
    // Time stands still: A admits 100 in all, B 50; B refuses the rest, and each refusal
    // must give A its permit back.
    let layer = builder(&clock)
        .limit(Limit::new("a", Global, Quota::per_hour(100).burst(100)))
        .limit(Limit::new(
            "b",
            PeerIp::new(),
            Quota::per_hour(50).burst(50),
        ))
        .build()
        .unwrap();
    let service = layer.layer(ok_service());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let mut service = service.clone();
            tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..100 {
                    if send(&mut service, request("1.2.3.4:1", &[])).await.status() == 200 {
                        admitted += 1;
                    }
                }
                admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap();
    }
    assert_eq!(admitted, 50);
    let mut service = service;
    let last = send(&mut service, request("1.2.3.4:1", &[])).await;
    assert_eq!(last.status(), 429);
    assert_eq!(
        last.headers()["ratelimit"],
        r#""a";r=50;t=1800, "b";r=0;t=3600"#
    );
    // Another address still has A's 50.
    for _ in 0..50 {
        assert_eq!(
            send(&mut service, request("5.6.7.8:1", &[])).await.status(),
            200
        );
    }
    assert_eq!(
        send(&mut service, request("9.9.9.9:1", &[])).await.status(),
        429
    );
}

/// Rename-issue item 2, through the service: an inner service (the budget's quota layer, the
/// application) already wrote `RateLimit-Policy` / `RateLimit`; its members stay, the
/// limiter's are appended, each name once, each status next to its own policy.
#[tokio::test]
async fn an_inner_services_rate_limit_headers_keep_their_members() {
    let clock = FakeClock::new();
    let layer = builder(&clock)
        .limit(Limit::new(
            "ip",
            PeerIp::new(),
            Quota::per_minute(10).burst(10),
        ))
        .headers(HeaderOptions::all())
        .build()
        .unwrap();
    let inner = service_fn(|_req: Request<Body>| async {
        let response = Response::builder()
            .header("ratelimit-policy", r#""quota";q=100;w=86400"#)
            .header("ratelimit", r#""quota";r=99;t=86400"#)
            .header("x-ratelimit-remaining", "99")
            .header("x-ratelimit-limit", "100")
            .body(Body::from("ok"))
            .unwrap();
        Ok::<_, Infallible>(response)
    });
    let mut service = layer.layer(inner);
    let response = send(&mut service, request("1.2.3.4:1", &[])).await;
    let policies = tollway_core::headers::RateLimitPolicy::from_headers(response.headers());
    let statuses = tollway_core::headers::RateLimitStatus::from_headers(response.headers());
    let names = |v: Vec<&str>| v.into_iter().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        policies
            .iter()
            .map(|p| p.name().to_owned())
            .collect::<Vec<_>>(),
        names(vec!["quota", "ip"])
    );
    assert_eq!(
        statuses
            .iter()
            .map(|s| (s.name().to_owned(), s.remaining()))
            .collect::<Vec<_>>(),
        vec![("quota".to_owned(), 99), ("ip".to_owned(), 9)]
    );
    // The legacy set is the tighter one: ours has 9 left of 10.
    assert_eq!(response.headers()["x-ratelimit-remaining"], "9");
    assert_eq!(response.headers()["x-ratelimit-limit"], "10");
}

fn keyed_request(key: &str) -> Request<Body> {
    request("192.0.2.1:1", &[("x-key", key)])
}

/// Finding 1, through the layer: the limits were taken in turn and "refunded" by subtracting
/// an interval, which erased a permit another request took while a slow key extractor ran. A
/// (key "spent") passes the 1/s burst-1 global limit at 1 s; its extractor takes 1.5 s, during
/// which B (key "fresh") is admitted at 2.5 s; A is refused by its key; C at 2.5 s must be
/// refused too: the global slot is B's.
#[tokio::test]
async fn a_slow_key_extractor_cannot_open_a_second_slot_on_another_limit() {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let clock = FakeClock::new();
    let cell: Arc<OnceLock<ServerLimiterLayer<FakeClock>>> = Arc::new(OnceLock::new());
    let armed = Arc::new(AtomicBool::new(false));
    let (layer_cell, armed_here, slow_clock) =
        (Arc::clone(&cell), Arc::clone(&armed), clock.clone());
    let slow = move |head: &RequestHead<'_>| {
        let key = head.headers.get("x-key")?.to_str().ok()?.to_owned();
        if key == "spent" && armed_here.swap(false, Relaxed) {
            slow_clock.advance(Duration::from_millis(1_500));
            let mut other = layer_cell.get()?.clone().layer(ok_service());
            let b = other.call(keyed_request("fresh")).now_or_never()?.ok()?;
            assert_eq!(b.status(), 200, "B is admitted");
        }
        Some(Key::from(key))
    };
    let layer = builder(&clock)
        .limit(Limit::new("global", Global, Quota::per_second(1).burst(1)))
        .limit(Limit::new("key", slow, Quota::per_hour(1).burst(1)))
        .headers(HeaderOptions::none())
        .build()
        .unwrap();
    let layer = cell.get_or_init(|| layer).clone();
    let mut service = layer.layer(ok_service());
    assert_eq!(
        send(&mut service, keyed_request("spent")).await.status(),
        200
    );
    clock.advance(Duration::from_secs(1));
    armed.store(true, Relaxed);
    assert_eq!(
        send(&mut service, keyed_request("spent")).await.status(),
        429
    );
    let c = send(&mut service, keyed_request("other")).await;
    assert_eq!(
        c.status(),
        429,
        "two requests admitted at once on a burst of 1"
    );
}

/// A client refused by its own limit takes nothing from the others: a flood of requests with
/// a spent key cannot spend the global limit that everybody shares.
#[tokio::test]
async fn a_refused_flood_does_not_spend_the_shared_limit() {
    let clock = FakeClock::new();
    let by_header =
        |head: &RequestHead<'_>| Some(Key::from(head.headers.get("x-key")?.to_str().ok()?));
    let layer = builder(&clock)
        .limit(Limit::new("global", Global, Quota::per_hour(5).burst(5)))
        .limit(Limit::new("key", by_header, Quota::per_hour(1).burst(1)))
        .headers(HeaderOptions::none())
        .build()
        .unwrap();
    let mut service = layer.layer(ok_service());
    assert_eq!(
        send(&mut service, keyed_request("flooder")).await.status(),
        200
    );
    for _ in 0..1_000 {
        assert_eq!(
            send(&mut service, keyed_request("flooder")).await.status(),
            429
        );
    }
    for client in ["a", "b", "c", "d"] {
        let response = send(&mut service, keyed_request(client)).await;
        assert_eq!(
            response.status(),
            200,
            "{client}: the shared limit was spent by refusals"
        );
    }
}
