//! What every tollway layer reads from HTTP, written once.
//!
//! - [`classify`]: one [`Classify`] trait that maps a response or an error to an [`Outcome`]
//!   (success, rate limited with the upstream's hint, credits exhausted, server error, client
//!   error, transport error, timeout, or a local rejection). The breaker, retry, budget and cache
//!   layers all consume it, so an API's quirks are described in one place.
//! - [`headers`]: `Retry-After`, legacy `X-RateLimit-*` and the IETF `RateLimit-Policy` /
//!   `RateLimit` fields, parsed without panics and formatted the way clients expect.
//! - [`durable`]: private files, atomic writes and `flock` locks for everything persisted.
//! - [`idempotency`]: which requests may be sent twice.
//! - [`random`]: [`JitterRng`], the injectable randomness every jittered wait draws from.
//! - `client_ip` (feature `client-ip`): the client's address behind trusted proxies, grouped
//!   the way server-side limits and quotas count clients.
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
#[cfg(feature = "client-ip")]
pub mod client_ip;
pub mod clock;
pub mod digest;
pub mod durable;
pub mod error;
pub mod headers;
pub mod idempotency;
pub mod random;

pub use classify::{Classifier, Classify, Outcome, OutcomeKind};
pub use clock::{Clock, FakeClock, MonotonicClock, SharedClock, TokioClock};
pub use digest::TextDigest;
pub use error::{
    BoxError, BudgetExhausted, CircuitOpen, ExhaustedReason, HeaderError, RateLimited,
    RetryAfterTooLong, StoreUnavailable,
};
pub use random::JitterRng;
