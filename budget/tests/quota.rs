//! The server side: per-key quotas on an axum router.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use http_body_util::BodyExt;
use tollway_budget::{Ledger, Priority, QuotaLayer, Window};
use tower::ServiceExt;

fn app(quota: &QuotaLayer, hits: Arc<AtomicU64>) -> Router {
    Router::new()
        .route(
            "/search",
            get(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { "found" }
            }),
        )
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

#[tokio::test]
async fn keys_have_separate_quotas_and_only_successes_are_charged() {
    let quota = QuotaLayer::new(|key| {
        let credits = if key == "key:gold" { 5 } else { 2 };
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
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"], "quota_exhausted");
    assert!(json["retry_after"].as_u64().unwrap() > 0);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "the refused request never ran"
    );

    // Another key is untouched.
    let response = app
        .clone()
        .oneshot(request("/search", Some("gold")))
        .await
        .unwrap();
    assert_eq!(response.headers()["x-quota-remaining"], "4");
    assert_eq!(quota.ledger("key:free").snapshot().windows[0].spent, 2);
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn requests_without_a_key_fall_back_to_the_client_address() {
    let quota = QuotaLayer::new(|_| Ledger::new(1, Window::day())).key_by_client_address();
    let app = app(&quota, Arc::new(AtomicU64::new(0)));
    let from = |ip: [u8; 4]| {
        let mut req = request("/search", None);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                ip, 4000,
            ))));
        req
    };
    assert_eq!(
        app.clone()
            .oneshot(from([10, 0, 0, 1]))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.clone()
            .oneshot(from([10, 0, 0, 1]))
            .await
            .unwrap()
            .status(),
        StatusCode::PAYMENT_REQUIRED
    );
    assert_eq!(
        app.clone()
            .oneshot(from([10, 0, 0, 2]))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // No key and no address: the shared anonymous quota.
    assert_eq!(
        app.clone()
            .oneshot(request("/search", None))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(quota.ledger("anonymous").snapshot().windows[0].spent, 1);
    quota.forget("ip:10.0.0.1");
    assert_eq!(
        app.clone()
            .oneshot(from([10, 0, 0, 1]))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn critical_reserve_applies_per_key_over_a_real_socket() {
    let quota = QuotaLayer::new(|_| {
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
                    req.extensions_mut().insert(Priority::Critical);
                }
                next.run(req).await
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut statuses = Vec::new();
    for critical in [false, false, false, true, true] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let extra = if critical { "x-critical: 1\r\n" } else { "" };
        let raw = format!(
            "GET /search HTTP/1.1\r\nhost: x\r\nx-api-key: k\r\n{extra}connection: close\r\n\r\n"
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, raw.as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
            .await
            .unwrap();
        statuses.push(answer[9..12].to_owned());
    }
    assert_eq!(statuses, ["200", "200", "402", "200", "402"]);
    server.abort();
}
