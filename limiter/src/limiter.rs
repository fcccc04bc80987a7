//! [`RateLimiter`]: the shareable limiter handle, and its builder.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use tollway_core::headers::{HintSource, RateLimitHint};
use tollway_core::{Classify, OutcomeKind, RateLimited};

use crate::adaptive::Adaptive;
use crate::clock::{LimiterClock, QuantaClock, duration_nanos};
use crate::error::{ExceedsBurst, NoSuchQuota};
use crate::gcra::Gcra;
use crate::metrics;
use crate::queue::{Acquire, WaitQueue};
use crate::quota::Quota;

/// A rate limiter: one or more [`Quota`]s admitted all-or-nothing, a fair queue of waiters,
/// and optional adaptation to the upstream.
///
/// Cheap to clone: clones share one state. Use it directly ([`check`](Self::check),
/// [`acquire`](Self::acquire)) or through [`LimiterLayer`](crate::LimiterLayer).
///
/// ```
/// use std::num::NonZeroU32;
/// use tollway_limiter::{Quota, RateLimiter};
///
/// let per_second = Quota::per_second(NonZeroU32::new(11).unwrap());
/// let per_day = Quota::per_day(NonZeroU32::new(1_000_000).unwrap())
///     .with_burst(NonZeroU32::new(1_000).unwrap());
/// let limiter = RateLimiter::builder(per_second).quota(per_day).build();
///
/// assert!(limiter.check().is_ok());
/// let refused = limiter.check().unwrap_err(); // burst 1: the next one is ~91 ms away
/// assert!(refused.retry_after().as_millis() > 80);
/// assert!(limiter.peek().is_err(), "peeking consumes nothing, and says the same");
/// ```
pub struct RateLimiter<C: LimiterClock = QuantaClock> {
    pub(crate) shared: Arc<Shared<C>>,
}

impl<C: LimiterClock> Clone for RateLimiter<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: LimiterClock + fmt::Debug> fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("quotas", &self.quotas())
            .field("queued", &self.queued())
            .field("clock", &self.shared.clock)
            .finish_non_exhaustive()
    }
}

/// The hot fields come first, in one cache line: a `check` reads `queued` and the first quota
/// and, on a keyed limiter (10,000 of these), touches no other line of this struct.
#[repr(C, align(64))]
pub(crate) struct Shared<C> {
    /// Waiters in the queue; read without the lock so that the fast path stays lock-free.
    pub(crate) queued: AtomicUsize,
    pub(crate) gcra: Gcra,
    pub(crate) clock: C,
    origin: Instant,
    pub(crate) queue: Mutex<WaitQueue>,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) max_queue: usize,
    adaptive: Option<Adaptive>,
    paused_until: AtomicU64,
    /// Serialises quota changes; holds what the user configured and what AIMD runs at.
    rates: Mutex<Rates>,
    /// Fleet mode: the Redis store that decides instead of `gcra`.
    #[cfg(feature = "redis")]
    pub(crate) remote: Option<crate::fleet::Remote<C>>,
}

/// Set in `queued` for the life of a fleet limiter: the lock-free fast path, which admits only
/// while `queued` is zero, then always falls through to the cold path that defers to Redis.
/// The in-memory hot path thus pays nothing for fleet mode: not even a branch.
pub(crate) const FLEET: usize = 1 << (usize::BITS - 1);

struct Rates {
    /// The first quota as configured (AIMD's ceiling).
    configured: Quota,
    /// The first quota's current rate in requests per second.
    current_per_second: f64,
    /// Rate limits seen before this time belong to the last decrease.
    decrease_guard_until: u64,
    /// The rate that drew the last rate limit (AIMD probes gently near it).
    limited_at: f64,
}

