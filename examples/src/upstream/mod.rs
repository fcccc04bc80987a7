//! A simulator of the rate-limited, credit-billed followers API that tollway is built against,
//! and the judge of every end-to-end test and demo.
//!
//! It answers as that API does:
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /sys/balance` | `{"rate": R, "amount": credits_left}`; free and not rate limited |
//! | `GET /v2/user/followers?user_id=&page_id=` | `{"response": {"users": [{"pk", "username"}..]}, "next_page_id": ".." \| null}` |
//! | `GET /__stats` | the simulator's record, [`Stats`]; needs no key |
//!
//! The API endpoints answer, in this order of checks:
//!
//! - **503** with `Retry-After` during a configured [outage](UpstreamBuilder::outage);
//! - **401** `{"detail": ..}` without the right `x-access-key` (default [`DEFAULT_KEY`]);
//! - **429** (followers only) when the key's rate limit turns the request away. By default that
//!   is an exact sliding window over admission times, so no one-second window, however placed,
//!   holds more than R; [`WindowKind`] selects the other kinds real limiters use (a fixed window
//!   on the wall-clock second, a token bucket with a burst, a leaky bucket with no burst that
//!   counts refusals too). It carries `Retry-After` (whole seconds until a request would be let
//!   in, rounded up, at least 1). Every answer past the key check carries the rate-limit fields
//!   [`RateHeaders`] selects: `X-RateLimit-Limit`, `-Remaining` and `-Reset` (seconds, rounded
//!   up; a unix time for a fixed window) by default, or the IETF `RateLimit-Policy` and
//!   `RateLimit`, both, or none. The rate can change at runtime, as a plan does
//!   ([`UpstreamHandle::set_rate`]);
//! - the [concurrency status](UpstreamBuilder::concurrency_status) beyond the optional
//!   per-key [concurrency limit](UpstreamBuilder::concurrency_limit);
//! - then, after the optional [latency](UpstreamBuilder::latency): **500** for every Nth
//!   admitted request ([`fault_every`](UpstreamBuilder::fault_every)), **400** without a
//!   `user_id` or with a `page_id` the server never handed out, **404**
//!   `{"detail": "User not found"}` for an unknown user (`12345`), **402**
//!   `{"detail": "Insufficient balance"}` when no credit is left, and otherwise **200**, which
//!   costs one credit. Nothing else costs anything.
//!
//! A [hostile mode](UpstreamBuilder::hostile) makes it answer as a broken or hostile API does
//! ([`Hostile`]: hints no clock can add, waits with no end, broken or endless bodies, cursors that
//! loop), for testing that a client survives.
//!
//! Each known user has from 1 to 5 pages of followers ([`pages_for`]), derived from the user id,
//! so tests know what a full crawl returns. The simulator uses no tollway code: its record is
//! independent of the client it judges.
//!
//! # Example
//!
//! ```
//! use axum::body::Bytes;
//! use http_body_util::{BodyExt, Empty};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tollway_examples::upstream::{DEFAULT_KEY, Upstream};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = Upstream::builder().rate(11).credits(100).spawn().await?;
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
//! let request = axum::http::Request::get(format!("{}/sys/balance", sim.url()))
//!     .header("x-access-key", DEFAULT_KEY)
//!     .body(Empty::new())?;
//! let response = client.request(request).await?;
//! assert_eq!(response.status(), 200);
//! let body = response.into_body().collect().await?.to_bytes();
//! let balance: serde_json::Value = serde_json::from_slice(&body)?;
//! assert_eq!(balance, serde_json::json!({ "rate": 11, "amount": 100 }));
//!
//! let stats = sim.stats();
//! assert_eq!(stats.requests, 1);
//! assert_eq!(stats.status(200), 1);
//! assert_eq!(stats.credits_charged, 0);
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! A customised simulator: the free-trial plan (1 request per second, 100 credits), a fault
//! every 10th request, a one-second outage two seconds in, and a slow server that takes one
//! request at a time and answers a second one with 402, as some search APIs do.
//!
//! ```
//! use std::time::Duration;
//! use axum::http::StatusCode;
//! use tollway_examples::upstream::Upstream;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let sim = Upstream::builder()
//!     .rate(1)
//!     .credits(100)
//!     .fault_every(10)
//!     .outage(Duration::from_secs(2), Duration::from_secs(1))
//!     .latency(Duration::from_millis(20))
//!     .concurrency_limit(Some(1))
//!     .concurrency_status(StatusCode::PAYMENT_REQUIRED)
//!     .spawn()
//!     .await?;
//! assert!(sim.url().starts_with("http://127.0.0.1:"));
//! # Ok(())
//! # }
//! ```

mod config;
mod data;
mod handlers;
mod hostile;
mod limits;
mod server;
mod state;
mod stats;
mod window;

pub use config::{
    DEFAULT_CREDITS, DEFAULT_KEY, DEFAULT_PAGE_SIZE, DEFAULT_RATE, MAX_PAGE_SIZE, RateHeaders,
    UpstreamBuilder,
};
pub use data::{MAX_PAGES, MISSING_SEED_USER_ID, SEED_USER_IDS, follower_count, pages_for};
pub use hostile::{
    DAY_RETRY_AFTER, FAR_RESET, Hostile, MAX_OVERSIZED, OVERFLOWING_RETRY_AFTER, YEAR_9999,
};
pub use limits::{ParseWindowKindError, WindowKind};
pub use server::{Upstream, UpstreamHandle};
pub use stats::Stats;
