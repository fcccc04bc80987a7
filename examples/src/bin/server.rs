//! An axum API protected by tollway-limiter's server side: a per-IP limit and, for requests
//! that carry an `x-api-key`, a per-key hourly quota, both checked all-or-nothing; 429s with
//! `Retry-After`, IETF `RateLimit-Policy` / `RateLimit` and legacy `X-RateLimit-*` headers.
//!
//! Run with `cargo run -p tollway-examples --bin server -- --rate 5 --burst 10`, then
//! `curl -i http://127.0.0.1:3000/hello` (add `-H 'x-api-key: k1'` for the per-key quota).
//! It prints `server listening on http://ADDR` and serves until Ctrl-C.
//!
//! With `--redis URL[,URL...]` (one Redis server, or a Redis Cluster's nodes) the limits live in
//! Redis: every instance started with the same URL (and `--redis-prefix`) shares one limit per
//! client, as the instances of an API behind a load balancer must. While Redis is unavailable
//! the per-key quota refuses with 503 (fail closed) and the per-IP limit falls back to a local
//! limit at the same rate (fail open).

#![allow(
    clippy::print_stdout,
    reason = "a command-line program: the address is its output"
)]

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};

use axum::Router;
use axum::routing::get;
use clap::Parser;
use http::HeaderName;
use tollway_examples::pipeline::RedisConnection;
use tollway_limiter::Quota;
use tollway_limiter::server::{Cidr, HeaderKey, HeaderOptions, Limit, PeerIp, ServerLimiterLayer};

/// An example API with per-IP and per-key rate limits.
#[derive(Debug, Parser)]
#[command(name = "server", version)]
struct Args {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Requests per second per client IP, at the steady rate.
    #[arg(long, default_value_t = NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN))]
    rate: NonZeroU32,
    /// Requests a client IP may send at once.
    #[arg(long, default_value_t = NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN))]
    burst: NonZeroU32,
    /// Requests per hour per API key (`x-api-key`), all of which may go at once.
    #[arg(long, default_value_t = NonZeroU32::new(1_000).unwrap_or(NonZeroU32::MIN))]
    key_quota: NonZeroU32,
    /// A proxy whose `X-Forwarded-For` is trusted (CIDR, repeatable).
    #[arg(long, value_name = "CIDR")]
    trust_proxy: Vec<Cidr>,
    /// Most client keys remembered per limit.
    #[arg(long, default_value_t = NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN))]
    max_keys: NonZeroUsize,
    /// Keep the limits in Redis (one URL, or a Redis Cluster's node URLs, comma-separated),
    /// shared by every instance started with the same URL and prefix.
    #[arg(long, value_name = "URL[,URL...]")]
    redis: Option<String>,
    /// The key prefix of the limits in Redis.
    #[arg(long, default_value = "tollway-server")]
    redis_prefix: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let peer = args
        .trust_proxy
        .iter()
        .fold(PeerIp::new(), |peer, cidr| peer.trust_proxy(*cidr));
    let per_ip = Quota::per_second(args.rate.get()).burst(args.burst.get());
    let per_key = Quota::per_hour(args.key_quota.get()).burst(args.key_quota.get());
    let builder = ServerLimiterLayer::builder()
        .limit(Limit::new("per-ip", peer, per_ip).fail_open_to_local(per_ip))
        .limit(Limit::new(
            "per-key",
            HeaderKey::new(HeaderName::from_static("x-api-key")),
            per_key,
        ))
        .max_keys(args.max_keys)
        .headers(HeaderOptions::all());
    let builder = match &args.redis {
        Some(urls) => {
            let connection = RedisConnection::connect(urls).await?;
            builder.redis(connection, &args.redis_prefix)
        }
        None => builder,
    };
    let limits = builder.build()?;
    let app = Router::new()
        .route("/hello", get(|| async { "hello\n" }))
        .layer(limits);

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("server listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