impl<C: LimiterClock> Shared<C> {
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.clock.nanos_since(self.origin)
    }

    /// A permit without waiting, if no one is queued and every quota admits it now.
    #[inline]
    pub(crate) fn try_acquire_fast(&self, cost: u32) -> Result<(), u64> {
        self.try_acquire_at(self.now(), cost)
    }

    /// [`try_acquire_fast`](Self::try_acquire_fast) at `now` (nanoseconds since the origin).
    #[inline]
    pub(crate) fn try_acquire_at(&self, now: u64, cost: u32) -> Result<(), u64> {
        if self.queued.load(Relaxed) != 0 {
            #[cfg(feature = "redis")]
            if let Some(remote) = &self.remote {
                let queue_empty = self.queued.load(Relaxed) & !FLEET == 0;
                return remote.try_now(cost, self.gcra.first().interval_nanos(), queue_empty);
            }
            let queued_cost = self.queue.lock().queued_cost();
            return Err(self.gcra.wait(now, queued_cost + u64::from(cost)).max(1));
        }
        self.gcra.try_acquire(now, cost)
    }

    pub(crate) fn wake_head(&self) {
        self.queue.lock().wake_head();
    }
}

impl RateLimiter<QuantaClock> {
    /// A limiter with one quota, no bounds on waiting, no adaptation.
    pub fn new(quota: Quota) -> Self {
        Self::builder(quota).build()
    }

    /// Starts a limiter whose first quota is `quota`.
    pub fn builder(quota: Quota) -> RateLimiterBuilder<QuantaClock> {
        RateLimiterBuilder {
            quotas: vec![quota],
            clock: None,
            max_wait: None,
            max_queue: usize::MAX,
            adaptive: None,
            #[cfg(feature = "redis")]
            fleet: crate::fleet::FleetOptions::default(),
        }
    }
}

impl<C: LimiterClock> RateLimiter<C> {
    /// Takes one permit now, or says how long until one is due. Fair to waiters: while any
    /// caller is queued in [`acquire`](Self::acquire), `check` refuses.
    #[inline]
    pub fn check(&self) -> Result<(), RateLimited> {
        match self.shared.try_acquire_fast(1) {
            Ok(()) => {
                metrics::admitted();
                Ok(())
            }
            Err(wait) => Err(RateLimited::new(Duration::from_nanos(wait))),
        }
    }

    /// Takes `cost` permits from every quota now, or none. The outer error says that `cost`
    /// exceeds a quota's burst and can never be admitted.
    pub fn check_n(&self, cost: NonZeroU32) -> Result<Result<(), RateLimited>, ExceedsBurst> {
        self.fits(cost.get())?;
        Ok(match self.shared.try_acquire_fast(cost.get()) {
            Ok(()) => {
                metrics::admitted();
                Ok(())
            }
            Err(wait) => Err(RateLimited::new(Duration::from_nanos(wait))),
        })
    }

    /// What [`check`](Self::check) would answer now, without taking anything.
    pub fn peek(&self) -> Result<(), RateLimited> {
        self.peek_n(NonZeroU32::MIN)
    }

    /// What [`check_n`](Self::check_n) would answer now for `cost`, without taking anything
    /// (a cost above the burst reads as never: `Duration::MAX`).
    pub fn peek_n(&self, cost: NonZeroU32) -> Result<(), RateLimited> {
        if self.fits(cost.get()).is_err() {
            return Err(RateLimited::new(Duration::MAX));
        }
        let shared = &*self.shared;
        let queued = if shared.queued.load(Relaxed) == 0 {
            0
        } else {
            #[cfg(feature = "redis")]
            if let Some(remote) = &shared.remote {
                let interval = shared.gcra.first().interval_nanos();
                return remote.peek(cost, interval);
            }
            shared.queue.lock().queued_cost()
        };
        match shared
            .gcra
            .wait(shared.now(), queued + u64::from(cost.get()))
        {
            0 => Ok(()),
            wait => Err(RateLimited::new(Duration::from_nanos(wait))),
        }
    }

    /// How many cost-1 requests every quota would admit right now.
    /// On a fleet limiter: 0 (the count lives in Redis), or the local fallback's count while
    /// the store is down and the limiter fails open.
    pub fn available(&self) -> u64 {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.shared.remote {
            return remote.available();
        }
        self.shared.gcra.available(self.shared.now())
    }

