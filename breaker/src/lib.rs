//! Circuit breaking for tower: consecutive and rate-based trips, bounded, cancel-safe half-open
//! probes, one breaker per host if you like.
//!
//! When the upstream is really down, a [`Breaker`] stops sending to it, fails fast with
//! `tollway-core`'s [`CircuitOpen`] (carrying `retry_after`), and finds out cheaply when it is
//! back.
//!
//! # The model
//!
//! - **Closed**: calls go through. Outcomes are classified by a
//!   [`Classify`](tollway_core::Classify) ([`Classifier::default()`](tollway_core::Classifier)
//!   unless configured); by default only [upstream failures](tollway_core::Outcome::is_upstream_failure)
//!   count as failures (5xx, timeouts, transport errors): 429, 402 and other 4xx mean the
//!   upstream is healthy and we are throttled, billed or wrong. Local rejections from layers
//!   below ([`OutcomeKind::Rejected`](tollway_core::OutcomeKind::Rejected)) are not counted at
//!   all. The breaker **trips** on any configured condition: `n` consecutive failures; a failure
//!   rate over a count window (last `n` calls) or a time window (per-second buckets, fixed
//!   memory), once a minimum number of calls is in it; a slow-call rate. Counts belong to the
//!   closed cycle (generation) they were taken in: a late result never lands in a later cycle.
//! - **Open**: calls fail fast with [`CircuitOpen`]; the inner service is neither called nor
//!   polled for readiness. The open duration is fixed or doubles on repeated trips, with jitter
//!   drawn from an injectable [`JitterRng`], up to a cap; a tripping failure that carries the
//!   upstream's `Retry-After` (a 503, say) may lengthen it, within a cap, never shorten it.
//! - **Half-open**: after the open duration, at most [`max_probes`](BreakerConfigBuilder::max_probes)
//!   probes are in flight at once; the rest fail fast. Enough successes close the breaker, one
//!   failure re-opens it (for longer). A probe future that is dropped gives its permit back; a
//!   probe that never answers re-opens the breaker after the probe timeout.
//!
//! State lives in one atomic word holding the state, mode, probe counts and a **generation**
//! that every state change bumps; every transition is a compare-and-swap on it. So the open →
//! half-open race admits exactly the permitted probes (unlike Resilience4j #1432), and a late
//! result from an earlier generation changes nothing. Open and probe deadlines are installed by
//! compare-and-swap tagged with their generation, so a hung probe always times out. With a
//! count window the closed path takes no lock: one atomic load to admit, a few loads to record a
//! success (a time window takes a short lock per call).
//!
//! [`BreakerHandle`] reads state and [counts](BreakerCounts) and overrides it (force open, force
//! closed, disabled, metrics-only, reset). State changes are reported to an
//! [`on_state_change`](BreakerConfigBuilder::on_state_change) callback, as `tracing` events, and
//! (feature `metrics`) as `tollway_breaker_calls_total{breaker,result}`,
//! `tollway_breaker_state{breaker}` (0 closed, 1 open, 2 half-open),
//! `tollway_breaker_transitions_total{breaker,from,to}` and
//! `tollway_breaker_rejected_total{breaker}`. Metric handles are registered when a breaker is
//! made, so install the metrics recorder before building layers.
//!
//! [`KeyedBreakerLayer`] keeps one breaker per request authority (or per a key you compute) in a
//! bounded registry that never evicts an open breaker to make room.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use tollway_breaker::{BoxError, BreakerConfig, BreakerLayer, CircuitOpen, OpenDuration, State};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let config = BreakerConfig::builder()
//!     .consecutive_failures(2)
//!     .open_duration(OpenDuration::fixed(Duration::from_secs(10)))
//!     .build()?;
//! let layer = BreakerLayer::new(config);
//! let handle = layer.handle();
//! let upstream = service_fn(|_req: Request<()>| async {
//!     Ok::<_, BoxError>(Response::builder().status(StatusCode::BAD_GATEWAY).body(())?)
//! });
//! let mut service = layer.layer(upstream);
//!
//! for _ in 0..2 {
//!     let response = service.ready().await?.call(Request::new(())).await?;
//!     assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
//! }
//! assert_eq!(handle.state(), State::Open);
//!
//! let error = service.ready().await?.call(Request::new(())).await.unwrap_err();
//! let open = error.downcast_ref::<CircuitOpen>().expect("fails fast");
//! assert!(open.retry_after() <= Duration::from_secs(10));
//! # Ok(())
//! # }
//! ```
//!
//! # Where to put it
//!
//! Below a retry layer (so each attempt is judged and a [`CircuitOpen`] is not retried: core's
//! classification marks it a local rejection) and above the timeout (so timeouts count as
//! failures). With a `Buffer` above it, rejections still come back as ready errors from `call`.

mod circuit;
mod config;
mod error;
mod event;
mod future;
mod handle;
mod hot;
mod keyed;
mod layer;
mod metrics;
mod service;
mod sync;
mod window;
mod word;

pub use circuit::BreakerCounts;
pub use config::{
    BreakerConfig, BreakerConfigBuilder, FailureWindow, MAX_COUNT_WINDOW, MAX_PROBES,
    MAX_TIME_WINDOW_SECS, OpenDuration,
};
pub use error::ConfigError;
pub use event::{Mode, Reason, State, StateChange};
pub use future::ResponseFuture;
pub use handle::BreakerHandle;
pub use keyed::{BreakerKey, ByAuthority, KeyedBreaker, KeyedBreakerHandle, KeyedBreakerLayer};
pub use layer::BreakerLayer;
pub use service::Breaker;
pub use tollway_core::{BoxError, CircuitOpen, JitterRng};
