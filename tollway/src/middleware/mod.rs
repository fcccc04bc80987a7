//! The reqwest-middleware bridge (feature `reqwest`): any tollway layer, or the whole
//! [`ClientStackLayer`](crate::ClientStackLayer), as a [`reqwest_middleware::Middleware`].
//!
//! ```
//! # #[cfg(feature = "full")] {
//! use tollway::ClientStackLayer;
//! use tollway::limiter::{Adaptive, Quota, RateLimiter};
//! use tollway::middleware::TollwayMiddleware;
//!
//! let limiter = RateLimiter::builder(Quota::per_second(11).burst(1))
//!     .adaptive(Adaptive::new())
//!     .build();
//! let reqwest = reqwest::Client::builder()
//!     .retry(reqwest::retry::never()) // the stack retries; reqwest's own must not
//!     .build()
//!     .unwrap();
//! let client = reqwest_middleware::ClientBuilder::new(reqwest)
//!     .with(TollwayMiddleware::new(ClientStackLayer::builder(limiter).build()))
//!     .build();
//! # let _ = client; }
//! ```
//!
//! # How it works
//!
//! reqwest-middleware's `Next<'_>` borrows the client, so it cannot sit at the bottom of a
//! `'static` tower stack (the cache needs one, and so does `tokio::spawn`). Each
//! [`handle`](reqwest_middleware::Middleware::handle) call therefore builds the stack from the
//! layer (cheap: the layers' state is shared through `Arc`s, so every call sees the same
//! limiter, breaker, ledger and cache) over a [`Forward`] service that sends each attempt back
//! over a channel. The `handle` call drives the stack's future and, for each attempt that
//! comes back, runs `next.run(..)` (the rest of the middleware chain, then reqwest) and answers
//! it. Retries are attempts like any other: each goes through the later middlewares again.
//!
//! # Per-request data
//!
//! The middleware [`Extensions`](http::Extensions) (`RequestBuilder::with_extension` in
//! reqwest-middleware) are copied into the `http::Request` the layers see, so
//! `tollway::budget::Priority` or your own `Cost` key work as they do on any tower client;
//! each attempt passes the request's extensions on to the later middlewares.
//!
//! # reqwest's own retries
//!
//! reqwest 0.13 retries some protocol-level failures by itself, below every middleware: those
//! resends are invisible to the limiter and the budget. Build the client with
//! `.retry(reqwest::retry::never())` and let the stack's retry layer do it.
//!
//! # Errors
//!
//! Errors from reqwest and from later middlewares come back as they were
//! ([`reqwest_middleware::Error::Reqwest`] or `Middleware`). Refusals of the tollway layers
//! (`RateLimited`, `CircuitOpen`, `BudgetExhausted`, `RetryAfterTooLong`) come back as
//! [`reqwest_middleware::Error::Middleware`], whose `anyhow::Error` downcasts to them:
//! `error.downcast_ref::<tollway::core::CircuitOpen>()` after matching the variant.
//!
//! Responses served by the cache carry the request's URL as their `Response::url`.

mod forward;
mod service;

pub use forward::{Forward, ForwardClosed};
pub use service::TollwayMiddleware;