    /// Gives back `n` permits that were taken but not used (the request was never sent). The
    /// bucket never holds more than its burst. A refund is exact in capacity; with a burst of
    /// 1, refunding a permit taken before later ones lets the next request go one interval
    /// early, so refund promptly.
    pub fn refund(&self, n: u32) {
        if n == 0 {
            return;
        }
        let shared = &*self.shared;
        shared.gcra.refund(n);
        // A refund never shortens a pause the upstream ordered.
        let paused_until = shared.paused_until.load(Relaxed);
        if paused_until > shared.now() {
            shared.gcra.pause_until(paused_until);
        }
        shared.wake_head();
    }

    /// Waits for one permit, first come first served. See [`Acquire`].
    pub fn acquire(&self) -> Acquire<C> {
        Acquire::new(self.clone(), 1)
    }

    /// Waits for `cost` permits from every quota, first come first served.
    pub fn acquire_n(&self, cost: NonZeroU32) -> Result<Acquire<C>, ExceedsBurst> {
        self.fits(cost.get())?;
        Ok(Acquire::new(self.clone(), cost.get()))
    }

    /// The quotas, first one first.
    pub fn quotas(&self) -> Vec<Quota> {
        self.shared.gcra.quotas()
    }

    /// How many callers are waiting in [`acquire`](Self::acquire).
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Relaxed) & !FLEET
    }

    /// Replaces quota `index` (0 is the first) at runtime, keeping its debt: requests already
    /// admitted still count, converted to the new rate. Waiters are served at the new rate at
    /// once.
    pub fn set_quota(&self, index: usize, quota: Quota) -> Result<(), NoSuchQuota> {
        let shared = &*self.shared;
        if index >= shared.gcra.len() {
            return Err(NoSuchQuota::new(index, shared.gcra.len()));
        }
        let mut rates = shared.rates.lock();
        shared.gcra.set_quota(index, quota, shared.now());
        if index == 0 {
            rates.configured = quota;
            rates.current_per_second = quota.per_second_f64();
            rates.limited_at = f64::INFINITY;
        }
        drop(rates);
        shared.wake_head();
        Ok(())
    }

    /// Sets the first quota to `per_second` requests per second, keeping its burst and its debt
    /// (for an API that reports its rate, such as a `GET /sys/balance` answering `"rate": 11`).
    pub fn set_rate(&self, per_second: NonZeroU32) {
        let burst = self
            .shared
            .gcra
            .quota(0)
            .map_or(NonZeroU32::MIN, |q| q.burst());
        let _ = self.set_quota(0, Quota::per_second(per_second).with_burst(burst));
    }

    /// The first quota's current rate in requests per second (lower than configured while AIMD
    /// is backing off).
    pub fn current_rate(&self) -> f64 {
        self.shared.rates.lock().current_per_second
    }

    /// Pauses every caller for `duration`: nothing is admitted until then, and afterwards the
    /// bucket starts empty, so callers resume one at a time at the steady rate.
    pub fn pause(&self, duration: Duration) {
        let shared = &*self.shared;
        let until = shared.now().saturating_add(duration_nanos(duration));
        shared.gcra.pause_until(until);
        shared.paused_until.fetch_max(until, Relaxed);
        // The head recomputes its wait now (and gives up at once if it would pass `max_wait`).
        shared.wake_head();
        metrics::paused();
        tracing::debug!(?duration, "rate limiter paused");
    }

    /// How long the current pause has left, if one is in force.
    pub fn paused_for(&self) -> Option<Duration> {
        let shared = &*self.shared;
        let left = shared
            .paused_until
            .load(Relaxed)
            .saturating_sub(shared.now());
        (left > 0).then(|| Duration::from_nanos(left))
    }

    /// Feeds a response to the limiter's [`Adaptive`] settings (the [`Limiter`](crate::Limiter)
    /// service does this for every response). Does nothing if the limiter was built without
    /// them.
    pub fn observe_response(&self, status: StatusCode, headers: &HeaderMap) {
        let Some(adaptive) = &self.shared.adaptive else {
            return;
        };
        let outcome = adaptive.classifier.classify_response(status, headers);
        let wall = || self.shared.clock.system_now();
        match outcome.kind() {
            OutcomeKind::RateLimited => {
                let pause = outcome
                    .retry_delay(wall())
                    .unwrap_or(adaptive.default_pause)
                    .min(adaptive.max_pause);
                self.pause(pause);
                self.aimd_decrease(pause);
            }
            OutcomeKind::Success => {
                if let Some(hint) = RateLimitHint::from_headers(headers)
                    .filter(|h| h.source() != HintSource::RetryAfter)
                {
                    self.pause(hint.delay_from(wall()).min(adaptive.max_pause));
                }
                self.aimd_increase();
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                if let Some(delay) = outcome.retry_delay(wall()) {
                    self.pause(delay.min(adaptive.max_pause));
                }
            }
            _ => {}
        }
    }

    fn aimd_decrease(&self, pause: Duration) {
        let shared = &*self.shared;
        let Some(aimd) = shared.adaptive.as_ref().and_then(|a| a.aimd) else {
            return;
        };
        let now = shared.now();
        let mut rates = shared.rates.lock();
        if now < rates.decrease_guard_until {
            return;
        }
        let configured = rates.configured.per_second_f64();
        rates.limited_at = rates.current_per_second;
        let rate = aimd.decreased(rates.current_per_second, configured);
        rates.current_per_second = rate;
        let interval = duration_nanos(Duration::from_secs_f64(1.0 / rate));
        rates.decrease_guard_until = now
            .saturating_add(duration_nanos(pause))
            .saturating_add(interval);
        let quota = Quota::from_interval_nanos(interval, rates.configured.burst());
        shared.gcra.set_quota(0, quota, now);
        drop(rates);
        tracing::debug!(rate, "rate limiter backing off");
    }

    fn aimd_increase(&self) {
        let shared = &*self.shared;
        let Some(aimd) = shared.adaptive.as_ref().and_then(|a| a.aimd) else {
            return;
        };
        let mut rates = shared.rates.lock();
        let configured = rates.configured.per_second_f64();
        if rates.current_per_second >= configured {
            return;
        }
        let rate = aimd.increased(rates.current_per_second, configured, rates.limited_at);
        rates.current_per_second = rate;
        let quota = if rate >= configured {
            rates.configured
        } else {
            let interval = duration_nanos(Duration::from_secs_f64(1.0 / rate));
            Quota::from_interval_nanos(interval, rates.configured.burst())
        };
        shared.gcra.set_quota(0, quota, shared.now());
    }

    pub(crate) fn is_adaptive(&self) -> bool {
        self.shared.adaptive.is_some()
    }

    fn fits(&self, cost: u32) -> Result<(), ExceedsBurst> {
        let burst = self.shared.gcra.max_cost();
        if cost > burst {
            return Err(ExceedsBurst::new(cost, burst));
        }
        Ok(())
    }
}

