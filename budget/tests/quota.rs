//! The server side: per-key quotas on an axum router.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use http_body_util::BodyExt;
use tollway_budget::quota::{Anonymous, KeyQuotaLayer, QuotaCharge, QuotaKey};
use tollway_budget::{Ledger, Window};
use tollway_core::client_ip::{Cidr, ClientIp};
use tollway_core::headers::{RateLimitPolicy, RateLimitStatus};
use tower::ServiceExt;

fn app(quota: &KeyQuotaLayer, hits: Arc<AtomicU64>) -> Router {
    Router::new()
        .route(
            "/search",
            get(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { "found" }
            }),
        )
        .route("/created", get(|| async { StatusCode::CREATED }))
        .route(
            "/broken",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .layer(quota.clone())
}

fn request(path: &str, key: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(path);
    if let Some(key) = key {
        builder = builder.header("x-api-key", key);
    }
    builder.body(Body::empty()).unwrap()
}

/// A request without a key from `ip` (the peer address as a bare `SocketAddr` extension; with
/// the `axum` feature, axum's `ConnectInfo` works too).
fn from(ip: &str, path: &str) -> Request<Body> {
    let mut req = request(path, None);
    let peer = SocketAddr::new(ip.parse().unwrap(), 4000);
    req.extensions_mut().insert(peer);
    req
}

