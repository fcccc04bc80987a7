//! [`ServerLimiterBuilder`]: how a [`ServerLimiterLayer`] is configured.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;

use super::concurrency::{ConcurrencyLimit, InFlight};
use super::error::InvalidPolicy;
use super::headers::HeaderOptions;
use super::layer::ServerLimiterLayer;
use super::limits::{Limit, Limits};
use super::priority::{Admission, PriorityAdmission};
use super::rejection::Rejection;
use super::shared::Shared;
use crate::clock::{LimiterClock, QuantaClock};

/// Keys remembered per limit unless [`max_keys`](ServerLimiterBuilder::max_keys) says otherwise.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

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
    /// How to reach a fleet's store (feature `redis`: set by `redis`).
    pub(crate) remote: Option<super::remote::Connect>,
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

impl ServerLimiterBuilder<QuantaClock> {
    pub(crate) fn new() -> Self {
        Self {
            limits: Vec::new(),
            max_keys: NonZeroUsize::new(DEFAULT_MAX_KEYS).unwrap_or(NonZeroUsize::MIN),
            clock: QuantaClock::new(),
            headers: HeaderOptions::default(),
            rejection: Rejection::default(),
            concurrency: None,
            priority: None,
            shadow: false,
            remote: None,
        }
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

    /// The most keys each limit remembers (default [`DEFAULT_MAX_KEYS`]). A full limit makes
    /// room for a new key by forgetting one of a few keys sampled at random: one whose bucket
    /// is full again if the sample has one (forgetting it changes nothing), else the least
    /// indebted. Idle keys are also forgotten a slice at a time on the request path. The
    /// memory this bounds is [`ServerLimiterLayer::memory_bound`].
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
            remote: self.remote,
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
    /// be visible ASCII) or two policies share a name.
    pub fn build(self) -> Result<ServerLimiterLayer<C>, InvalidPolicy> {
        let remote = match self.remote {
            Some(connect) => {
                // Limits that fail open are checked here at their local quota while the
                // store is down.
                let local = Limits::build(
                    super::remote::local_limits(&self.limits),
                    self.max_keys,
                    &self.clock,
                )?;
                Some(connect(super::remote::specs(&self.limits), Box::new(local)))
            }
            None => None,
        };
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
                remote,
            }),
        })
    }
}
