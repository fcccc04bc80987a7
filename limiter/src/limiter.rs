//! [`RateLimiter`]: the shareable limiter handle, and the state its clones share.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollway_core::RateLimited;

use crate::adaptive::{Adaptive, AimdState};
use crate::builder::RateLimiterBuilder;
use crate::clock::{LimiterClock, QuantaClock, duration_nanos};
use crate::error::{ExceedsBurst, NoSuchQuota};
use crate::gcra::{Gcra, Grant};
use crate::metrics;
use crate::queue::{Acquire, WaitQueue};
use crate::quota::{Quota, Rate};
use crate::store::{MemoryStore, Store};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering::Relaxed};

/// A rate limiter: one or more [`Quota`]s admitted all-or-nothing, a fair queue of waiters,
/// and optional adaptation to the upstream.
///
/// Cheap to clone: clones share one state. Use it directly ([`check`](Self::check),
/// [`acquire`](Self::acquire)) or through [`LimiterLayer`](crate::LimiterLayer).
///
/// ```
/// use tollway_limiter::{Quota, RateLimiter};
///
/// let per_second = Quota::per_second(11).burst(1);
/// let per_day = Quota::per_day(1_000_000).burst(1_000);
/// let limiter = RateLimiter::builder(per_second).quota(per_day).build();
///
/// assert!(limiter.check().is_ok());
/// let refused = limiter.check().unwrap_err(); // burst 1: the next one is ~91 ms away
/// assert!(refused.retry_after().as_millis() > 80);
/// assert!(limiter.peek().is_err(), "peeking consumes nothing, and says the same");
/// ```
///
/// `St` is where the state lives: [`MemoryStore`] (this process) unless the limiter was built
/// for a fleet (`RateLimiterBuilder::redis`, feature `redis`).
pub struct RateLimiter<C: LimiterClock = QuantaClock, St: Store<C> = MemoryStore> {
    pub(crate) shared: Arc<Shared<C, St>>,
}

impl<C: LimiterClock, St: Store<C>> Clone for RateLimiter<C, St> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: LimiterClock + fmt::Debug, St: Store<C>> fmt::Debug for RateLimiter<C, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("quotas", &self.quotas())
            .field("queued", &self.queued())
            .field("clock", &self.shared.clock)
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

/// The hot fields come first, in one cache line: a `check` reads `queued` and the first quota
/// and touches no other line of this struct.
///
/// Lock order: `rates` before `queue`; neither is held while taking the other except in that
/// order, and no lock is held while calling out.
#[repr(C, align(64))]
pub(crate) struct Shared<C, St = MemoryStore> {
    /// Waiters in the queue; read without the lock so that the fast path stays lock-free.
    pub(crate) queued: AtomicUsize,
    pub(crate) gcra: Gcra,
    pub(crate) clock: C,
    pub(crate) origin: Instant,
    pub(crate) queue: Mutex<WaitQueue>,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) max_queue: usize,
    pub(crate) adaptive: Option<Adaptive>,
    pub(crate) paused_until: AtomicU64,
    /// Serialises quota changes; holds the quotas as set and AIMD's state.
    pub(crate) rates: Mutex<Rates>,
    /// Where admissions are decided: `gcra` itself (memory), or a shared store whose quotas
    /// are the ones `gcra` holds.
    pub(crate) store: St,
}

/// The quotas as they were last set, and AIMD's state.
#[derive(Debug)]
pub(crate) struct Rates {
    pub(crate) quotas: Vec<Quota>,
    pub(crate) aimd: AimdState,
}

impl<C: LimiterClock, St: Store<C>> Shared<C, St> {
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.clock.nanos_since(self.origin)
    }

    /// A permit without waiting, if no one is queued and every quota admits it now.
    #[inline]
    pub(crate) fn try_acquire_fast(&self, cost: u32) -> Result<Grant, u64> {
        self.try_acquire_at(self.now(), cost)
    }

    /// [`try_acquire_fast`](Self::try_acquire_fast) at `now` (nanoseconds since the origin).
    #[inline]
    pub(crate) fn try_acquire_at(&self, now: u64, cost: u32) -> Result<Grant, u64> {
        St::try_now(self, now, cost)
    }

    pub(crate) fn wake_head(&self) {
        self.queue.lock().wake_head();
    }

    /// Gives back what `grant` took, if nothing was admitted on top of it since.
    pub(crate) fn undo(&self, grant: &Grant) {
        self.gcra.undo(grant);
        self.wake_head();
    }

    /// The base from which a quota change rescales debt: a pause in force stays as it is.
    fn rescale_base(&self, now: u64) -> u64 {
        now.max(self.paused_until.load(Relaxed))
    }

    /// Sets quota `index` under the `rates` lock the caller holds.
    pub(crate) fn apply_quota(&self, rates: &mut Rates, index: usize, quota: Quota) {
        let now = self.now();
        self.gcra
            .set_quota(index, quota, now, self.rescale_base(now));
        if let Some(slot) = rates.quotas.get_mut(index) {
            *slot = quota;
        }
    }
}

