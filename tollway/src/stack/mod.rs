//! The client stack: every tollway layer, in the right order, as one tower [`Layer`](tower::Layer).
//!
//! [`ClientStackLayer`] wraps an HTTP client (hyper-util's, reqwest through
//! [`middleware`](crate::middleware), or any `tower::Service` over `http` types) in, from the
//! outside in:
//!
//! ```text
//! cache → retry → breaker → budget → limiter → client
//! ```
//!
//! # Why this order
//!
//! - **Cache outermost**, so a hit costs nothing: no rate permit, no credit, no breaker slot,
//!   no retry bookkeeping. Only misses go further in (and concurrent identical misses are
//!   coalesced into one).
//! - **Retry outside the breaker**, so that each attempt is judged by the breaker, and an open
//!   circuit ends the retries: its `CircuitOpen` is classified
//!   [`Rejected`](tollway_core::OutcomeKind::Rejected), which the retry layer never retries.
//!   The same holds for the budget's `BudgetExhausted` and the limiter's `RateLimited`: no
//!   layer retries another layer's refusal.
//! - **Budget inside retry**: every attempt is billed by the API, so every attempt reserves its
//!   cost before it is sent and is settled when its answer arrives (refunded for a 5xx or a 429
//!   under the default charge policy). A `402` latches the ledger before the retry layer sees
//!   it; the retry layer never retries a `402` anyway, and every later request is refused
//!   locally without reaching the network.
//! - **Limiter innermost**, so every attempt, retries included, takes a permit right before it
//!   is sent, and the upstream never sees more than the rate however the layers above behave.
//!   Its adaptive part reads every response (a `429`'s `Retry-After`, `X-RateLimit-*`, IETF
//!   `RateLimit`) before any layer above acts on it. Its waits are bounded by
//!   [`ClientStackBuilder::max_wait`]: a long pause the upstream orders fails callers at once
//!   with `RateLimited` (and the time left) instead of holding them.
//!
//! The limiter and the retry layer are always present (`RetryPolicy::builder().max_attempts(1)`
//! turns retries off); the cache, the breaker and the budget are optional. Missing layers are
//! switched off with [`tower::util::Either`], so the stack stays one concrete, unboxed type,
//! [`ClientStack`], whatever is configured.
//!
//! Timeouts are the client's job, inside the stack: a per-attempt
//! `tower::timeout::TimeoutLayer` around the client makes a slow attempt a retryable failure
//! the breaker counts. Concurrency limits go outside the stack (or are a fixed pool of workers),
//! never between the limiter and the client.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tollway::breaker::{BreakerConfig, BreakerLayer};
//! use tollway::budget::{BudgetLayer, Ledger, Window};
//! use tollway::cache::{CacheLayer, CacheStatus};
//! use tollway::limiter::{Adaptive, Quota, RateLimiter};
//! use tollway::retry::{ReplayBody, RetryPolicy};
//! use tollway::{ClientStackLayer, core::TokioClock};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tollway::core::BoxError> {
//! let dir = tempfile::tempdir()?;
//! let limiter = RateLimiter::builder(Quota::per_second(11).burst(1))
//!     .adaptive(Adaptive::new())
//!     .clock(TokioClock)
//!     .build();
//! let layer = ClientStackLayer::builder(limiter)
//!     .max_wait(Duration::from_secs(10))
//!     .retry(RetryPolicy::builder().max_attempts(3).build()?)
//!     .breaker(BreakerLayer::new(BreakerConfig::builder().consecutive_failures(5).build()?))
//!     .budget(BudgetLayer::new(Ledger::new(1_000, Window::day())))
//!     .cache(CacheLayer::builder(dir.path()).ttl(Duration::from_secs(3600)).build()?)
//!     .build();
//!
//! // Any client: here, one that answers every request with a page.
//! let client = service_fn(|_: Request<ReplayBody<Full<Bytes>>>| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{\"users\": []}"))))
//! });
//! let stack = layer.layer(client);
//!
//! let request = || Request::get("http://api.example/v2/user/followers?user_id=1")
//!     .header("x-access-key", "key")
//!     .body(Full::new(Bytes::new()))
//!     .unwrap();
//! let first = stack.clone().oneshot(request()).await?;
//! assert_eq!(first.status(), StatusCode::OK);
//! let again = stack.clone().oneshot(request()).await?;
//! assert_eq!(CacheStatus::from_headers(again.headers()), Some(CacheStatus::Hit));
//! assert_eq!(again.into_body().collect().await?.to_bytes(), "{\"users\": []}");
//! // One credit: the hit cost nothing.
//! assert_eq!(layer.ledger().unwrap().snapshot().windows[0].spent, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Spawning
//!
//! When the wrapped client's own error type is [`BoxError`](tollway_core::BoxError), awaiting
//! the stack's future inside `tokio::spawn` fails to compile with "implementation of `From` is
//! not general enough" (a rustc limitation with higher-ranked bounds in auto-trait checks; see
//! tollway-retry's README). Box the stack first with [`ClientStack::boxed`] (a
//! `BoxCloneSyncService`), or give the client a concrete error type (hyper-util's client has
//! one).

mod future;
mod layer;
mod service;
mod uncached;

pub use future::UncachedFuture;
pub use layer::{ClientStackBuilder, ClientStackLayer, DEFAULT_MAX_WAIT};
pub use service::ClientStack;
pub use uncached::Uncached;
