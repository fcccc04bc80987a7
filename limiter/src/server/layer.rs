//! [`ServerLimiterLayer`] and its builder.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tollway_core::HeaderError;
use tower::Layer;

use super::concurrency::{ConcurrencyLimit, InFlight};
use super::headers::HeaderOptions;
use super::limits::{Limit, Limits};
use super::priority::{Admission, PriorityAdmission};
use super::rejection::Rejection;
use super::service::ServerLimiter;
use crate::clock::{LimiterClock, QuantaClock};

/// Keys remembered per limit unless [`max_keys`](ServerLimiterBuilder::max_keys) says otherwise.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// What every [`ServerLimiter`] made by one layer shares.
pub(crate) struct Shared<C: LimiterClock> {
    pub(crate) limits: Limits<C>,
    pub(crate) headers: HeaderOptions,
    pub(crate) rejection: Rejection,
    pub(crate) concurrency: Option<(ConcurrencyLimit, Arc<InFlight>)>,
    pub(crate) priority: Option<(PriorityAdmission, Arc<Admission>)>,
    pub(crate) shadow: bool,
    pub(crate) clock: C,
}

/// Protects a service (an axum `Router`) with per-key rate limits, per-key concurrency and
/// priority admission. Clones share every bucket, counter and queue.
///
/// See [the module docs](crate::server) for an example.
pub struct ServerLimiterLayer<C: LimiterClock = QuantaClock> {
    pub(crate) shared: Arc<Shared<C>>,
}

impl<C: LimiterClock> Clone for ServerLimiterLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: LimiterClock> fmt::Debug for ServerLimiterLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerLimiterLayer")
            .field("limits", &self.shared.limits)
            .field("shadow", &self.shared.shadow)
            .finish_non_exhaustive()
    }
}

/// What shadow mode saw: refusals it let through, and admissions that left a policy nearly
/// used up (at or below 10% of its quota).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShadowReport {
    /// Requests that enforcement would have refused (rate, concurrency or queue).
    pub would_reject: u64,
    /// Admitted requests after which some policy had at most 10% left.
    pub near_limit: u64,
}

impl ServerLimiterLayer<QuantaClock> {
    /// Starts a layer: no limit, default headers and rejection, enforcing.
    pub fn builder() -> ServerLimiterBuilder<QuantaClock> {
        ServerLimiterBuilder {
            limits: Vec::new(),
            max_keys: NonZeroUsize::new(DEFAULT_MAX_KEYS).unwrap_or(NonZeroUsize::MIN),
            clock: QuantaClock::new(),
            headers: HeaderOptions::default(),
            rejection: Rejection::default(),
            concurrency: None,
            priority: None,
            shadow: false,
        }
    }
}

impl<C: LimiterClock> ServerLimiterLayer<C> {
    /// Keys the rate limits remember now, across every limit (the
    /// `tollway_limiter_tracked_keys` gauge).
    pub fn tracked_keys(&self) -> usize {
        self.shared.limits.tracked_keys()
    }

    /// The most keys the rate limits ever remember: each limit's `max_keys` rounded up to a
    /// multiple of 32, summed.
    pub fn key_bound(&self) -> usize {
        self.shared.limits.key_bound()
    }

    /// Keys the rate limits' maps have room for without growing: what their memory is sized
    /// for. It stays under four times [`key_bound`](Self::key_bound) however many distinct
    /// keys arrive.
    pub fn key_capacity(&self) -> usize {
        self.shared.limits.map_capacity()
    }

    /// What shadow mode counted. Enforcing layers count too: `would_reject` is then the
    /// number of refusals, and `near_limit` is counted whenever policy state is read (policy
    /// headers on, or shadow mode).
    pub fn shadow_report(&self) -> ShadowReport {
        ShadowReport {
            would_reject: self.shared.limits.would_reject.load(Relaxed),
            near_limit: self.shared.limits.near_limit.load(Relaxed),
        }
    }

