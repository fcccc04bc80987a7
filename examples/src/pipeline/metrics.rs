//! `--metrics ADDR`: every tollway layer's metrics on a Prometheus endpoint.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

/// Histogram buckets in seconds (waits for a permit, request durations): without buckets the
/// exporter would render histograms as summaries.
pub const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder and serves it on `http://ADDR/metrics` (any path, in
/// fact) from a task on the current tokio runtime. Call it before building the stack: some
/// layers register their metrics when they are made.
///
/// # Errors
///
/// `addr` does not parse, the port cannot be bound, or a recorder is already installed.
pub fn serve_metrics(addr: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("--metrics {addr}: expected HOST:PORT ({e})"))?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(BUCKETS)
        .map_err(|e| format!("--metrics: {e}"))?
        .install()
        .map_err(|e| format!("--metrics {addr}: {e}"))?;
    Ok(addr)
}
