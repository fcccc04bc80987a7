//! tollway-limiter against the upstream simulator over real sockets: a client at the
//! simulator's exact rate gets no 429, and one configured at three times the rate, with
//! adaptation, converges after a few. Each test takes about three seconds of real time.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollway_core::BoxError;
use tollway_examples::upstream::{DEFAULT_KEY, Stats, Upstream};
use tollway_limiter::{Adaptive, AdaptiveLimiterLayer, Aimd, Quota, RateLimiter};
use tower::{Layer, Service, ServiceExt};

const RATE: u32 = 20;
const USER: &str = "1553030189";

/// Sends the first page of followers again and again for `run`, one request at a time,
/// through a limiter; returns the simulator's record.
async fn crawl(limiter: RateLimiter, run: Duration) -> Result<Stats, BoxError> {
    let sim = Upstream::builder()
        .rate(RATE)
        .latency(Duration::from_millis(5))
        .spawn()
        .await?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut service = AdaptiveLimiterLayer::new(limiter).layer(client);
    let url = format!("{}/v2/user/followers?user_id={USER}", sim.url());
    let start = Instant::now();
    while start.elapsed() < run {
        let request = axum::http::Request::get(&url)
            .header("x-access-key", DEFAULT_KEY)
            .body(Empty::new())?;
        let response = service.ready().await?.call(request).await?;
        response.into_body().collect().await?;
    }
    let stats = sim.stats();
    sim.shutdown().await;
    Ok(stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_exact_rate_no_request_is_refused() -> Result<(), BoxError> {
    let limiter = RateLimiter::new(Quota::per_second(RATE).burst(1));
    let stats = crawl(limiter, Duration::from_millis(2_500)).await?;
    assert_eq!(stats.status(429), 0, "{stats:?}");
    // 2.5 s at 20/s, first request at once: 50 or 51, less a little for timer ticks.
    let ok = stats.status(200);
    assert!((45..=51).contains(&ok), "{ok} admitted: {stats:?}");
    assert!(stats.max_in_any_1s_window <= u64::from(RATE));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_three_times_the_rate_it_converges_after_a_few_429s() -> Result<(), BoxError> {
    let limiter = RateLimiter::builder(Quota::per_second(3 * RATE).burst(1))
        .adaptive(Adaptive::new().aimd(Aimd::new()))
        .build();
    let stats = crawl(limiter, Duration::from_secs(3)).await?;
    // Without adaptation: 20 admitted a second and two in three requests refused. With it, the
    // simulator's `X-RateLimit-Remaining: 0` + `X-RateLimit-Reset` pause the limiter before
    // a 429 is even drawn; a 429 (Retry-After) pauses it and halves the rate.
    let refused = stats.status(429);
    assert!(refused <= 3, "{refused} refused: {stats:?}");
    // Three seconds at the server's 20/s hold at most 60; the pauses cost a little.
    assert!(stats.status(200) >= 40, "{stats:?}");
    assert!(stats.max_in_any_1s_window <= u64::from(RATE));
    Ok(())
}
