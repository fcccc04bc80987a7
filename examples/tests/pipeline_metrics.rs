//! `--metrics`: the Prometheus endpoint serves every layer's metrics, histograms as buckets.
//! Its own test binary: it installs the process's global metrics recorder.

use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollway_examples::pipeline::{self, Config};
use tollway_examples::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layer_reports_to_the_prometheus_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = pipeline::serve_metrics(&format!("127.0.0.1:{port}")).unwrap();

    let sim = Upstream::builder()
        .rate(50)
        .fault_every(4)
        .latency(Duration::from_millis(5))
        .spawn()
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tollway-pipeline-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::new(sim.url(), &dir);
    config.users = vec!["47857986514".into(), "57606704380".into()];
    config.rate = NonZeroU32::new(50).unwrap();
    config.budget = Some(100);
    let report = pipeline::crawl(config).await.unwrap();
    assert_eq!(report.users_completed, 2);

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}/metrics").parse().unwrap();
    let response = client.get(uri).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    for name in [
        "tollway_limiter_admitted_total",
        "tollway_limiter_wait_seconds_bucket",
        "tollway_retry_attempts_total",
        "tollway_retry_retries_total",
        "tollway_breaker_calls_total",
        "tollway_budget_",
        "tollway_cache_misses_total",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    assert!(
        !text.contains("quantile="),
        "histograms are buckets, not summaries\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