/// Builds a [`RateLimiter`]; start with [`RateLimiter::builder`].
#[derive(Debug, Clone)]
pub struct RateLimiterBuilder<C> {
    quotas: Vec<Quota>,
    clock: Option<C>,
    max_wait: Option<Duration>,
    max_queue: usize,
    adaptive: Option<Adaptive>,
    #[cfg(feature = "redis")]
    pub(crate) fleet: crate::fleet::FleetOptions,
}

impl<C: LimiterClock> RateLimiterBuilder<C> {
    /// Adds a quota that must also admit every request (all-or-nothing).
    #[must_use]
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// The longest a caller may wait in [`acquire`](RateLimiter::acquire) (or in the
    /// [`Limiter`](crate::Limiter)'s `poll_ready`). A caller whose expected wait is longer fails
    /// at once with [`RateLimited`]; one already queued fails, at its turn, if a pause pushed
    /// its total wait past it (the queue then drains at once). `Duration::ZERO` never waits.
    /// Default: no bound.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The most callers that may wait at once; one more fails at once with [`RateLimited`].
    /// Default: no bound.
    #[must_use]
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = max_queue;
        self
    }

    /// Follows the upstream's answers; see [`Adaptive`].
    #[must_use]
    pub fn adaptive(mut self, adaptive: Adaptive) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// Reads time from `clock` (for tests: `TokioClock` on tokio's paused clock, or a
    /// `FakeClock`). Default: [`QuantaClock`].
    pub fn clock<C2: LimiterClock>(self, clock: C2) -> RateLimiterBuilder<C2> {
        RateLimiterBuilder {
            quotas: self.quotas,
            clock: Some(clock),
            max_wait: self.max_wait,
            max_queue: self.max_queue,
            adaptive: self.adaptive,
            #[cfg(feature = "redis")]
            fleet: self.fleet,
        }
    }
}