async fn json(response: axum::response::Response) -> serde_json::Value {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn keys_are_what_the_user_configured_and_only_successes_are_charged() {
    let quota = KeyQuotaLayer::new(|key| {
        let credits = if key.api_key() == Some("gold") { 5 } else { 2 };
        Ledger::new(credits, Window::month())
    });
    let hits = Arc::new(AtomicU64::new(0));
    let app = app(&quota, Arc::clone(&hits));

    // Failures cost nothing.
    for _ in 0..3 {
        let response = app
            .clone()
            .oneshot(request("/broken", Some("free")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-quota-remaining"], "2");
    }
    for left in ["1", "0"] {
        let response = app
            .clone()
            .oneshot(request("/search", Some("free")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-quota-remaining"], left);
        let ratelimit = response.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            ratelimit.starts_with(&format!("\"quota\";r={left};t=")),
            "{ratelimit}"
        );
    }
    let refused = app
        .clone()
        .oneshot(request("/search", Some("free")))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(refused.headers()["content-type"], "application/json");
    assert_eq!(refused.headers()["x-quota-remaining"], "0");
    assert!(refused.headers().contains_key("retry-after"));
    let body = json(refused).await;
    assert_eq!(body["error"], "quota_exhausted");
    assert!(body["retry_after"].as_u64().unwrap() > 0);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("the quota is used up; it resets in ")
            && (message.ends_with(" d") || message.ends_with(" h")),
        "{message}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "the refused request never ran"
    );

    // Another key is untouched; the key the user sees is the key they configured.
    let response = app
        .clone()
        .oneshot(request("/search", Some("gold")))
        .await
        .unwrap();
    assert_eq!(response.headers()["x-quota-remaining"], "4");
    assert_eq!(quota.ledger("free").snapshot().windows[0].spent, 2);
    assert_eq!(quota.ledger("gold").snapshot().windows[0].spent, 1);
    quota.forget("free");
    let again = app
        .clone()
        .oneshot(request("/search", Some("free")))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK, "forgotten: a fresh quota");
}

#[tokio::test]
async fn callers_without_a_key_are_keyed_by_their_own_address() {
    let quota = KeyQuotaLayer::new(|_| Ledger::new(1, Window::day()));
    let app = app(&quota, Arc::new(AtomicU64::new(0)));
    let status = |req: Request<Body>| {
        let app = app.clone();
        async move { app.oneshot(req).await.unwrap().status() }
    };
    assert_eq!(status(from("10.0.0.1", "/search")).await, StatusCode::OK);
    assert_eq!(
        status(from("10.0.0.1", "/search")).await,
        StatusCode::PAYMENT_REQUIRED
    );
    // Another client has its own quota: never one shared anonymous quota.
    assert_eq!(status(from("10.0.0.2", "/search")).await, StatusCode::OK);
    // IPv6 clients count by their /64.
    assert_eq!(
        status(from("2001:db8:1:2::1", "/search")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(from("2001:db8:1:2:ffff::9", "/search")).await,
        StatusCode::PAYMENT_REQUIRED
    );
    assert_eq!(
        status(from("2001:db8:1:3::1", "/search")).await,
        StatusCode::OK
    );
    // No key and no address: refused, with a clear reason, never charged to someone else.
    let unknown = app.clone().oneshot(request("/search", None)).await.unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(unknown).await["error"], "api_key_required");
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(quota.ledger(ip).snapshot().windows[0].spent, 1);
    quota.forget(ip);
    assert_eq!(status(from("10.0.0.1", "/search")).await, StatusCode::OK);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_is_counted_not_the_proxy() {
    let resolver = ClientIp::new().trust_proxy("10.0.0.0/8".parse::<Cidr>().unwrap());
    let quota = KeyQuotaLayer::builder(|_| Ledger::new(1, Window::day()))
        .anonymous(Anonymous::ClientIp(resolver))
        .build()
        .unwrap();
    let app = app(&quota, Arc::new(AtomicU64::new(0)));
    let via_proxy = |forwarded: &str| {
        let mut req = from("10.1.1.1", "/search");
        req.headers_mut()
            .insert("x-forwarded-for", forwarded.parse().unwrap());
        req
    };
    let ok = app.clone().oneshot(via_proxy("203.0.113.7")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // Another client behind the same proxy has its own quota.
    let other = app.clone().oneshot(via_proxy("203.0.113.8")).await.unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    // A client cannot pick a fresh quota by prepending an address.
    let spoofed = app
        .clone()
        .oneshot(via_proxy("6.6.6.6, 203.0.113.7"))
        .await
        .unwrap();
    assert_eq!(spoofed.status(), StatusCode::PAYMENT_REQUIRED);
    let client: IpAddr = "203.0.113.7".parse().unwrap();
    assert_eq!(quota.ledger(client).snapshot().windows[0].spent, 1);
}

#[tokio::test]
async fn anonymous_callers_can_be_refused_outright() {
    let quota = KeyQuotaLayer::builder(|_| Ledger::new(10, Window::day()))
        .anonymous(Anonymous::Reject)
        .build()
        .unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let app = app(&quota, Arc::clone(&hits));
    let refused = app
        .clone()
        .oneshot(from("10.0.0.1", "/search"))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let ok = app
        .clone()
        .oneshot(request("/search", Some("k")))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn charge_policies_and_refusals_are_configurable() {
    let only_200 = KeyQuotaLayer::builder(|_| Ledger::new(10, Window::day()))
        .charge(QuotaCharge::Only200)
        .build()
        .unwrap();
    let app1 = app(&only_200, Arc::new(AtomicU64::new(0)));
    app1.clone()
        .oneshot(request("/created", Some("k")))
        .await
        .unwrap();
    assert_eq!(only_200.ledger("k").snapshot().windows[0].spent, 0);
    app1.clone()
        .oneshot(request("/search", Some("k")))
        .await
        .unwrap();
    assert_eq!(only_200.ledger("k").snapshot().windows[0].spent, 1);

    let any_2xx = KeyQuotaLayer::new(|_| Ledger::new(10, Window::day()));
    let app2 = app(&any_2xx, Arc::new(AtomicU64::new(0)));
    app2.clone()
        .oneshot(request("/created", Some("k")))
        .await
        .unwrap();
    assert_eq!(any_2xx.ledger("k").snapshot().windows[0].spent, 1);

    // Custom: failures cost a credit too, successes three.
    let custom = KeyQuotaLayer::builder(|_| Ledger::new(4, Window::day()))
        .cost(tollway_budget::Cost::fixed(3))
        .charge(QuotaCharge::custom(|status, _, cost| {
            if status.is_success() { cost } else { 1 }
        }))
        .refusal_status(StatusCode::TOO_MANY_REQUESTS)
        .refusal_body("text/plain; charset=utf-8", |refusal| {
            format!("slow down: {}", refusal.message())
        })
        .build()
        .unwrap();
    let app3 = app(&custom, Arc::new(AtomicU64::new(0)));
    app3.clone()
        .oneshot(request("/broken", Some("k")))
        .await
        .unwrap();
    assert_eq!(custom.ledger("k").snapshot().windows[0].spent, 1);
    app3.clone()
        .oneshot(request("/search", Some("k")))
        .await
        .unwrap();
    assert_eq!(custom.ledger("k").snapshot().windows[0].spent, 4);
    let refused = app3
        .clone()
        .oneshot(request("/search", Some("k")))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        body.starts_with("slow down: the quota is used up; it resets in "),
        "{body}"
    );
    assert!(!body.contains('.'), "whole units, no float seconds: {body}");
}

#[test]
fn misconfiguration_is_a_builder_error() {
    let factory = |_: &QuotaKey| Ledger::new(1, Window::day());
    let err = KeyQuotaLayer::builder(factory)
        .key_header("bad header")
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "key_header");
    let err = KeyQuotaLayer::builder(factory)
        .refusal_status(StatusCode::OK)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "refusal_status");
    let err = KeyQuotaLayer::builder(factory)
        .policy_name("")
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "policy_name");
    let err = KeyQuotaLayer::builder(factory)
        .refusal_body("text/plain\n", |_| String::new())
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "refusal_body");
    assert_eq!(
        KeyQuotaLayer::builder(factory)
            .max_keys(0)
            .build()
            .unwrap_err()
            .setting(),
        "max_keys"
    );
    assert!(err.to_string().contains("refusal_body"), "{err}");
}

