//! Retries for tower that rescue transient failures without causing retry storms or spending a
//! credit twice.
//!
//! [`Retry`] (built by [`RetryLayer`]) resends a request when core's [`Classify`] says the
//! outcome is retryable (429, 5xx, transport errors, timeouts) and never otherwise: not a 402
//! (retrying "insufficient balance" burns money), not another 4xx, not another tollway layer's
//! local rejection. Then:
//!
//! - **Backoff** ([`backoff`]): exponential with full, equal, AWS-decorrelated or Polly-"V2"
//!   decorrelated jitter; the cap applies before jitter. Delays sleep on tokio's timer;
//!   randomness comes from an injectable [`JitterRng`].
//! - **Retry-After**: the next attempt waits at least as long as the upstream asked (rounded up
//!   to the millisecond). A longer wait than [`max_retry_after`](RetryPolicyBuilder::max_retry_after)
//!   ends retrying at once with a [`RetryAfterTooLong`] error in place of the response.
//! - **Limits**: [`max_attempts`](RetryPolicyBuilder::max_attempts) (the first send included) and
//!   a total [`deadline`](RetryPolicyBuilder::deadline): a retry whose delay the deadline cannot
//!   cover is not made.
//! - **Idempotency**: only idempotent methods, or requests carrying an `Idempotency-Key` (kept
//!   identical on every attempt), are resent, unless the policy opts in.
//! - **Budget** ([`RetryBudget`]): retries limited to a share of recent requests plus a floor per
//!   second, shared by every clone.
//! - **Body replay** ([`ReplayBody`]): a body of exactly known length up to a limit is read into
//!   memory before the first send, and every attempt sends that copy, so a request that failed
//!   before the upstream read a byte (a refused connection, say) is resent whole; other bodies
//!   are sent once.
//!
//! Every response carries [`Attempts`]; a retryable response that was not retried also carries
//! [`RetriesStopped`] with the [`StopReason`], and the decision is logged with `tracing` (with
//! `http.request.resend_count`). An error comes back as [`RequestFailed`], with the attempt
//! count and the last error as its source, except another tollway layer's refusal
//! (`CircuitOpen`, `RateLimited`, ...), which is returned as it is. The `metrics` feature counts `tollway_retry_attempts_total`,
//! `tollway_retry_retries_total` and `tollway_retry_give_ups_total{reason}`.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tollway_retry::backoff::{Backoff, Jitter};
//! use tollway_retry::{Attempts, ReplayBody, RetryLayer, RetryPolicy};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = Arc::clone(&calls);
//! // An upstream that throttles the first call.
//! let upstream = tower::service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let status = if n == 0 { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::OK };
//!         let response = Response::builder()
//!             .status(status)
//!             .header("retry-after", "1")
//!             .body(())
//!             .unwrap();
//!         Ok::<_, std::io::Error>(response)
//!     }
//! });
//!
//! let policy = RetryPolicy::builder()
//!     .max_attempts(4)
//!     .backoff(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5))
//!         .with_jitter(Jitter::Full))
//!     .build()
//!     .unwrap();
//! let client = ServiceBuilder::new().layer(RetryLayer::new(policy)).service(upstream);
//!
//! let started = tokio::time::Instant::now();
//! let request = Request::get("/v2/user/followers").body(Full::new(Bytes::new())).unwrap();
//! let response = client.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
//! assert!(started.elapsed() >= Duration::from_secs(1)); // Retry-After was honoured
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! # }
//! ```

pub mod backoff;
mod body;
mod budget;
mod error;
mod extensions;
mod future;
mod layer;
mod observe;
mod policy;
mod service;

pub use body::ReplayBody;
pub use budget::{RetryBudget, RetryBudgetBuilder};
pub use error::{InvalidConfig, RequestFailed};
pub use extensions::{Attempts, RetriesStopped, StopReason};
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use policy::{RetryPolicy, RetryPolicyBuilder};
pub use service::Retry;
pub use tollway_core::{BoxError, JitterRng, RetryAfterTooLong};

#[doc(no_inline)]
pub use tollway_core::{Classifier, Classify};