impl<C: LimiterClock + Default> RateLimiterBuilder<C> {
    /// The limiter.
    pub fn build(self) -> RateLimiter<C> {
        let clock = self.clock.clone().unwrap_or_default();
        self.build_with(clock)
    }
}

impl<C: LimiterClock> RateLimiterBuilder<C> {
    pub(crate) fn build_with(&self, clock: C) -> RateLimiter<C> {
        let origin = clock.origin();
        self.build_with_origin(clock, origin)
    }

    /// A limiter that counts time from `origin` (a value `clock.origin()` returned), so that
    /// limiters sharing a clock and an origin can be handed one clock reading.
    pub(crate) fn build_with_origin(&self, clock: C, origin: Instant) -> RateLimiter<C> {
        let first = self.quotas[0];
        RateLimiter {
            shared: Arc::new(Shared {
                gcra: Gcra::new(&self.quotas),
                origin,
                clock,
                queue: Mutex::new(WaitQueue::default()),
                queued: AtomicUsize::new(0),
                max_wait: self.max_wait,
                max_queue: self.max_queue,
                adaptive: self.adaptive.clone(),
                paused_until: AtomicU64::new(0),
                rates: Mutex::new(Rates {
                    configured: first,
                    current_per_second: first.per_second_f64(),
                    decrease_guard_until: 0,
                    limited_at: f64::INFINITY,
                }),
                #[cfg(feature = "redis")]
                remote: None,
            }),
        }
    }

    /// A fleet limiter: `remote` decides, and `queued` carries [`FLEET`] so that the fast path
    /// always defers to it.
    #[cfg(feature = "redis")]
    pub(crate) fn build_remote(&self, clock: C, remote: crate::fleet::Remote<C>) -> RateLimiter<C> {
        let mut limiter = self.build_with(clock);
        let shared = Arc::get_mut(&mut limiter.shared).expect("a limiter just built is not shared");
        *shared.queued.get_mut() = FLEET;
        shared.remote = Some(remote);
        limiter
    }

    /// Keeps `quota` as the only quota (a fleet limiter's local fallback).
    #[cfg(feature = "redis")]
    pub(crate) fn keep_only(&mut self, quota: Quota) {
        self.quotas = vec![quota];
    }

    pub(crate) fn replace_quota(&mut self, index: usize, quota: Quota) -> Result<(), NoSuchQuota> {
        let len = self.quotas.len();
        let slot = self
            .quotas
            .get_mut(index)
            .ok_or(NoSuchQuota::new(index, len))?;
        *slot = quota;
        Ok(())
    }

    pub(crate) fn has_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }

    pub(crate) fn first_quota(&self) -> Quota {
        self.quotas[0]
    }

    /// One quota and no adaptation: keys can keep a bare TAT until they need to wait.
    pub(crate) fn is_plain(&self) -> bool {
        self.quotas.len() == 1 && self.adaptive.is_none()
    }

    pub(crate) fn clock_or(&self, default: impl FnOnce() -> C) -> C {
        self.clock.clone().unwrap_or_else(default)
    }
}
