//! What every tollway layer reads from HTTP, written once.
//!
//! - [`classify`]: one [`Classify`] trait that maps a response or an error to an [`Outcome`]
//!   (success, rate limited with the upstream's hint, credits exhausted, server error, client
//!   error, transport error, timeout, or a local rejection). The breaker, retry, budget and cache
//!   layers all consume it, so an API's quirks are described in one place.
//! - [`headers`]: `Retry-After`, legacy `X-RateLimit-*` and the IETF `RateLimit-Policy` /
//!   `RateLimit` fields, parsed without panics and formatted the way clients expect.
//! - [`idempotency`]: which requests may be sent twice.
//! - [`clock`]: the [`Clock`] every layer reads time from, with a [`FakeClock`] for tests.
//! - [`error`]: the rejection errors layers return ([`RateLimited`], [`CircuitOpen`],
//!   [`BudgetExhausted`]) and [`BoxError`].
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::Response;
//! use tollway_core::{Classifier, Classify, OutcomeKind};
//!
//! let response = Response::builder()
//!     .status(429)
//!     .header("retry-after", "2")
//!     .body(())
//!     .unwrap();
//! let outcome = Classifier::default().classify(&response);
//! assert_eq!(outcome.kind(), OutcomeKind::RateLimited);
//! assert!(outcome.is_retryable());
//! assert_eq!(outcome.retry_delay(SystemTime::now()), Some(Duration::from_secs(2)));
//! ```

pub mod classify;
pub mod clock;
pub mod error;
pub mod headers;
pub mod idempotency;

pub use classify::{Classifier, Classify, Outcome, OutcomeKind};
pub use clock::{Clock, FakeClock, MonotonicClock, TokioClock};
pub use error::{
    BoxError, BudgetExhausted, CircuitOpen, ExhaustedReason, HeaderError, RateLimited,
    RetryAfterTooLong, StoreUnavailable,
};
