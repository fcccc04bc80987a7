//! Two server-side layers that both speak the IETF rate-limit fields, stacked: the server
//! limiter and the budget's per-key quota. Every policy appears once in `RateLimit-Policy`,
//! paired by name with its status in `RateLimit`, whichever layer runs last, and the longer
//! `Retry-After` wins.
#![cfg(all(feature = "server", feature = "budget"))]

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;

use http::{HeaderName, Request, Response, StatusCode};
use tollway::budget::quota::KeyQuotaLayer;
use tollway::budget::{Ledger, Window};
use tollway::core::headers::{RateLimitPolicy, RateLimitStatus};
use tollway::limiter::Quota;
use tollway::limiter::server::{HeaderKey, HeaderOptions, Limit, ServerLimiterLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

fn request() -> Request<()> {
    let mut request = Request::get("/search")
        .header("x-api-key", "k1")
        .body(())
        .unwrap();
    request.extensions_mut().insert(axum::extract::ConnectInfo(
        "203.0.113.9:4000".parse::<SocketAddr>().unwrap(),
    ));
    request
        .extensions_mut()
        .insert("203.0.113.9:4000".parse::<SocketAddr>().unwrap());
    request
}

fn names(response: &Response<impl Sized>) -> (BTreeSet<String>, BTreeSet<String>) {
    let policies = RateLimitPolicy::from_headers(response.headers())
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    let statuses = RateLimitStatus::from_headers(response.headers())
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    (policies, statuses)
}

fn limiter() -> ServerLimiterLayer {
    ServerLimiterLayer::builder()
        .limit(Limit::new(
            "per-key",
            HeaderKey::new(HeaderName::from_static("x-api-key")),
            Quota::per_second(1).burst(2),
        ))
        .headers(HeaderOptions::all())
        .build()
        .unwrap()
}

fn quota() -> KeyQuotaLayer {
    KeyQuotaLayer::builder(|_key| Ledger::new(100, Window::month()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn both_layers_policies_appear_paired_whichever_runs_last() {
    let ok = service_fn(|_: Request<_>| async {
        Ok::<_, Infallible>(Response::new(axum::body::Body::empty()))
    });
    // Quota outside the limiter, then the limiter outside the quota.
    let mut quota_outside = quota().layer(limiter().layer(ok));
    let mut limiter_outside = limiter().layer(quota().layer(ok));
    for (order, response) in [
        (
            "quota outside",
            quota_outside
                .ready()
                .await
                .unwrap()
                .call(request())
                .await
                .unwrap(),
        ),
        (
            "limiter outside",
            limiter_outside
                .ready()
                .await
                .unwrap()
                .call(request())
                .await
                .unwrap(),
        ),
    ] {
        assert_eq!(response.status(), StatusCode::OK, "{order}");
        let (policies, statuses) = names(&response);
        assert!(policies.contains("per-key"), "{order}: {policies:?}");
        assert!(
            policies.iter().any(|p| p.starts_with("quota")),
            "{order}: {policies:?}"
        );
        assert_eq!(policies, statuses, "{order}: every policy has its status");
        assert_eq!(
            response
                .headers()
                .get_all("ratelimit-policy")
                .iter()
                .count()
                + response.headers().get_all("ratelimit").iter().count(),
            4,
            "{order}: each layer appended one line to each field"
        );
    }
}

#[tokio::test]
async fn a_refusal_keeps_the_other_layers_members_and_the_longer_retry_after() {
    let ok = service_fn(|_: Request<_>| async {
        Ok::<_, Infallible>(Response::new(axum::body::Body::empty()))
    });
    let mut service = quota().layer(limiter().layer(ok));
    for _ in 0..2 {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // The burst of 2 is spent: the limiter refuses; the quota (outside) still reports.
    let refused = service
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let (policies, statuses) = names(&refused);
    assert!(policies.contains("per-key"), "{policies:?}");
    assert_eq!(policies, statuses);
    let retry_after: Vec<_> = refused.headers().get_all("retry-after").iter().collect();
    assert_eq!(retry_after.len(), 1, "one Retry-After: {retry_after:?}");
    assert_eq!(retry_after[0], "1");
}