    /// Keys with a request in progress under the concurrency limit.
    pub fn in_flight_keys(&self) -> usize {
        self.shared
            .concurrency
            .as_ref()
            .map_or(0, |(_, in_flight)| in_flight.keys())
    }

    /// Requests holding a priority-admission slot, and requests waiting for one.
    pub fn queue_load(&self) -> (usize, usize) {
        self.shared
            .priority
            .as_ref()
            .map_or((0, 0), |(_, admission)| admission.load())
    }
}

impl<S, C: LimiterClock> Layer<S> for ServerLimiterLayer<C> {
    type Service = ServerLimiter<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerLimiter::new(inner, Arc::clone(&self.shared))
    }
}

/// Configures a [`ServerLimiterLayer`]; start with [`ServerLimiterLayer::builder`].
pub struct ServerLimiterBuilder<C> {
    limits: Vec<Limit>,
    max_keys: NonZeroUsize,
    clock: C,
    headers: HeaderOptions,
    rejection: Rejection,
    concurrency: Option<ConcurrencyLimit>,
    priority: Option<PriorityAdmission>,
    shadow: bool,
}

impl<C> fmt::Debug for ServerLimiterBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerLimiterBuilder")
            .field("limits", &self.limits)
            .field("max_keys", &self.max_keys)
            .field("headers", &self.headers)
            .field("shadow", &self.shadow)
            .finish_non_exhaustive()
    }
}

impl<C: LimiterClock + Default> ServerLimiterBuilder<C> {
    /// Adds a rate limit. Every limit that applies to a request must admit it; if one refuses,
    /// the others take nothing (all-or-nothing).
    #[must_use]
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// The most keys each limit remembers (default [`DEFAULT_MAX_KEYS`]). Keys whose buckets
    /// are full again are forgotten first, a slice at a time on the request path; when every
    /// key owes something, the least indebted goes.
    #[must_use]
    pub fn max_keys(mut self, max_keys: NonZeroUsize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Reads time from `clock` (tests: `FakeClock`, or `TokioClock` on tokio's paused clock).
    pub fn clock<C2: LimiterClock + Default>(self, clock: C2) -> ServerLimiterBuilder<C2> {
        ServerLimiterBuilder {
            limits: self.limits,
            max_keys: self.max_keys,
            clock,
            headers: self.headers,
            rejection: self.rejection,
            concurrency: self.concurrency,
            priority: self.priority,
            shadow: self.shadow,
        }
    }

    /// Which headers responses carry.
    #[must_use]
    pub const fn headers(mut self, headers: HeaderOptions) -> Self {
        self.headers = headers;
        self
    }

    /// The status and body of a rate-limit refusal (the body of the other refusals too).
    #[must_use]
    pub fn rejection(mut self, rejection: Rejection) -> Self {
        self.rejection = rejection;
        self
    }

    /// A per-key limit on requests in progress.
    #[must_use]
    pub fn concurrency(mut self, limit: ConcurrencyLimit) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// Priority admission: a bounded number of requests in progress, the rest queued by
    /// priority.
    #[must_use]
    pub fn priority(mut self, admission: PriorityAdmission) -> Self {
        self.priority = Some(admission);
        self
    }

    /// Shadow mode: check and count everything and write the headers, but refuse nothing.
    #[must_use]
    pub const fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// The layer; fails if a policy name cannot be written in a `RateLimit` header (it must
    /// be visible ASCII).
    pub fn build(self) -> Result<ServerLimiterLayer<C>, HeaderError> {
        let limits = Limits::build(self.limits, self.max_keys, &self.clock)?;
        Ok(ServerLimiterLayer {
            shared: Arc::new(Shared {
                limits,
                headers: self.headers,
                rejection: self.rejection,
                concurrency: self.concurrency.map(|c| (c, Arc::new(InFlight::default()))),
                priority: self.priority.map(|p| {
                    let admission = Admission::new(&p);
                    (p, admission)
                }),
                shadow: self.shadow,
                clock: self.clock,
            }),
        })
    }
}
