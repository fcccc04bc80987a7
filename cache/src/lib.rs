//! An idempotent disk cache for tower: a response already paid for is never paid for again.
//!
//! [`CacheLayer`] puts a [`Cache`] in front of an HTTP client (or an axum app). It stores
//! responses to GET and HEAD requests (and, when asked, to other methods that carry an
//! `Idempotency-Key`) on disk, one file per entry, and answers identical requests from there:
//!
//! - **Keys** hash the method, scheme, the URL's userinfo, host, port, path, the query
//!   parameters in a normalised order, selected `Vary` headers and the credential headers
//!   (`Authorization`, `x-access-key`, `X-Api-Key` by default) with BLAKE3 keyed by a random
//!   per-folder secret, so two credentials never share an entry and no credential reaches the
//!   disk.
//! - **What is stored** is decided by [`tollway_core::Classify`]: successes by default, `404`
//!   too if [`CacheBuilder::cache_not_found`] is set; never a `304` or a `206`, never a
//!   `Cache-Control: no-store` response (unless [`CacheBuilder::respect_no_store`] says
//!   otherwise), never a body above [`CacheBuilder::max_entry_bytes`] (it streams through),
//!   never one the application's [`CacheBuilder::validate`] check rejects. Conditional
//!   requests (`If-None-Match`, `If-Modified-Since`, ...) and `Range` requests bypass the
//!   cache: only the origin can answer them.
//! - **Lifetimes** come from [`CacheBuilder::ttl`], [`CacheBuilder::route_ttl`] and
//!   [`CacheBuilder::ttl_fn`], or, as an opt-in ([`CacheBuilder::freshness`]), from the
//!   response's `Cache-Control` and `Expires` read by RFC 9111's rules
//!   ([`Freshness::HttpPrivate`], [`Freshness::HttpShared`]).
//! - **Revalidation**: a stale entry with an `ETag` or `Last-Modified` is kept
//!   ([`CacheBuilder::revalidate`]) and revalidated with a conditional request; a
//!   `304 Not Modified` renews it without downloading the body again (`revalidated`).
//! - **Files** are written to a temporary file (mode 0600), fsynced, renamed into place and the
//!   folder fsynced; each carries a checksum, and a truncated or corrupt file is removed and
//!   treated as a miss. The folder is kept under [`CacheBuilder::max_bytes`], counted for the
//!   folder whatever number of processes share it (through the folder's journal), by evicting
//!   the least recently used entries before each write. Hits of entries up to 128 KiB are
//!   read on the calling task (a page-cache read takes microseconds, less than a hand-off to
//!   tokio's blocking pool); larger reads, writes and removals run on the pool. A bounded
//!   memory tier ([`CacheBuilder::memory_bytes`]) of recently used entries, all also on disk,
//!   answers most hits without touching a file.
//! - **Coalescing**: concurrent identical requests send one upstream request; the others wait
//!   and share its response. If it fails (an error, or a failed response such as a 503, 429 or
//!   402, or one the application rejected) or its caller goes away, one waiter takes over and
//!   the rest keep waiting: failures are never shared, and never send everyone upstream at
//!   once. If its response is good but must not be stored (`no-store`, too large), every
//!   waiter sends its own request at once. Processes sharing a folder coalesce too, through a
//!   `flock` per key (see [`CacheBuilder::cross_process_coalescing`]).
//! - **stale-if-error**: with [`CacheBuilder::stale_if_error`], an expired entry stands in for
//!   a failed upstream (5xx, transport error, 429/402, an open breaker, a spent budget).
//! - **Taking answers back**: [`CacheHandle::invalidate`] removes the entry a request would be
//!   served from, for every clone of the layer (and, through the folder, other processes).
//! - Every response carries [`CACHE_STATUS_HEADER`] (`x-tollway-cache`): `hit`, `miss`,
//!   `stale`, `coalesced` or `revalidated` (see [`CacheStatus`]). With the `metrics` feature,
//!   the counters `tollway_cache_{hits,misses,stale,coalesced,revalidated,evictions}_total`
//!   follow the same outcomes.
//! - **Errors**: the service's error is [`BoxError`]: the inner service's errors, passed on,
//!   and the cache's own [`RevalidationMismatch`], which callers can `downcast_ref`.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tollway_cache::{CacheLayer, CacheStatus};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tollway_core::BoxError> {
//! let dir = tempfile::tempdir()?;
//! let calls = Arc::new(AtomicUsize::new(0));
//! let counter = Arc::clone(&calls);
//! let upstream = service_fn(move |_request: Request<()>| {
//!     counter.fetch_add(1, Ordering::SeqCst);
//!     async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("page 1")))) }
//! });
//!
//! let cache = CacheLayer::builder(dir.path())
//!     .ttl(Duration::from_secs(60))
//!     .route_ttl("/sys/balance", Duration::ZERO) // never cache the balance
//!     .build()?;
//! let service = ServiceBuilder::new().layer(cache).service(upstream);
//!
//! let request = || {
//!     Request::get("https://api.example/v2/user/followers?user_id=1&page_id=")
//!         .header("x-access-key", "my-key")
//!         .body(())
//!         .unwrap()
//! };
//! let first = service.clone().oneshot(request()).await?;
//! assert_eq!(CacheStatus::from_headers(first.headers()), Some(CacheStatus::Miss));
//! let second = service.clone().oneshot(request()).await?;
//! assert_eq!(CacheStatus::from_headers(second.headers()), Some(CacheStatus::Hit));
//! assert_eq!(second.into_body().collect().await?.to_bytes(), "page 1");
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//! # Ok(())
//! # }
//! ```
//!
//! Customised: lifetimes from `Cache-Control`, only well-formed pages stored, and a page the
//! application rejects after the fact taken back.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tollway_cache::{CacheLayer, CacheStatus, Freshness};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tollway_core::BoxError> {
//! # let dir = tempfile::tempdir()?;
//! let layer = CacheLayer::builder(dir.path())
//!     .freshness(Freshness::HttpPrivate) // max-age, no-cache, private, Expires
//!     .ttl(Duration::from_secs(600)) // for responses that state no lifetime
//!     .validate(|head, body| head.status.is_success() && body.starts_with(b"{"))
//!     .build()?;
//! let service = layer.layer(service_fn(|_: Request<()>| async {
//!     let mut response = Response::new(Full::new(Bytes::from("{\"page\": 1}")));
//!     response.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
//!     response.headers_mut().insert("etag", "\"p1\"".parse().unwrap());
//!     Ok::<_, Infallible>(response)
//! }));
//! let page = || Request::get("https://api.example/v2/pages/1").body(()).unwrap();
//! service.clone().oneshot(page()).await?;
//! let again = service.clone().oneshot(page()).await?;
//! assert_eq!(CacheStatus::from_headers(again.headers()), Some(CacheStatus::Hit));
//! // The application decides the page is wrong after all:
//! layer.handle().invalidate(&page()).await?;
//! let refetched = service.clone().oneshot(page()).await?;
//! assert_eq!(CacheStatus::from_headers(refetched.headers()), Some(CacheStatus::Miss));
//! # Ok(())
//! # }
//! ```

mod body;
mod buffer;
mod builder;
mod coalesce;
mod disk;
mod entry;
mod error;
mod fetch;
mod freshness;
mod future;
mod handle;
mod key;
mod layer;
mod policy;
mod respond;
mod revalidate;
mod serve;
mod service;
mod status;
mod store;

pub use body::CacheBody;
pub use builder::CacheBuilder;
pub use error::RevalidationMismatch;
pub use freshness::Freshness;
pub use future::ResponseFuture;
pub use handle::CacheHandle;
pub use layer::CacheLayer;
pub use service::Cache;
pub use status::{CACHE_STATUS_HEADER, CacheStatus};
/// The error type of [`Cache`]: the inner service's errors, boxed, and the cache's own
/// ([`RevalidationMismatch`]). Re-exported from `tollway-core`.
pub use tollway_core::BoxError;
