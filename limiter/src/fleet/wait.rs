//! How a fleet limiter waits: the head of the local queue asks Redis, sleeps on tokio's timer
//! for the retry-after Redis returned (plus a little jitter, so that the processes of a fleet do
//! not ask again all at once), and asks again.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};
use tollway_core::RateLimited;

use super::RedisStore;
use super::client::Decision;
use super::error::StoreUnavailable;
use crate::clock::LimiterClock;
use crate::limiter::RateLimiter;
use crate::queue::Acquire;

/// One request leased from Redis: it may be sent from `due` until `due + LEASE_GRACE`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Leased {
    cost: u32,
    due: Instant,
}

/// How late a leased request may still be sent. Redis scheduled it at its due time: a request
/// sent later reaches the upstream closer to the next ones, so the lateness allowed is small
/// and a lease can never be stocked up and spent in a burst.
const LEASE_GRACE: Duration = Duration::from_millis(5);

/// What the local lease holds for a request.
enum FromLease {
    Now,
    At(Instant),
    Nothing,
}

impl<C: LimiterClock> RedisStore<C> {
    fn fallback(&self) -> Option<RateLimiter<C>> {
        self.fallback.clone()
    }

    /// A permit without a round trip: a leased request due now (if no caller is queued), or
    /// the local fallback's while the store is down. Otherwise the answer is "ask Redis"
    /// (`Err(retry)` with a nominal retry).
    pub(crate) fn try_now(&self, cost: u32, retry: u64, queue_empty: bool) -> Result<(), u64> {
        if queue_empty && matches!(self.take_leased(cost, Instant::now()), FromLease::Now) {
            return Ok(());
        }
        if let Some(fallback) = &self.fallback
            && self.client.known_down().is_some()
        {
            return fallback.shared.try_acquire_fast(cost).map(drop);
        }
        Err(retry.max(1))
    }

    /// What [`try_now`](Self::try_now) would answer, taking nothing (0: a permit now).
    pub(crate) fn peek(&self, cost: u32, retry: u64) -> u64 {
        match self.fallback() {
            Some(fallback) if self.client.known_down().is_some() => {
                let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
                fallback.peek_n(cost).map_or_else(
                    |refused| u64::try_from(refused.retry_after().as_nanos()).unwrap_or(u64::MAX),
                    |()| 0,
                )
            }
            _ => retry.max(1),
        }
    }

    /// Takes a leased request of `cost` due by `now`, dropping those too late to send; or says
    /// when the next one is due.
    fn take_leased(&self, cost: u32, now: Instant) -> FromLease {
        if self.lease.is_none() {
            return FromLease::Nothing;
        }
        let mut leased = self.leased.lock();
        while let Some(next) = leased.front().copied() {
            if next.cost != cost || next.due + LEASE_GRACE < now {
                leased.pop_front();
                tracing::trace!("leased request dropped unspent");
                continue;
            }
            if next.due <= now {
                leased.pop_front();
                return FromLease::Now;
            }
            return FromLease::At(next.due);
        }
        FromLease::Nothing
    }

    /// Keeps the further requests a round trip leased; `received` is when its reply came, at
    /// least half a round trip after Redis decided, so no leased request is sent early.
    fn keep_leased(&self, cost: u32, received: Instant, offsets: &[Duration]) {
        if offsets.is_empty() {
            return;
        }
        let mut leased = self.leased.lock();
        leased.clear();
        leased.extend(offsets.iter().map(|&offset| Leased {
            cost,
            due: received + offset,
        }));
    }

    /// The local fallback's count while it is in use, else 0.
    pub(crate) fn available(&self) -> u64 {
        match self.fallback() {
            Some(fallback) if self.client.known_down().is_some() => fallback.available(),
            _ => 0,
        }
    }
}

/// What the head of the queue got.
pub(crate) enum Outcome {
    Admitted,
    Refused(RateLimited),
}

/// The state of one waiter of a fleet limiter, once it is the head of the local queue.
// Public in a private module: the sealed store trait names it.
#[allow(unreachable_pub)]
pub struct RemoteWait<C: LimiterClock> {
    sleep: Option<Pin<Box<Sleep>>>,
    /// The round trip in flight, polled in place (no task of its own: one scheduler hop less
    /// per permit). Behind a mutex only to be `Sync`: it is never contended.
    in_flight: Option<Mutex<RoundTrip>>,
    /// When the round trip in flight was sent.
    sent_at: Option<Instant>,
    fallback: Option<Box<Acquire<C>>>,
    /// The store error a fail-closed refusal came from.
    pub(crate) store_error: Option<StoreUnavailable>,
}

impl<C: LimiterClock> std::fmt::Debug for RemoteWait<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWait")
            .field("in_flight", &self.in_flight.is_some())
            .field("on_fallback", &self.fallback.is_some())
            .finish_non_exhaustive()
    }
}

impl<C: LimiterClock> Default for RemoteWait<C> {
    fn default() -> Self {
        Self {
            sleep: None,
            in_flight: None,
            sent_at: None,
            fallback: None,
            store_error: None,
        }
    }
}

