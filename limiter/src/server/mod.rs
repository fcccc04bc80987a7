//! The server side (feature `server`): protect an axum API the way rate-limited APIs protect
//! theirs.
//!
//! - **Keys** ([`KeyExtractor`], reading a [`RequestHead`]): [`PeerIp`] (axum's `ConnectInfo`, forwarding headers
//!   trusted only from configured proxy [`Cidr`]s and read from the right, IPv6 grouped by
//!   /64), [`HeaderKey`] (an API key), [`Global`], closures, and fallbacks with
//!   [`KeyExtractor::or`].
//! - **Rate limits** ([`Limit`]): per key, one or more named quotas each, built on the
//!   crate's [`KeyedRateLimiter`](crate::KeyedRateLimiter) and GCRA; every limit that applies
//!   must admit a request, or none takes anything.
//! - **Responses**: refused with 429 (configurable, see [`Rejection`]; the default body is
//!   `application/problem+json` of type `quota-exceeded`), `Retry-After` rounded up to whole
//!   seconds (300 ms is `1`), IETF `RateLimit-Policy` / `RateLimit` for every policy and legacy
//!   `X-RateLimit-*` ([`HeaderOptions`], each on or off), on admitted responses too.
//! - **Bounded memory, in bytes**: keys are fixed-size (text keys are keyed digests, so a
//!   400 KB API key costs what a short one does); each limit remembers at most `max_keys` of
//!   them, and a full limit makes room for a new key in constant time (a small random sample,
//!   idle keys first), however many distinct keys an attacker sends.
//!   [`ServerLimiterLayer::memory_bound`] is the bound in bytes;
//!   [`ServerLimiterLayer::tracked_keys`] (gauge `tollway_limiter_tracked_keys`) says how many
//!   keys are held, and idle ones are forgotten a slice at a time on the request path (no
//!   background task).
//! - **Next to other layers**: `RateLimit-Policy` / `RateLimit` members are appended to what
//!   the application or another layer (the budget's quota layer) wrote, never replacing it;
//!   the larger `Retry-After` wins.
//! - **Per-key concurrency** ([`ConcurrencyLimit`]), refused with 429 or 402.
//! - **Priority admission** ([`PriorityAdmission`]): a bounded queue shared by all priorities;
//!   a full queue lets a higher-priority arrival evict the lowest waiter (503).
//! - **Shadow mode**: count, write the headers, refuse nothing ([`ShadowReport`]).
//!
//! # Example
//!
//! ```
//! use std::net::SocketAddr;
//! use axum::{Router, routing::get};
//! use http::{HeaderName, Request, StatusCode};
//! use tollway_limiter::Quota;
//! use tollway_limiter::server::{HeaderKey, HeaderOptions, Limit, PeerIp, ServerLimiterLayer};
//! use axum::body::Body;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limits = ServerLimiterLayer::builder()
//!     // Two requests at once per IP, then one every 30 s...
//!     .limit(Limit::new("per-ip", PeerIp::new(), Quota::per_minute(2).burst(2)))
//!     // ...and 1,000 an hour per API key, all at once if need be, for requests with one.
//!     .limit(Limit::new(
//!         "per-key",
//!         HeaderKey::new(HeaderName::from_static("x-api-key")),
//!         Quota::per_hour(1_000).burst(1_000),
//!     ))
//!     .headers(HeaderOptions::all())
//!     .build()?;
//! let app = Router::new()
//!     .route("/hello", get(|| async { "hello" }))
//!     .layer(limits.clone());
//! let call = |request| ServiceExt::<Request<Body>>::oneshot(app.clone(), request);
//!
//! // What `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`
//! // puts in every request:
//! let request = || {
//!     let mut request = Request::get("/hello").body(Body::empty()).unwrap();
//!     request
//!         .extensions_mut()
//!         .insert(axum::extract::ConnectInfo("203.0.113.7:5000".parse::<SocketAddr>().unwrap()));
//!     request
//! };
//! for remaining in ["1", "0"] {
//!     let response = call(request()).await?;
//!     assert_eq!(response.status(), StatusCode::OK);
//!     assert_eq!(response.headers()["x-ratelimit-remaining"], remaining);
//! }
//! let refused = call(request()).await?;
//! assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(refused.headers()["retry-after"], "30");
//! assert_eq!(refused.headers()["content-type"], "application/problem+json");
//! assert_eq!(limits.tracked_keys(), 1);
//! # Ok(())
//! # }
//! ```

mod builder;
mod concurrency;
mod error;
#[cfg(feature = "redis")]
pub mod fleet;
mod future;
mod headers;
mod key;
mod layer;
mod limits;
mod metrics;
mod peer;
mod priority;
mod rejection;
mod remote;
mod service;
mod shared;
mod states;

pub use builder::{DEFAULT_MAX_KEYS, ServerLimiterBuilder};
pub use concurrency::ConcurrencyLimit;
pub use error::InvalidPolicy;
pub use future::ResponseFuture;
pub use headers::{HeaderOptions, ResetStyle};
pub use key::{Global, HeaderKey, Key, KeyExtractor, Or, RequestHead, TextDigest};
pub use layer::ServerLimiterLayer;
pub use limits::Limit;
pub use peer::{Cidr, InvalidCidr, PeerIp, ProxyHeader};
pub use priority::PriorityAdmission;
pub use rejection::{QUOTA_EXCEEDED_TYPE, Rejection, RejectionInfo, RejectionKind};
pub use service::ServerLimiter;
pub use shared::ShadowReport;
