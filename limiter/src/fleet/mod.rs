//! Fleet mode: quotas kept in Redis and shared by every process that uses the same key prefix
//! (feature `redis`).
//!
//! A fleet limiter is an ordinary [`RateLimiter`] built with
//! [`RateLimiterBuilder::redis`]: the [`Limiter`](crate::Limiter) layer, `acquire` and the
//! builder's bounds work as they do in memory. Only the state moves:
//!
//! - Every decision is one Lua script run (`EVALSHA`, loaded again when Redis answers
//!   `NOSCRIPT`, as after a failover) that admits a request under **all** the limiter's quotas
//!   or none, as the in-memory GCRA does. It keeps each quota's theoretical arrival time (TAT) in its own key,
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
//!   and the [`Limiter`](crate::Limiter) service returns [`StoreUnavailable`]. With
//!   [`fail_open_to_local`](RateLimiterBuilder::fail_open_to_local) it admits through a local
//!   in-memory quota instead (pick one that is this process's share of the fleet's limit). For
//!   [`store_retry`](RateLimiterBuilder::store_retry) after a failure (1 s by default) no round
//!   trip is tried: callers are refused, or admitted locally, at once.
//!
//! - **Any connection**: [`redis`](RateLimiterBuilder::redis) takes any
//!   `redis::aio::ConnectionLike + Clone + Send + Sync`: a `ConnectionManager` to one server,
//!   or a Redis Cluster's async connection (`redis::cluster_async::ClusterConnection`, feature
//!   `cluster-async` of the `redis` crate). Every key of one limiter carries the hash tag
//!   `{prefix}`, so one script reads and writes them in one slot.
//! - **Pauses reach the fleet**: a pause ([`pause`](RateLimiter::pause), or one ordered by the
//!   upstream through [`Adaptive`](crate::Adaptive): a 429's `Retry-After`) holds this
//!   process's callers at once, and is written to Redis (every quota's bucket emptied until it
//!   ends), so the other processes wait it out too instead of each drawing its own 429.
//!
//! The limiter is a [`RateLimiter<C, RedisStore<C>>`](RedisStore) ([`FleetLimiter`]): its
//! store is Redis, and the in-memory limiter's hot path is compiled without it.
//!
//! What stays local: `check`, `check_n` and `peek` cannot ask Redis without waiting, so on a
//! fleet limiter they refuse (with one interval as the retry-after) unless the store is down
//! and the limiter fails open; use [`acquire`](RateLimiter::acquire) or the layer. AIMD rate
//! changes apply to this process's callers (the quotas sent with each request are the current
//! ones). A refund is not sent to Redis: a permit taken and not used is lost, which never
//! makes the fleet faster.
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

pub(crate) mod client;
pub(crate) mod error;
mod wait;

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::ConnectionLike;
use tollway_core::{BoxError, RateLimited, StoreUnavailable};

use self::client::Client;
use self::wait::{Leased, Outcome, RemoteWait};
use crate::builder::RateLimiterBuilder;
use crate::clock::{LimiterClock, QuantaClock};
use crate::gcra::Grant;
use crate::limiter::{RateLimiter, Shared};
use crate::metrics;
use crate::queue::{Acquire, WaitQueue};
use crate::store::Enqueue;
use crate::store::backend::Backend;
use crate::sync::Ordering::Relaxed;

/// A fleet limiter: a [`RateLimiter`] whose state is in Redis.
pub type FleetLimiter<C = QuantaClock> = RateLimiter<C, RedisStore<C>>;

/// Where a fleet limiter's state lives: Redis, under a key prefix every process of the fleet
/// shares, with this process's lease of due times and its local fallback. Built by
/// [`RateLimiterBuilder::redis`]; see the [module docs](self).
pub struct RedisStore<C: LimiterClock = QuantaClock> {
    client: Arc<Client>,
    /// Leasing: up to this many requests per round trip, due within this horizon.
    lease: Option<(NonZeroU32, Duration)>,
    /// Requests leased and not yet spent, in due order.
    leased: Mutex<VecDeque<Leased>>,
    /// Admits while the store is down, if the limiter fails open.
    fallback: Option<RateLimiter<C>>,
    /// The end of the longest pause told to Redis, in the limiter's nanoseconds.
    pause_sent: std::sync::atomic::AtomicU64,
}

impl<C: LimiterClock> fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("client", &self.client)
            .field("lease", &self.lease)
            .field("fails_open", &self.fallback.is_some())
            .finish()
    }
}

impl<C: LimiterClock> RateLimiterBuilder<C> {
    /// Fleet mode: while Redis is unavailable, admit through a local in-memory limiter with
    /// `quota` instead of refusing (the default is to fail closed). Pick this process's share
    /// of the fleet's limit. Ignored by an in-memory limiter.
    #[must_use]
    pub fn fail_open_to_local(mut self, quota: crate::Quota) -> Self {
        self.shared_options.fail_open = Some(quota);
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
        self.shared_options.lease = Some((requests, within));
        self
    }

    /// Fleet mode: how long one round trip to Redis may take, reconnection included, before it
    /// counts as a failure (default 1 s).
    #[must_use]
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.shared_options.timeout = timeout;
        self
    }

    /// Fleet mode: after a failure, how long the store is taken as down, answering callers at
    /// once (refused, or admitted locally) without a round trip (default 1 s).
    #[must_use]
    pub fn store_retry(mut self, retry: Duration) -> Self {
        self.shared_options.retry = retry;
        self
    }
}

