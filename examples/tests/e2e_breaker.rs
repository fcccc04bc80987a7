//! End-to-end: tollway-breaker in front of a real HTTP client talking to the upstream simulator
//! over a socket, through an outage. The simulator, which runs no tollway code, counts what
//! reached it.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollway_breaker::{BreakerConfig, BreakerLayer, OpenDuration, State};
use tollway_core::CircuitOpen;
use tollway_examples::upstream::{DEFAULT_KEY, SEED_USER_IDS, Upstream};
use tower::{Layer, Service, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_costs_three_requests_then_one_probe_closes() {
    // The upstream is down (503 + Retry-After) for its first 1.5 s.
    let sim = Upstream::builder()
        .outage(Duration::ZERO, Duration::from_millis(1_500))
        .spawn()
        .await
        .unwrap();
    // A short configured open duration: the upstream's longer Retry-After lengthens it (a hint
    // never shortens it).
    let config = BreakerConfig::builder()
        .consecutive_failures(3)
        .open_duration(OpenDuration::fixed(Duration::from_secs(1)))
        .build()
        .unwrap();
    let layer = BreakerLayer::new(config);
    let handle = layer.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut service = layer.layer(client);
    let url = format!(
        "{}/v2/user/followers?user_id={}&page_id=",
        sim.url(),
        SEED_USER_IDS[0]
    );

    let started = Instant::now();
    let (mut rejected, mut saw_503, mut first_ok) = (0, 0, None);
    while started.elapsed() < Duration::from_secs(6) {
        let request = Request::get(&url)
            .header("x-access-key", DEFAULT_KEY)
            .body(Empty::new())
            .unwrap();
        match service.ready().await.unwrap().call(request).await {
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => saw_503 += 1,
            Ok(response) => {
                assert_eq!(response.status(), StatusCode::OK);
                first_ok = Some(started.elapsed());
                break;
            }
            Err(error) => {
                let open = error
                    .downcast_ref::<CircuitOpen>()
                    .expect("only rejections");
                assert!(open.retry_after() <= Duration::from_secs(2));
                rejected += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let first_ok = first_ok.expect("the breaker closed after the outage");
    // Three failures tripped it; the upstream's Retry-After (whole seconds, rounded up) kept it
    // open past the end of the outage, so the first probe succeeded.
    assert_eq!(saw_503, 3);
    assert!(rejected > 10, "callers failed fast meanwhile: {rejected}");
    assert!(first_ok >= Duration::from_millis(1_400), "{first_ok:?}");
    assert_eq!(handle.state(), State::Closed);
    let stats = sim.stats();
    assert_eq!(stats.by_status.get("503"), Some(&3));
    assert_eq!(stats.by_status.get("200"), Some(&1));
}