#[tokio::test]
async fn the_quota_appends_its_rate_limit_members_beside_the_inner_ones() {
    let quota = KeyQuotaLayer::builder(|_| {
        Ledger::builder()
            .limit(10, Window::day())
            .limit(100, Window::month())
            .build()
    })
    .build()
    .unwrap();
    // The inner service is itself rate limited and says so.
    let app = Router::new()
        .route(
            "/search",
            get(|| async {
                (
                    [
                        ("ratelimit-policy", "\"burst\";q=5;w=1, \"quota-day\";q=9"),
                        ("ratelimit", "\"burst\";r=4;t=1, \"quota-day\";r=8"),
                        ("retry-after", "30"),
                    ],
                    "found",
                )
            }),
        )
        .layer(quota.clone());
    let response = app.oneshot(request("/search", Some("k"))).await.unwrap();
    let headers = response.headers();
    let policies = RateLimitPolicy::from_headers(headers);
    let statuses = RateLimitStatus::from_headers(headers);
    let names: Vec<&str> = policies.iter().map(RateLimitPolicy::name).collect();
    assert_eq!(names, ["burst", "quota-day", "quota-day-2", "quota-month"]);
    let status_names: Vec<&str> = statuses.iter().map(RateLimitStatus::name).collect();
    assert_eq!(
        status_names, names,
        "every policy paired with its status, by name"
    );
    assert_eq!(statuses[1].remaining(), 8, "the inner member is untouched");
    assert_eq!(statuses[2].remaining(), 9);
    assert_eq!(statuses[3].remaining(), 99);
    assert_eq!(headers["retry-after"], "30");
}

#[tokio::test]
async fn floods_of_keys_stay_bounded_and_oversized_keys_are_refused() {
    let quota = KeyQuotaLayer::builder(|_| Ledger::new(1, Window::day()))
        .max_keys(100)
        .max_key_len(64)
        .build()
        .unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let app = app(&quota, Arc::clone(&hits));
    for i in 0..2_000 {
        let key = format!("attacker-{i}");
        let ok = app
            .clone()
            .oneshot(request("/search", Some(&key)))
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert!(quota.len() <= 100);
    }
    let huge = "k".repeat(65);
    let refused = app
        .clone()
        .oneshot(request("/search", Some(&huge)))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(refused).await["error"], "invalid_api_key");
    let mut binary = request("/search", None);
    binary.headers_mut().insert(
        "x-api-key",
        http::HeaderValue::from_bytes(b"k\xffey").unwrap(),
    );
    let refused = app.clone().oneshot(binary).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(hits.load(Ordering::SeqCst), 2_000);
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn critical_reserve_applies_per_key_over_a_real_socket() {
    let quota = KeyQuotaLayer::new(|_| {
        Ledger::builder()
            .limit(3, Window::day())
            .critical_reserve(1)
            .build()
    });
    let app = Router::new()
        .route("/search", get(|| async { "found" }))
        .layer(quota.clone())
        .layer(axum::middleware::from_fn(
            |mut req: Request<Body>, next: axum::middleware::Next| async move {
                if req.headers().contains_key("x-critical") {
                    req.extensions_mut()
                        .insert(tollway_budget::Priority::Critical);
                }
                next.run(req).await
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    let mut statuses = Vec::new();
    for (key, critical) in [
        ("k", false),
        ("k", false),
        ("k", false),
        ("k", true),
        ("k", true),
        ("", false),
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let extra = if critical { "x-critical: 1\r\n" } else { "" };
        let key = if key.is_empty() {
            String::new()
        } else {
            format!("x-api-key: {key}\r\n")
        };
        let raw =
            format!("GET /search HTTP/1.1\r\nhost: x\r\n{key}{extra}connection: close\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, raw.as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
            .await
            .unwrap();
        statuses.push(answer[9..12].to_owned());
    }
    // The last one has no key: keyed by its address (127.0.0.1), its own quota.
    assert_eq!(statuses, ["200", "200", "402", "200", "402", "200"]);
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(quota.ledger(local).snapshot().windows[0].spent, 1);
    server.abort();
}
