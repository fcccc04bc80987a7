//! The server-side layer in front of a real axum server on 127.0.0.1:0, driven by hyper's
//! client over real sockets (real time, with wide margins).
#![cfg(feature = "server")]

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::routing::get;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tollway_limiter::Quota;
use tollway_limiter::server::{ConcurrencyLimit, HeaderOptions, Limit, PeerIp, ServerLimiterLayer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn serve(app: Router) -> Result<String, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Ok(format!("http://{addr}"))
}

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn get_with(
    client: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(Response<()>, String), BoxError> {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Empty::new())?).await?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok((
        Response::from_parts(parts, ()),
        String::from_utf8(bytes.to_vec())?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limit_over_real_sockets() -> Result<(), BoxError> {
    let five = NonZeroU32::new(5).unwrap();
    // Five at once, then one every 12 s: the test never waits long enough for a refill.
    let layer = ServerLimiterLayer::builder()
        .limit(Limit::new(
            "per-ip",
            PeerIp::new(),
            Quota::per_minute(five.get()).burst(five.get()),
        ))
        .headers(HeaderOptions::all())
        .build()?;
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(layer.clone());
    let url = format!("{}/hello", serve(app).await?);
    let client = client();
    for left in (0..5).rev() {
        let (response, body) = get_with(&client, &url, &[]).await?;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body, "hello");
        assert_eq!(
            response.headers()["x-ratelimit-remaining"],
            left.to_string()
        );
        assert_eq!(
            response.headers()["ratelimit-policy"],
            r#""per-ip";q=5;w=60"#
        );
    }
    // 127.0.0.1 is no trusted proxy: a forged X-Forwarded-For changes nothing.
    let (refused, body) = get_with(&client, &url, &[("x-forwarded-for", "1.2.3.4")]).await?;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"].to_str()?.parse()?;
    assert!((11..=12).contains(&retry_after), "{retry_after}");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    assert!(body.contains("quota-exceeded"), "{body}");
    assert_eq!(layer.tracked_keys(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_402_over_real_sockets() -> Result<(), BoxError> {
    let gate = Arc::new(Semaphore::new(0));
    let layer = ServerLimiterLayer::builder()
        .concurrency(ConcurrencyLimit::new(PeerIp::new(), 1).status(StatusCode::PAYMENT_REQUIRED))
        .build()?;
    let handler_gate = Arc::clone(&gate);
    let app = Router::new()
        .route(
            "/search",
            get(move || {
                let gate = Arc::clone(&handler_gate);
                async move {
                    gate.acquire().await.map(|p| p.forget()).ok();
                    "found"
                }
            }),
        )
        .layer(layer.clone());
    let url = format!("{}/search", serve(app).await?);
    let client = client();
    let first = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { get_with(&client, &url, &[]).await.map(|r| r.0.status()) })
    };
    // Wait until the first request is in the handler.
    while layer.in_flight_keys() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let (second, _) = get_with(&client, &url, &[]).await?;
    assert_eq!(second.status(), StatusCode::PAYMENT_REQUIRED);
    gate.add_permits(1);
    assert_eq!(first.await??, StatusCode::OK);
    gate.add_permits(1);
    let (third, body) = get_with(&client, &url, &[]).await?;
    assert_eq!((third.status(), body.as_str()), (StatusCode::OK, "found"));
    Ok(())
}
