//! The tollway client stack on a plain hyper-util client: crawl one user's follower pages,
//! then ask for the first page again (a cache hit: no request, no credit).
//!
//! Run with `cargo run -p tollway-examples --bin hyper_client` (against an in-process
//! simulator), or add `-- --upstream http://HOST:PORT --key KEY --rate N` for another API.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line example: what it fetched is its output"
)]

use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollway::ClientStackLayer;
use tollway::breaker::{BreakerConfig, BreakerLayer};
use tollway::budget::{BudgetLayer, Ledger, Window};
use tollway::cache::{CacheLayer, CacheStatus};
use tollway::core::BoxError;
use tollway::limiter::{Adaptive, Quota, RateLimiter};
use tollway::retry::{Attempts, ReplayBody, RetryPolicy};
use tollway_examples::pipeline::cli::embedded_simulator;
use tollway_examples::upstream::DEFAULT_KEY;
use tower::{Layer, ServiceExt};

/// Crawls one user's follower pages through the tollway stack on a hyper-util client.
#[derive(Debug, Parser)]
#[command(name = "hyper_client")]
struct Args {
    /// Base URL of the API (default: an in-process simulator).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Sent as x-access-key (default: the simulator's key).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// The user whose followers to fetch.
    #[arg(long, default_value = "47857986514")]
    user: String,
    /// Requests per second the account may send.
    #[arg(long, default_value_t = NonZeroU32::new(11).unwrap_or(NonZeroU32::MIN))]
    rate: NonZeroU32,
}

#[tokio::main]
async fn main() -> ExitCode {
    match crawl(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hyper_client: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn crawl(args: Args) -> Result<(), BoxError> {
    let simulator = match &args.upstream {
        Some(_) => None,
        None => Some(embedded_simulator().spawn().await?),
    };
    let base = match (&args.upstream, &simulator) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (_, Some(sim)) => sim.url(),
        (None, None) => return Err("no upstream".into()),
    };
    let key = args.key.clone().unwrap_or_else(|| DEFAULT_KEY.to_owned());
    let cache_dir =
        std::env::temp_dir().join(format!("tollway-hyper-client-{}", std::process::id()));

    // The stack: cache → retry → breaker → budget → limiter, in front of hyper-util's client.
    // The retry layer sends `ReplayBody`s inward, so the client is built for them.
    let limiter = RateLimiter::builder(Quota::per_second(args.rate.get()).burst(1))
        .adaptive(Adaptive::new())
        .build();
    let layer = ClientStackLayer::builder(limiter)
        .retry(RetryPolicy::default())
        .breaker(BreakerLayer::new(BreakerConfig::default()))
        .budget(BudgetLayer::new(Ledger::new(100, Window::day())))
        .cache(
            CacheLayer::builder(&cache_dir)
                .ttl(Duration::from_secs(600))
                .build()?,
        )
        .build();
    let hyper = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    let client = tower::timeout::Timeout::new(hyper, Duration::from_secs(20));
    let stack = layer.layer(client).boxed();

    let page = |page_id: &str| {
        Request::get(format!(
            "{base}/v2/user/followers?user_id={}&page_id={page_id}",
            args.user
        ))
        .header("x-access-key", &key)
        .body(Full::new(Bytes::new()))
    };
    let fetch = |page_id: String| {
        let request = page(&page_id);
        let stack = stack.clone();
        async move {
            let response = stack.oneshot(request?).await?;
            let status = response.status();
            let cache = CacheStatus::from_headers(response.headers());
            // The retry layer's count; a cache hit sent nothing, so it carries none.
            let attempts = response
                .extensions()
                .get::<Attempts>()
                .map_or_else(|| "-".to_owned(), |a| a.0.to_string());
            let body = response.into_body().collect().await?.to_bytes();
            let shown = if page_id.is_empty() {
                "(first)"
            } else {
                &page_id
            };
            let cache = cache.map_or("-", CacheStatus::as_str);
            println!("page {shown:<12} {status}  cache: {cache:<5}  attempts: {attempts}");
            if !status.is_success() {
                return Err(format!("{status}: {}", String::from_utf8_lossy(&body)).into());
            }
            let json: serde_json::Value = serde_json::from_slice(&body)?;
            let next = json["next_page_id"]
                .as_str()
                .filter(|next| !next.is_empty());
            Ok::<_, BoxError>(next.map(str::to_owned))
        }
    };
    let mut next = Some(String::new());
    while let Some(page_id) = next {
        next = fetch(page_id).await?;
    }
    // The first page once more: the cache answers, nothing is sent or charged.
    fetch(String::new()).await?;

    let ledger = layer.ledger().ok_or("the stack has a budget")?.snapshot();
    println!(
        "credits spent: {}  breaker: {:?}",
        ledger.windows[0].spent,
        layer.breaker().ok_or("the stack has a breaker")?.state()
    );
    let _ = std::fs::remove_dir_all(&cache_dir);
    Ok(())
}