impl RateLimiter<QuantaClock> {
    /// A limiter with one quota, no bounds on waiting, no adaptation.
    pub fn new(quota: Quota) -> Self {
        Self::builder(quota).build()
    }

    /// Starts a limiter whose first quota is `quota`.
    pub fn builder(quota: Quota) -> RateLimiterBuilder<QuantaClock> {
        RateLimiterBuilder::new(quota)
    }
}

impl<C: LimiterClock, St: Store<C>> RateLimiter<C, St> {
    /// Takes one permit now, or says how long until one is due. Fair to waiters: while any
    /// caller is queued in [`acquire`](Self::acquire), `check` refuses.
    #[inline]
    pub fn check(&self) -> Result<(), RateLimited> {
        match self.shared.try_acquire_fast(1) {
            Ok(_) => {
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
            Ok(_) => {
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
        match St::peek(shared, shared.now(), cost.get()) {
            0 => Ok(()),
            wait => Err(RateLimited::new(Duration::from_nanos(wait))),
        }
    }

    /// How many cost-1 requests every quota would admit right now.
    /// On a fleet limiter: 0 (the count lives in Redis), or the local fallback's count while
    /// the store is down and the limiter fails open.
    pub fn available(&self) -> u64 {
        St::available(&self.shared, self.shared.now())
    }

    /// Gives back `n` permits that were taken but not used (the request was never sent): each
    /// quota's debt shrinks by `n` intervals, and the bucket never holds more than its burst.
    ///
    /// Refund promptly. The limiter keeps no record of who holds what, so a refund made after
    /// other requests were admitted gives back capacity they now rely on: with a burst of 1,
    /// the next request may then go up to `n` intervals early. The
    /// [`Limiter`](crate::Limiter) service returns its unspent permits exactly instead (only
    /// when nothing was admitted on top of them).
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
    pub fn acquire(&self) -> Acquire<C, St> {
        Acquire::new(self.clone(), 1)
    }

    /// Waits for `cost` permits from every quota, first come first served.
    pub fn acquire_n(&self, cost: NonZeroU32) -> Result<Acquire<C, St>, ExceedsBurst> {
        self.fits(cost.get())?;
        Ok(Acquire::new(self.clone(), cost.get()))
    }

    /// The quotas, first one first (the first as AIMD runs it now, if it is backing off).
    pub fn quotas(&self) -> Vec<Quota> {
        self.shared.rates.lock().quotas.clone()
    }

    /// How many callers are waiting in [`acquire`](Self::acquire).
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Relaxed)
    }

    /// Replaces quota `index` (0 is the first) at runtime, keeping its debt: requests already
    /// admitted still count, converted to the new rate (a pause the upstream ordered stays as
    /// long as it was). Commits never see the change half done. Waiters are served at the new
    /// rate at once.
    pub fn set_quota(&self, index: usize, quota: Quota) -> Result<(), NoSuchQuota> {
        let shared = &*self.shared;
        if index >= shared.gcra.len() {
            return Err(NoSuchQuota::new(index, shared.gcra.len()));
        }
        let mut rates = shared.rates.lock();
        shared.apply_quota(&mut rates, index, quota);
        if index == 0 {
            rates.aimd.reconfigure(quota);
        }
        drop(rates);
        shared.wake_head();
        Ok(())
    }

    /// Sets the first quota's rate, keeping its burst and its debt (for an API that reports its
    /// rate, such as a `GET /sys/balance` answering `"rate": 11`):
    /// `limiter.set_rate(Quota::per_second(11))`.
    ///
    /// # Panics
    ///
    /// If the first quota's burst at `rate` would span more than about 146 years (see
    /// [`Rate::try_burst`]).
    pub fn set_rate(&self, rate: Rate) {
        let burst = self.shared.rates.lock().quotas[0].burst();
        let _ = self.set_quota(0, rate.burst(burst));
    }

    /// The first quota's current rate in requests per second (lower than configured while AIMD
    /// is backing off).
    pub fn current_rate(&self) -> f64 {
        self.shared.rates.lock().aimd.current()
    }

    /// Pauses every caller for `duration`: nothing is admitted until then, and afterwards the
    /// bucket starts empty, so callers resume one at a time at the steady rate.
    pub fn pause(&self, duration: Duration) {
        let shared = &*self.shared;
        let until = shared.now().saturating_add(duration_nanos(duration));
        // Serialised with quota changes, so a change never rescales half a pause.
        let rates = shared.rates.lock();
        shared.paused_until.fetch_max(until, Relaxed);
        shared.gcra.pause_until(until);
        drop(rates);
        // A shared store tells the fleet: the other processes pause too.
        St::paused(shared, duration);
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
