//! The upstream simulator as a server: a stand-in for the rate-limited, credit-billed followers
//! API, for demos and for clients in other languages.
//!
//! Run with `cargo run -p tollway-examples --bin upstream -- --rate 11 --credits 1000`.
//! It prints `upstream listening on http://ADDR` and serves until Ctrl-C, then prints its record
//! (the `/__stats` JSON) and exits.

#![allow(
    clippy::print_stdout,
    reason = "a command-line program: the address and the final record are its output"
)]

use std::time::Duration;

use axum::http::StatusCode;
use clap::Parser;
use tollway_examples::upstream::{
    DEFAULT_CREDITS, DEFAULT_KEY, DEFAULT_PAGE_SIZE, DEFAULT_RATE, Hostile, MAX_PAGE_SIZE,
    RateHeaders, Upstream, WindowKind,
};

/// A simulator of the rate-limited, credit-billed followers API.
#[derive(Debug, Parser)]
#[command(name = "upstream", version)]
struct Args {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// Followers requests admitted per key per second, as --window counts them.
    #[arg(long, default_value_t = DEFAULT_RATE, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,
    /// How the rate is counted: sliding (any one-second window), fixed (each wall-clock
    /// second), token-bucket or token-bucket:BURST (default burst: two seconds' worth), or
    /// leaky-bucket or leaky-bucket:TOLERANCE_MS (no burst, refused requests count too;
    /// default tolerance 20 ms).
    #[arg(long, default_value = "sliding", value_name = "KIND")]
    window: WindowKind,
    /// The rate-limit fields on followers answers: legacy (X-RateLimit-*), ietf
    /// (RateLimit-Policy and RateLimit), both, or none (a 429 carries only Retry-After).
    #[arg(long, default_value = "legacy", value_name = "FIELDS")]
    rate_headers: RateHeaders,
    /// Starting credit balance; each 200 from the followers endpoint costs one.
    #[arg(long, default_value_t = DEFAULT_CREDITS)]
    credits: u64,
    /// The accepted `x-access-key`.
    #[arg(long, default_value = DEFAULT_KEY)]
    key: String,
    /// Answer 500 to every Nth admitted followers request (0: never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    fault_every: u64,
    /// Start a 503 outage this many seconds after start (needs --outage-for).
    #[arg(long, value_name = "SECS", requires = "outage_for")]
    outage_at: Option<f64>,
    /// Length of the outage in seconds (needs --outage-at).
    #[arg(long, value_name = "SECS", requires = "outage_at")]
    outage_for: Option<f64>,
    /// Milliseconds to wait before answering each admitted followers request.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    latency_ms: u64,
    /// Followers requests each key may have in progress at once (default: no limit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: Option<u32>,
    /// Status for a request beyond --concurrency (429, or 402 as some search APIs do).
    #[arg(long, default_value_t = 429, value_name = "CODE")]
    concurrency_status: u16,
    /// Followers per page.
    #[arg(long, default_value_t = DEFAULT_PAGE_SIZE, value_parser = page_size)]
    page_size: usize,
    /// Let every all-digit user id exist (except 12345), not only the example list.
    #[arg(long)]
    all_numeric_users: bool,
    /// Misbehave as a broken or hostile API does: retry-after-overflow, long-retry-after,
    /// far-reset, year-9999, invalid-json, truncated-json, wrong-shape, cycle,
    /// trickle:MILLIS (one byte every MILLIS), oversized:BYTES.
    #[arg(long, value_name = "MODE")]
    hostile: Option<Hostile>,
    /// Misbehave on the first N answers the hostile mode can spoil, then behave (default: all).
    #[arg(long, value_name = "N", requires = "hostile")]
    hostile_count: Option<u64>,
}

fn page_size(value: &str) -> Result<usize, String> {
    let size: usize = value.parse().map_err(|e| format!("{e}"))?;
    if (1..=MAX_PAGE_SIZE).contains(&size) {
        Ok(size)
    } else {
        Err(format!("must be between 1 and {MAX_PAGE_SIZE}"))
    }
}

fn seconds(value: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|e| format!("--{flag}: {e}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let concurrency_status = StatusCode::from_u16(args.concurrency_status)
        .map_err(|e| format!("--concurrency-status: {e}"))?;
    let mut builder = Upstream::builder()
        .rate(args.rate)
        .window(args.window)
        .rate_headers(args.rate_headers)
        .credits(args.credits)
        .key(args.key)
        .fault_every(args.fault_every)
        .latency(Duration::from_millis(args.latency_ms))
        .concurrency_limit(args.concurrency)
        .concurrency_status(concurrency_status)
        .page_size(args.page_size)
        .all_numeric_users_exist(args.all_numeric_users);
    if let Some(mode) = args.hostile {
        builder = builder
            .hostile(mode)
            .hostile_count(args.hostile_count.unwrap_or(u64::MAX));
    }
    if let (Some(at), Some(length)) = (args.outage_at, args.outage_for) {
        builder = builder.outage(seconds(at, "outage-at")?, seconds(length, "outage-for")?);
    }
    let sim = builder.spawn_on(args.addr.as_str()).await?;
    println!("upstream listening on {}", sim.url());

    tokio::signal::ctrl_c().await?;
    let stats = sim.stats();
    sim.shutdown().await;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}
