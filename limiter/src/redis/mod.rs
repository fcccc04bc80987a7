//! Fleet mode: quotas kept in Redis and shared by every process that uses the same key prefix
//! (feature `redis`).
//!
//! A fleet limiter is an ordinary [`RateLimiter`] built with
//! [`RateLimiterBuilder::redis`]: the [`Limiter`](crate::Limiter) layer, `acquire` and the
//! builder's bounds work as they do in memory. Only the state moves:
//!
//! - Every decision is one Lua script run (`EVALSHA`, loaded again when Redis answers
//!   `NOSCRIPT`) that admits a request under **all** the limiter's quotas or none, as the
//!   in-memory GCRA does. It keeps each quota's theoretical arrival time (TAT) in its own key,
//!   reads `now` from Redis's `TIME` (so processes with skewed clocks agree), lets a key expire
//!   when its bucket is full again (an idle limiter leaves nothing in Redis), and answers a
//!   refusal with how long until the request would fit.
//! - Callers of one process queue first come, first served; only the head of the queue asks
//!   Redis, and when refused sleeps on tokio's timer for the retry-after Redis returned plus a
//!   little random jitter (so that the processes of a fleet do not ask again all at once).
//! - Optionally, [`lease`](RateLimiterBuilder::lease) takes several permits per round trip, each
//!   at the due time Redis's schedule gives it and spent within 5 ms of it or dropped: fewer
//!   round trips, and still never faster than the quotas in any window.
//! - If Redis cannot be reached, times out ([`store_timeout`](RateLimiterBuilder::store_timeout),
//!   1 s by default) or answers an error, the limiter **fails closed**: the request is refused
//!   and the [`Limiter`](crate::Limiter) service returns [`StoreUnavailable`](crate::StoreUnavailable). With
//!   [`fail_open_to_local`](RateLimiterBuilder::fail_open_to_local) it admits through a local
//!   in-memory quota instead (pick one that is this process's share of the fleet's limit). For
//!   [`store_retry`](RateLimiterBuilder::store_retry) after a failure (1 s by default) no round
//!   trip is tried: callers are refused, or admitted locally, at once.
//!
//! What stays local: `check`, `check_n` and `peek` cannot ask Redis without waiting, so on a
//! fleet limiter they refuse (with one interval as the retry-after) unless the store is down
//! and the limiter fails open; use [`acquire`](RateLimiter::acquire) or the layer. Pauses
//! ordered by the upstream ([`Adaptive`](crate::Adaptive)) and AIMD rate changes apply to this
//! process's callers (the quotas sent with each request are the current ones). A refund is not
//! sent to Redis: a permit taken and not used is lost, which never makes the fleet faster.
//!
//! ```no_run
//! use tollway_limiter::redis::aio::ConnectionManager;
//! use tollway_limiter::{LimiterLayer, Quota, RateLimiter};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = tollway_limiter::redis::Client::open("redis://127.0.0.1/")?;
//! let connection = ConnectionManager::new(client).await?;
//! // 20 requests per second for the whole fleet; 5 per second in this process if Redis is down.
//! let limiter = RateLimiter::builder(Quota::per_second(20).burst(1))
//!     .fail_open_to_local(Quota::per_second(5).burst(1))
//!     .redis(connection, "billing-api");
//! let layer = LimiterLayer::from_limiter(limiter);
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```

mod error;
mod store;
mod wait;

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use redis::aio::ConnectionManager;

pub(crate) use store::Store;
pub(crate) use wait::{Outcome, Remote, RemoteWait};

use crate::builder::RateLimiterBuilder;
use crate::clock::LimiterClock;
use crate::limiter::RateLimiter;
use crate::quota::Quota;

/// Fleet-mode settings a builder carries until [`RateLimiterBuilder::redis`].
#[derive(Debug, Clone)]
pub(crate) struct FleetOptions {
    fail_open: Option<Quota>,
    lease: Option<(NonZeroU32, Duration)>,
    timeout: Duration,
    retry: Duration,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            fail_open: None,
            lease: None,
            timeout: Duration::from_secs(1),
            retry: Duration::from_secs(1),
        }
    }
}

impl<C: LimiterClock> RateLimiterBuilder<C> {
    /// Fleet mode: while Redis is unavailable, admit through a local in-memory limiter with
    /// `quota` instead of refusing (the default is to fail closed). Pick this process's share
    /// of the fleet's limit. Ignored by an in-memory limiter.
    #[must_use]
    pub fn fail_open_to_local(mut self, quota: Quota) -> Self {
        self.fleet.fail_open = Some(quota);
        self
    }

    /// Fleet mode: takes up to `requests` requests' worth of permits per round trip to Redis
    /// and spends them in this process, to cut round trips (default: one per round trip).
    ///
    /// A lease is **time-bounded**: Redis grants the further requests at the due times its
    /// schedule gives them (the times at which they would have been admitted one by one), only
    /// those due within `within` from now. Each may be sent from its due time until 5 ms after
    /// it; one not spent by then is dropped. A lease therefore never lets the fleet go faster
    /// than its quotas nor be spent in a burst later; the price is that permits leased by a
    /// process that then has nothing to send are lost to the fleet. Keep `within` short (a few
    /// intervals) and `requests` near the number of callers that wait at once in a process.
    #[must_use]
    pub fn lease(mut self, requests: NonZeroU32, within: Duration) -> Self {
        self.fleet.lease = Some((requests, within));
        self
    }

    /// Fleet mode: how long one round trip to Redis may take, reconnection included, before it
    /// counts as a failure (default 1 s).
    #[must_use]
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.fleet.timeout = timeout;
        self
    }

    /// Fleet mode: after a failure, how long the store is taken as down, answering callers at
    /// once (refused, or admitted locally) without a round trip (default 1 s).
    #[must_use]
    pub fn store_retry(mut self, retry: Duration) -> Self {
        self.fleet.retry = retry;
        self
    }
}

impl<C: LimiterClock + Default> RateLimiterBuilder<C> {
    /// The limiter, in fleet mode: its quotas live in Redis under keys that start with
    /// `{prefix}` (a hash tag, so one limiter's keys share a Redis Cluster slot) and are shared
    /// by every limiter, in any process, built with the same prefix and the same quotas. See
    /// the [module docs](crate::fleet).
    pub fn redis(self, connection: ConnectionManager, prefix: impl AsRef<str>) -> RateLimiter<C> {
        let clock = self.clock_or(C::default);
        let store = Store::new(
            connection,
            prefix.as_ref(),
            self.fleet.timeout,
            self.fleet.retry,
        );
        let fallback = self.fleet.fail_open.map(|quota| {
            let mut local = self.clone();
            local.fleet.fail_open = None;
            local.keep_only(quota);
            local.build_with(clock.clone()).shared
        });
        let remote = Remote {
            store: Arc::new(store),
            lease: self.fleet.lease,
            leased: Mutex::new(VecDeque::new()),
            fallback,
        };
        self.build_remote(clock, remote)
    }
}
