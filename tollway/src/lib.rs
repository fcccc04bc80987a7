//! One dependency for every tollway layer, and the client stack in the right order.
//!
//! tollway makes calls to rate-limited, credit-billed HTTP APIs production-grade. Each layer is
//! its own crate, re-exported here behind a feature of the same name:
//!
//! | feature | module | what it does |
//! | --- | --- | --- |
//! | (always) | [`core`] | classification of outcomes, rate-limit headers, clocks, shared errors |
//! | `limiter` | `limiter` | GCRA rate limiting, fair waiting, adaptive to 429s and headers |
//! | `breaker` | `breaker` | circuit breaking with bounded, cancel-safe half-open probes |
//! | `retry` | `retry` | jittered retries honouring `Retry-After`, retry budgets, body replay |
//! | `budget` | `budget` | credit ledger: reservations, windows, a 402 latch, a journal |
//! | `cache` | `cache` | idempotent disk cache: a page paid for is never paid for again |
//! | `full` | [`stack`] | all five, and [`ClientStackLayer`] (**default**) |
//! | `redis` | | fleet mode: the limiter's and the budget's state in Redis, shared by processes |
//! | `server` | `limiter::server` | the limiter's server side for axum APIs (turns on `limiter`) |
//! | `metrics` | | every enabled layer's `tollway_<layer>_*` metrics |
//! | `reqwest` | `middleware` | any layer or the whole stack as a `reqwest_middleware::Middleware` |
//!
//! `full` is the default: most users want the whole stack. To pick single layers, turn the
//! default off (`default-features = false, features = ["limiter", "retry"]`) and compose them
//! with `tower::ServiceBuilder` in the order the [`stack`] module explains.
//!
//! # The client stack
//!
//! [`ClientStackLayer`] puts the layers in this order, outermost first:
//! **cache → retry → breaker → budget → limiter → client**. A cache hit costs nothing; every
//! attempt, retries included, is judged by the breaker, billed by the budget and takes a rate
//! permit right before it is sent; no layer retries another layer's refusal. See [`stack`]
//! for the reasons.
//!
//! ```
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tollway::ClientStackLayer;
//! use tollway::core::{BoxError, TokioClock};
//! use tollway::limiter::{Quota, RateLimiter};
//! use tollway::retry::{Attempts, ReplayBody};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let limiter = RateLimiter::builder(Quota::per_second(11).burst(1))
//!     .clock(TokioClock)
//!     .build();
//! let layer = ClientStackLayer::builder(limiter).build();
//!
//! // A client whose first answer is a 503: the stack retries it.
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let counter = calls.clone();
//! let client = service_fn(move |_: Request<ReplayBody<Full<Bytes>>>| {
//!     let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move {
//!         let status = if n == 0 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
//!         let response = Response::builder().status(status).body(Full::new(Bytes::new()));
//!         Ok::<_, http::Error>(response?)
//!     }
//! });
//! let response = layer.layer(client)
//!     .oneshot(Request::get("http://api.example/v2/items").body(Full::new(Bytes::new()))?)
//!     .await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
//! # Ok(())
//! # }
//! ```
//!
//! With the `reqwest` feature, the same stack goes into a `reqwest_middleware` client in one
//! line: see `middleware`.

#[doc(inline)]
pub use tollway_core as core;

#[cfg(feature = "breaker")]
#[doc(inline)]
pub use tollway_breaker as breaker;
#[cfg(feature = "budget")]
#[doc(inline)]
pub use tollway_budget as budget;
#[cfg(feature = "cache")]
#[doc(inline)]
pub use tollway_cache as cache;
#[cfg(feature = "limiter")]
#[doc(inline)]
pub use tollway_limiter as limiter;
#[cfg(feature = "retry")]
#[doc(inline)]
pub use tollway_retry as retry;

#[cfg(all(
    feature = "limiter",
    feature = "breaker",
    feature = "retry",
    feature = "budget",
    feature = "cache"
))]
pub mod stack;

#[cfg(all(
    feature = "limiter",
    feature = "breaker",
    feature = "retry",
    feature = "budget",
    feature = "cache"
))]
pub use stack::{ClientStack, ClientStackBuilder, ClientStackLayer};

#[cfg(feature = "reqwest")]
pub mod middleware;
