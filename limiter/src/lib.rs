//! Rate limiting for tower clients: lock-free GCRA buckets, fair waiting, and a limiter that
//! follows the upstream's 429s and rate-limit headers.
//!
//! - [`Quota`]: a rate and a burst, built from non-zero numbers (see its docs for what the
//!   burst means: it is why "`per_minute(n)` allowed more than n" in other crates).
//! - [`RateLimiter`]: one or more quotas admitted all-or-nothing (11/s **and** 1,000,000/day),
//!   kept in one atomic word per quota. [`check`](RateLimiter::check),
//!   [`check_n`](RateLimiter::check_n), [`peek`](RateLimiter::peek) (consumes nothing),
//!   [`refund`](RateLimiter::refund), [`set_rate`](RateLimiter::set_rate) /
//!   [`set_quota`](RateLimiter::set_quota) at runtime keeping the debt, and
//!   [`acquire`](RateLimiter::acquire) that waits first come, first served, cancel-safe, with
//!   optional bounds on the wait and on the queue.
//! - [`Limiter`] / [`LimiterLayer`]: the tower middleware. `poll_ready` waits for a permit;
//!   responses are fed back so that a 429 with `Retry-After` (or an exhausted
//!   `X-RateLimit-Remaining` / IETF `RateLimit` window) pauses every caller ([`Adaptive`]),
//!   and optionally lowers the rate until successes bring it back ([`Aimd`]).
//! - [`KeyedRateLimiter`] / [`KeyedLimiterLayer`]: one limiter per host or per a key you
//!   compute, with a bound on the number of keys.
//! - Time comes through [`tollway_core::Clock`] ([`LimiterClock`]); the default
//!   [`QuantaClock`] reads the CPU's counter, and tests use `FakeClock` or tokio's paused clock
//!   through `TokioClock`.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use http::{Request, Response};
//! use tollway_core::{RateLimited, TokioClock};
//! use tollway_limiter::{Adaptive, LimiterLayer, Quota, RateLimiter};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tollway_core::BoxError> {
//! // The API of seed 000: about 11 requests per second and a million a day.
//! let limiter = RateLimiter::builder(Quota::per_second(NonZeroU32::new(11).unwrap()))
//!     .quota(Quota::per_day(NonZeroU32::new(1_000_000).unwrap()))
//!     .max_wait(Duration::from_secs(30))
//!     .adaptive(Adaptive::new())
//!     .clock(TokioClock) // follows tokio's paused clock in this example
//!     .build();
//!
//! let api = service_fn(|_req: Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(()))
//! });
//! let service = ServiceBuilder::new()
//!     // Concurrency goes outside, so the rate permit is taken right before sending.
//!     .concurrency_limit(4)
//!     .layer(LimiterLayer::from_limiter(limiter.clone()))
//!     .service(api);
//!
//! let start = tokio::time::Instant::now();
//! for _ in 0..12 {
//!     service.clone().oneshot(Request::new(())).await?;
//! }
//! // Burst 1: twelve requests take eleven intervals of 1/11 s.
//! assert!(start.elapsed() >= Duration::from_millis(999));
//!
//! // The server's own rate, read at runtime, applies at once and keeps the debt.
//! limiter.set_rate(NonZeroU32::new(5).unwrap());
//! assert_eq!(limiter.quotas()[0], Quota::per_second(NonZeroU32::new(5).unwrap()));
//! # let _: Option<RateLimited> = None;
//! # Ok(())
//! # }
//! ```
//!
//! # Stacking with concurrency limits
//!
//! Concurrency is tower's job: put `tower::limit::ConcurrencyLimitLayer` (or
//! `GlobalConcurrencyLimitLayer`, whose semaphore is shared by clones) **outside** the
//! limiter, as above. The limiter polls its inner service ready before it takes a rate permit,
//! but a concurrency slot taken after the rate permit would delay the send past the permit's
//! time, and two requests could then reach the server closer together than the rate allows.
//!
//! # Waiting, fairness and cancellation
//!
//! Waiters queue in arrival order; only the first waits on tokio's timer, until exactly the
//! moment its permit is due, then wakes the next. Nothing is taken from the bucket before a
//! waiter's turn, so a dropped waiter (a cancelled future, a dropped service) leaves no debt.
//! A permit taken by `poll_ready` and never spent by `call` is refunded when the service is
//! dropped. `call` without `poll_ready` takes a free permit or fails with
//! [`RateLimited`](tollway_core::RateLimited); it never panics.
//!
//! # Server side
//!
//! With the `server` feature, [`server`] protects an axum API: per-key limits (peer IP behind
//! trusted proxies, API key, global, closure), several quotas checked all-or-nothing, 429 with
//! `Retry-After` rounded up and IETF / legacy rate-limit headers, bounded key memory, per-key
//! concurrency, priority admission and shadow mode. It is built on the same
//! [`KeyedRateLimiter`] and GCRA as the client side.
//!
//! # Fleet mode (Redis)
//!
//! With the `redis` feature, [`RateLimiterBuilder::redis`] builds the same limiter with its
//! quotas kept in Redis and shared by every process that uses the same key prefix: one atomic
//! GCRA script per decision on Redis's clock, fair local waiting on the retry-after it returns,
//! and an explicit choice when Redis fails (closed with `StoreUnavailable` by default, or open
//! to a local quota). See the `fleet` module.
//!
//! # Metrics
//!
//! With the `metrics` feature: counters `tollway_limiter_admitted_total`, `tollway_limiter_waited_total`,
//! `tollway_limiter_rejected_total`, `tollway_limiter_pauses_total` and the histogram
//! `tollway_limiter_wait_seconds`.

mod adaptive;
mod adaptive_service;
mod builder;
mod clock;
mod error;
#[cfg(feature = "redis")]
#[path = "redis/mod.rs"]
pub mod fleet;
mod future;
mod gcra;
mod keyed;
mod keyed_service;
mod layer;
mod limiter;
#[cfg(all(test, loom))]
mod loom_tests;
mod metrics;
mod queue;
mod quota;
#[cfg(feature = "server")]
pub mod server;
mod service;
mod sync;

pub use adaptive::{Adaptive, Aimd};
pub use adaptive_service::AdaptiveLimiter;
pub use builder::RateLimiterBuilder;
pub use clock::{LimiterClock, QuantaClock};
pub use error::{ExceedsBurst, NoSuchQuota};
pub use future::{AdaptiveResponseFuture, ResponseFuture};
pub use keyed::KeyedRateLimiter;
pub use keyed_service::{ByHost, KeyFor, KeyedLimiter, KeyedLimiterLayer, KeyedResponseFuture};
pub use layer::{AdaptiveLimiterLayer, LimiterLayer};
pub use limiter::RateLimiter;
pub use queue::Acquire;
pub use quota::{InvalidQuota, Quota, Rate};
pub use service::Limiter;
/// The errors users match on, in one place: a refusal is core's [`RateLimited`]; a fleet
/// limiter that fails closed returns core's [`StoreUnavailable`]; every service returns a
/// [`BoxError`] to `downcast_ref` them from.
pub use tollway_core::{BoxError, RateLimited, StoreUnavailable};

/// The `redis` client fleet mode speaks, re-exported so that callers build their
/// [`ConnectionManager`](redis::aio::ConnectionManager) from the very same version.
#[cfg(feature = "redis")]
pub use redis;
