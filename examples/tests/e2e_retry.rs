//! tollway-retry against the upstream simulator and a small axum server, over real sockets
//! with hyper's client: throttled and faulty answers are retried until every page arrives once,
//! a 402 is never retried, and a request body is replayed byte for byte. A few seconds of real
//! time in all.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollway_core::BoxError;
use tollway_examples::upstream::{DEFAULT_KEY, MISSING_SEED_USER_ID, SEED_USER_IDS, Upstream};
use tollway_retry::backoff::{Backoff, Jitter};
use tollway_retry::{Attempts, ReplayBody, RetryLayer, RetryPolicy};
use tower::{Layer, ServiceExt};

fn policy() -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(10)
        .backoff(
            Backoff::exponential(Duration::from_millis(20), Duration::from_millis(500))
                .with_jitter(Jitter::Full),
        )
        .max_retry_after(Duration::from_secs(5))
        .build()
        .expect("valid policy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_and_faulty_answers_are_retried_and_each_page_is_paid_once()
-> Result<(), BoxError> {
    let sim = Upstream::builder()
        .rate(8)
        .fault_every(4)
        .latency(Duration::from_millis(2))
        .spawn()
        .await?;
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>();
    let service = RetryLayer::new(policy()).layer(client);
    // Twelve distinct users that exist (the example list has a missing one and a duplicate).
    let users: Vec<&str> = SEED_USER_IDS
        .iter()
        .copied()
        .filter(|id| *id != MISSING_SEED_USER_ID)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(12)
        .collect();
    let tasks: Vec<_> = users
        .iter()
        .map(|user| {
            let service = service.clone();
            let url = format!("{}/v2/user/followers?user_id={user}", sim.url());
            tokio::spawn(async move {
                let request = Request::get(url)
                    .header("x-access-key", DEFAULT_KEY)
                    .body(Empty::<Bytes>::new())?;
                let response = service.oneshot(request).await?;
                let attempts = Attempts::of(&response);
                let status = response.status();
                response.into_body().collect().await?;
                Ok::<_, BoxError>((status, attempts))
            })
        })
        .collect();
    let mut total_attempts = 0;
    for task in tasks {
        let (status, attempts) = task.await??;
        assert_eq!(status, StatusCode::OK);
        total_attempts += u64::from(attempts);
    }
    let stats = sim.stats();
    sim.shutdown().await;
    assert_eq!(stats.status(200), users.len() as u64, "{stats:?}");
    assert_eq!(stats.credits_charged, users.len() as u64, "{stats:?}");
    assert!(
        stats.status(429) + stats.status(500) > 0,
        "nothing was retried: {stats:?}"
    );
    assert_eq!(
        total_attempts, stats.requests,
        "every send was counted: {stats:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_balance_is_never_retried() -> Result<(), BoxError> {
    let sim = Upstream::builder().rate(100).credits(2).spawn().await?;
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>();
    let service = RetryLayer::new(policy()).layer(client);
    let url = format!(
        "{}/v2/user/followers?user_id={}",
        sim.url(),
        SEED_USER_IDS[0]
    );
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let request = Request::get(&url)
            .header("x-access-key", DEFAULT_KEY)
            .body(Empty::<Bytes>::new())?;
        let response = service.clone().oneshot(request).await?;
        assert_eq!(Attempts::of(&response), 1);
        statuses.push(response.status().as_u16());
    }
    let stats = sim.stats();
    sim.shutdown().await;
    assert_eq!(statuses, [200, 200, 402, 402]);
    assert_eq!(stats.requests, 4, "{stats:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_is_replayed_byte_for_byte() -> Result<(), BoxError> {
    // Fails the first PUT with 503, then echoes the body.
    let calls = Arc::new(AtomicU32::new(0));
    let router = axum::Router::new()
        .route(
            "/items/7",
            axum::routing::put(
                |State(calls): State<Arc<AtomicU32>>, body: Bytes| async move {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        (StatusCode::SERVICE_UNAVAILABLE, Bytes::new())
                    } else {
                        (StatusCode::OK, body)
                    }
                },
            ),
        )
        .with_state(Arc::clone(&calls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    let service = RetryLayer::new(policy()).layer(client);
    let payload = Bytes::from(vec![b'x'; 10_000]);
    let request =
        Request::put(format!("http://{addr}/items/7")).body(Full::new(payload.clone()))?;
    let response = service.oneshot(request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
    let echoed = response.into_body().collect().await?.to_bytes();
    assert_eq!(echoed, payload);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    server.abort();
    Ok(())
}