type RoundTrip = Pin<Box<dyn Future<Output = Result<Decision, StoreUnavailable>> + Send>>;

// Dropping a round trip cut short (a cancelled waiter) may still have taken the permit in
// Redis: it is lost, which never lets the fleet go faster than its quotas.

impl<C: LimiterClock> RemoteWait<C> {
    /// Drives the head of the queue until Redis (or the fallback) admits it or it is refused.
    /// `queued_at` is when it queued, in the limiter's nanoseconds.
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        limiter: &RateLimiter<C, RedisStore<C>>,
        cost: u32,
        queued_at: u64,
        max_wait: Option<Duration>,
    ) -> Poll<Outcome> {
        let remote = &limiter.shared.store;
        loop {
            if let Some(fallback) = &mut self.fallback {
                let result = ready!(Pin::new(&mut **fallback).poll(cx));
                self.fallback = None;
                return Poll::Ready(match result {
                    Ok(()) => Outcome::Admitted,
                    Err(refused) => Outcome::Refused(refused),
                });
            }
            if let Some(round_trip) = &mut self.in_flight {
                let decision = ready!(round_trip.get_mut().as_mut().poll(cx));
                self.in_flight = None;
                match decision {
                    Ok(Decision::Admitted(leased)) => {
                        remote.keep_leased(cost, Instant::now(), &leased);
                        return Poll::Ready(Outcome::Admitted);
                    }
                    Ok(Decision::Wait(wait)) => {
                        let shared = &*limiter.shared;
                        let waited = Duration::from_nanos(shared.now().saturating_sub(queued_at));
                        if max_wait.is_some_and(|max| waited + wait > max) {
                            return Poll::Ready(Outcome::Refused(RateLimited::new(wait)));
                        }
                        // Redis measured `wait` from when it ran the script, half a round trip
                        // ago, and the next request reaches it half a round trip after it is
                        // sent: leaving a round trip early lands on time. Early costs one more
                        // round trip at worst; late loses throughput for the whole fleet.
                        let round_trip =
                            self.sent_at.take().map_or(Duration::ZERO, |t| t.elapsed());
                        self.sleep_for(wait.saturating_sub(round_trip) + jitter(wait));
                    }
                    Err(error) => {
                        if let Some(ready) = self.store_failed(remote, cost, error) {
                            return Poll::Ready(ready);
                        }
                    }
                }
                continue;
            }
            if let Some(sleep) = &mut self.sleep {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            // A pause ordered by the upstream (Adaptive) holds this process's callers first.
            if let Some(paused) = limiter.paused_for() {
                self.sleep_for(paused);
                continue;
            }
            match remote.take_leased(cost, Instant::now()) {
                FromLease::Now => return Poll::Ready(Outcome::Admitted),
                FromLease::At(due) => {
                    self.sleep_until(due);
                    continue;
                }
                FromLease::Nothing => {}
            }
            if let Some(error) = remote.client.known_down() {
                if let Some(ready) = self.store_failed(remote, cost, error) {
                    return Poll::Ready(ready);
                }
                continue;
            }
            let client = Arc::clone(&remote.client);
            let quotas = limiter.quotas();
            let (requests, horizon) = remote
                .lease
                .map_or((1, Duration::ZERO), |(n, within)| (n.get(), within));
            self.sent_at = Some(Instant::now());
            self.in_flight = Some(Mutex::new(Box::pin(async move {
                client.acquire(cost, &quotas, requests, horizon).await
            })));
        }
    }

    /// Fails closed (a refusal carrying `error`), or starts waiting on the local fallback.
    fn store_failed(
        &mut self,
        remote: &RedisStore<C>,
        cost: u32,
        error: StoreUnavailable,
    ) -> Option<Outcome> {
        let Some(fallback) = remote.fallback() else {
            self.store_error = Some(error);
            return Some(Outcome::Refused(RateLimited::new(remote.client.down_for())));
        };
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        match fallback.acquire_n(cost) {
            Ok(acquire) => {
                tracing::debug!(%error, "rate limiter store down: admitting through the local quota");
                self.fallback = Some(Box::new(acquire));
                None
            }
            Err(exceeds) => {
                self.store_error = Some(error);
                tracing::debug!(%exceeds, "the local fallback quota can never admit this cost");
                Some(Outcome::Refused(RateLimited::new(Duration::MAX)))
            }
        }
    }

    fn sleep_for(&mut self, wait: Duration) {
        self.sleep_until(Instant::now() + wait);
    }

    fn sleep_until(&mut self, deadline: Instant) {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
}

/// A random extra wait of up to 2% of `wait` (at least 0.1 ms, at most 5 ms): processes refused
/// together ask again one after the other, not as a herd. Small, because the time between the
/// moment a permit is due and the first request that takes it is lost to the whole fleet.
fn jitter(wait: Duration) -> Duration {
    let max = (wait / 50).clamp(Duration::from_micros(100), Duration::from_millis(5));
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(std::time::Instant::now().elapsed().as_nanos());
    let max_nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(hasher.finish() % max_nanos.max(1))
}
