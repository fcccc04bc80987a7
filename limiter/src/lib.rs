//! Rate limiting for tower services: lock-free GCRA buckets, fair waiting, and a limiter that
//! follows the upstream's 429s and rate-limit headers.
//!
//! - [`Quota`]: a rate and a burst, always named together: `Quota::per_second(11).burst(1)`
//!   (evenly spaced), `Quota::per_hour(1_000).burst(1_000)` (all at once if need be). The
//!   numbers are checked where the quota is built (a zero is a compile error in a const
//!   context); see its docs for what the burst means.
//! - [`RateLimiter`]: one or more quotas admitted all-or-nothing (11/s **and** 1,000,000/day),
//!   kept in one atomic word per quota. [`check`](RateLimiter::check),
//!   [`check_n`](RateLimiter::check_n), [`peek`](RateLimiter::peek) (consumes nothing),
//!   [`refund`](RateLimiter::refund), [`set_rate`](RateLimiter::set_rate) /
//!   [`set_quota`](RateLimiter::set_quota) at runtime keeping the debt, and
//!   [`acquire`](RateLimiter::acquire) that waits first come, first served, cancel-safe, with
//!   optional bounds on the wait and on the queue.
//! - [`Limiter`] / [`LimiterLayer`]: the tower middleware, around **any** `tower::Service`.
//!   `poll_ready` waits for a permit.
//! - [`AdaptiveLimiter`] / [`AdaptiveLimiterLayer`]: the same around an HTTP client, fed every
//!   response ([`Adaptive`]): it paces 2% under the limit the upstream states
//!   (`RateLimit-Policy`, `X-RateLimit-Limit`) and follows its changes, a 429 with
//!   `Retry-After` pauses every caller, and a used-up window pauses them only when it
//!   contradicts the schedule (a client pacing at the limit sees `Remaining: 0` on most
//!   answers); [`Aimd`] finds the limit of an upstream that states nothing.
//! - [`KeyedRateLimiter`] / [`KeyedLimiterLayer`]: one limiter per host or per a key you
//!   compute, with a bound on the number of keys and on their memory.
//! - Errors: a refusal is a [`RateLimited`] (with the time until a permit), a fleet limiter
//!   whose store failed returns a [`StoreUnavailable`]; services return a [`BoxError`] to
//!   `downcast_ref` them from. Misuse of the API is one of this crate's own:
//!   [`InvalidQuota`], [`ExceedsBurst`], [`NoSuchQuota`].
//! - Time comes through [`tollway_core::Clock`] ([`LimiterClock`]); the default
//!   [`QuantaClock`] reads the CPU's counter, and tests use `FakeClock` or tokio's paused clock
//!   through `TokioClock`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response};
//! use tollway_core::TokioClock;
//! use tollway_limiter::{Adaptive, AdaptiveLimiterLayer, Quota, RateLimiter};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tollway_limiter::BoxError> {
//! // About 11 requests per second, evenly spaced, and a million a day, 1,000 at once at most.
//! let limiter = RateLimiter::builder(Quota::per_second(11).burst(1))
//!     .quota(Quota::per_day(1_000_000).burst(1_000))
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
//!     .layer(AdaptiveLimiterLayer::new(limiter.clone()))
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
//! limiter.set_rate(Quota::per_second(5));
//! assert_eq!(limiter.quotas()[0], Quota::per_second(5).burst(1));
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
//! moment its permit is due, then wakes the next. The timer fires on whole milliseconds and a
//! little late: a plain limiter lets that lateness push the later permits back (never two
//! closer than the interval); an adaptive one, which paces a margin under the upstream's limit,
//! admits a head woken late as of its due time (at most the margin of its wait, and 2 ms), so
//! its pace holds. Nothing is taken from the bucket before a
//! waiter's turn, so a dropped waiter (a cancelled future, a dropped service) leaves no debt.
//! A permit taken by `poll_ready` and never spent by `call` is given back when the service is
//! dropped (exactly: only if nothing was admitted on top of it). `call` without `poll_ready`
//! takes a free permit or fails with [`RateLimited`]; it never panics. Every wait can be
//! bounded: the limiter's `max_wait`, and a service's own
//! [`max_wait`](Limiter::max_wait) on top (the client stack of the `tollway` crate bounds its
//! waits by default).
//!
//! # Exact under concurrency
//!
//! Several quotas are asked first and taken only if all admit, so a refusal writes nothing; a
//! commit that loses a race is undone by restoring exactly what it replaced, never by
//! subtracting (which would erase another request's permit). Quota changes (`set_quota`, AIMD)
//! are atomic for concurrent commits. Loom model checks cover the commit and undo, quota
//! changes and the queue's hand-off (`RUSTFLAGS="--cfg tollway_loom" cargo test --lib loom`).
//!
//! # Server side
//!
//! With the `server` feature, [`server`] protects an axum API: per-key limits (peer IP behind
//! trusted proxies, API key, global, closure), several quotas checked all-or-nothing, 429 with
//! `Retry-After` rounded up and IETF / legacy rate-limit headers appended next to other
//! layers', key memory bounded in bytes, per-key concurrency, priority admission and shadow
//! mode. It is built on the same [`KeyedRateLimiter`] and GCRA as the client side.
//!
//! # Fleet mode (Redis)
//!
//! With the `redis` feature, [`RateLimiterBuilder::redis`] builds the same limiter with its
//! quotas kept in Redis and shared by every process that uses the same key prefix: one atomic
//! GCRA script per decision on Redis's clock, fair local waiting on the retry-after it returns,
//! and an explicit choice when Redis fails (closed with [`StoreUnavailable`] by default, or
//! open to a local quota). It works the same on a Redis Cluster, and a pause one process learns
//! from the upstream reaches every process. See the `fleet` module.
//!
//! # Metrics
//!
//! With the `metrics` feature: counters `tollway_limiter_admitted_total`,
//! `tollway_limiter_waited_total`, `tollway_limiter_rejected_total`,
//! `tollway_limiter_pauses_total` and the histogram `tollway_limiter_wait_seconds`.

mod adaptive;
mod adaptive_service;
mod builder;
mod clock;
mod error;
#[cfg(feature = "redis")]
pub mod fleet;
mod future;
mod gcra;
mod keyed;
mod keyed_service;
mod layer;
mod limiter;
#[cfg(all(test, tollway_loom))]
mod loom_tests;
mod metrics;
mod queue;
mod quota;
#[cfg(feature = "server")]
pub mod server;
mod service;
pub mod store;
mod sync;
mod timer;

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