impl<C: LimiterClock + Default> RateLimiterBuilder<C> {
    /// The limiter, in fleet mode: its quotas live in Redis under keys that start with
    /// `{prefix}` (a hash tag, so one limiter's keys share a Redis Cluster slot) and are shared
    /// by every limiter, in any process, built with the same prefix and the same quotas.
    ///
    /// `connection` is any `redis::aio::ConnectionLike + Clone + Send + Sync`: a
    /// `ConnectionManager`, or a cluster's `ClusterConnection`. Needs a tokio runtime. See the
    /// [module docs](crate::fleet).
    pub fn redis<Conn>(self, connection: Conn, prefix: impl AsRef<str>) -> FleetLimiter<C>
    where
        Conn: ConnectionLike + Clone + Send + Sync + 'static,
    {
        let clock = self.clock_or(C::default);
        let options = &self.shared_options;
        let client = Client::new(
            connection,
            prefix.as_ref(),
            self.quotas.len(),
            options.timeout,
            options.retry,
        );
        let fallback = options.fail_open.map(|quota| {
            let mut local = self.clone();
            local.shared_options.fail_open = None;
            local.keep_only(quota);
            local.build_with(clock.clone())
        });
        let store = RedisStore {
            client: Arc::new(client),
            lease: options.lease,
            leased: Mutex::new(VecDeque::new()),
            fallback,
            pause_sent: std::sync::atomic::AtomicU64::new(0),
        };
        self.build_with_store(clock, store)
    }
}

impl<C: LimiterClock> Acquire<C, RedisStore<C>> {
    /// The store error behind an `Err` this future resolved to, if the limiter failed closed
    /// because Redis was unavailable (the [`Limiter`](crate::Limiter) service returns it
    /// instead of the `RateLimited`). Poll the future by reference to read it:
    /// `(&mut acquire).await`.
    pub fn take_store_error(&mut self) -> Option<StoreUnavailable> {
        self.head.store_error.take()
    }
}

#[allow(private_interfaces)]
impl<C: LimiterClock> Backend<C> for RedisStore<C> {
    type Head = RemoteWait<C>;

    fn try_now(shared: &Shared<C, Self>, now: u64, cost: u32) -> Result<Grant, u64> {
        // A pause holds leased permits too: they were granted before the upstream said stop.
        let paused_until = shared.paused_until.load(Relaxed);
        if paused_until > now {
            return Err(paused_until - now);
        }
        let queue_empty = shared.queued.load(Relaxed) == 0;
        shared
            .store
            .try_now(cost, shared.gcra.first_interval(), queue_empty)
            .map(|()| Grant::NONE)
    }

    fn peek(shared: &Shared<C, Self>, _now: u64, cost: u32) -> u64 {
        shared.store.peek(cost, shared.gcra.first_interval())
    }

    fn available(shared: &Shared<C, Self>, _now: u64) -> u64 {
        shared.store.available()
    }

    fn enqueue(_shared: &Shared<C, Self>, _queue: &WaitQueue, _now: u64, _cost: u32) -> Enqueue {
        // Only Redis knows the wait: the head asks it.
        Enqueue::Ask
    }

    fn poll_queued(
        acquire: &mut Acquire<C, Self>,
        cx: &mut Context<'_>,
        ticket: u64,
    ) -> Poll<Result<(), RateLimited>> {
        {
            let shared = &acquire.limiter.shared;
            let mut queue = shared.queue.lock();
            queue.set_waker(ticket, cx.waker());
            if !queue.is_head(ticket) {
                return Poll::Pending;
            }
        }
        let outcome = ready!(RemoteWait::poll(
            &mut acquire.head,
            cx,
            &acquire.limiter,
            acquire.cost,
            acquire.queued_at,
            acquire.max_wait,
        ));
        acquire.leave();
        match outcome {
            Outcome::Admitted => {
                let shared = &acquire.limiter.shared;
                let waited = shared.now().saturating_sub(acquire.queued_at);
                metrics::waited(Duration::from_nanos(waited));
                acquire.admit(Grant::NONE)
            }
            Outcome::Refused(refused) => acquire.refuse(refused),
        }
    }

    fn take_failure(head: &mut Self::Head) -> Option<BoxError> {
        head.store_error
            .take()
            .map(|error| Box::new(error) as BoxError)
    }

    fn paused(shared: &Shared<C, Self>, duration: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "fleet limiter: no tokio runtime to share a pause on; it holds this process only"
            );
            return;
        };
        if shared.store.client.known_down().is_some() {
            return;
        }
        // Many responses in flight may order the same pause: tell Redis only of a longer one.
        let until = shared
            .now()
            .saturating_add(crate::clock::duration_nanos(duration));
        if shared.store.pause_sent.fetch_max(until, Relaxed) >= until {
            return;
        }
        let client = Arc::clone(&shared.store.client);
        let quotas = shared.rates.lock().quotas.clone();
        runtime.spawn(async move {
            if let Err(error) = client.pause(duration, &quotas).await {
                tracing::debug!(%error, "the pause reached this process only");
            }
        });
    }
}
