//! The fair queue of callers waiting for a permit, and the [`Acquire`] future.
//!
//! Waiters queue in arrival order. Only the head of the queue waits on tokio's timer, until
//! the moment its permit is due; when it takes the permit it wakes the next one, which then
//! computes its own due time. Nothing is taken from the bucket before a waiter's turn, so a
//! waiter that is dropped has nothing to give back and cannot leave a hole or a debt behind
//! (the AWS SDK's bucket went negative exactly that way, smithy-rs#4632); and since only one
//! waiter is timed at once, no herd wakes together.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
#[cfg(feature = "redis")]
use std::task::ready;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Sleep;
use tollway_core::RateLimited;

use crate::clock::LimiterClock;
use crate::limiter::RateLimiter;
use crate::metrics;

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    cost: u32,
    waker: Option<Waker>,
}

/// Waiters in arrival order.
#[derive(Debug, Default)]
pub(crate) struct WaitQueue {
    waiters: VecDeque<Waiter>,
    next_ticket: u64,
    queued_cost: u64,
}

impl WaitQueue {
    pub(crate) fn queued_cost(&self) -> u64 {
        self.queued_cost
    }

    /// Wakes the head so it recomputes its due time (quota changed, permits refunded).
    pub(crate) fn wake_head(&mut self) {
        if let Some(waker) = self.waiters.front_mut().and_then(|w| w.waker.take()) {
            waker.wake();
        }
    }

    fn push(&mut self, cost: u32) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.queued_cost += u64::from(cost);
        self.waiters.push_back(Waiter {
            ticket,
            cost,
            waker: None,
        });
        ticket
    }

    /// Removes `ticket`; wakes the new head if the head left.
    fn remove(&mut self, ticket: u64) {
        let Some(index) = self.waiters.iter().position(|w| w.ticket == ticket) else {
            return;
        };
        if let Some(waiter) = self.waiters.remove(index) {
            self.queued_cost -= u64::from(waiter.cost);
        }
        if index == 0 {
            self.wake_head();
        }
    }

    fn is_head(&self, ticket: u64) -> bool {
        self.waiters.front().is_some_and(|w| w.ticket == ticket)
    }

    fn set_waker(&mut self, ticket: u64, waker: &Waker) {
        if let Some(w) = self.waiters.iter_mut().find(|w| w.ticket == ticket) {
            match &w.waker {
                Some(old) if old.will_wake(waker) => {}
                _ => w.waker = Some(waker.clone()),
            }
        }
    }
}

/// Waits for a permit: the future [`RateLimiter::acquire`] returns.
///
/// It resolves to `Ok(())` with the permit taken, or to `Err(RateLimited)` when the limiter's
/// `max_wait` or `max_queue` would be exceeded. Callers are served first come, first served.
/// Dropping it before it resolves gives up its place in the queue and takes nothing from the
/// bucket (cancel-safe).
///
/// A waiter keeps its place until it is dropped: one that is kept alive but no longer polled
/// (for example a [`Limiter`](crate::Limiter) whose `poll_ready` returned `Pending` and that
/// is then neither polled nor dropped) holds up the waiters behind it, as a pending
/// `tokio::sync::Semaphore` acquire does. Drop what you stop polling.
///
/// # Panics
///
/// Polling it again after it resolved panics.
pub struct Acquire<C: LimiterClock> {
    limiter: RateLimiter<C>,
    cost: u32,
    ticket: Option<u64>,
    queued_at: u64,
    sleep: Option<Pin<Box<Sleep>>>,
    done: bool,
    /// Fleet mode: the head's round trips to Redis.
    #[cfg(feature = "redis")]
    remote: Option<crate::fleet::RemoteWait<C>>,
}

impl<C: LimiterClock> fmt::Debug for Acquire<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("cost", &self.cost)
            .field("ticket", &self.ticket)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<C: LimiterClock> Acquire<C> {
    pub(crate) fn new(limiter: RateLimiter<C>, cost: u32) -> Self {
        Self {
            limiter,
            cost,
            ticket: None,
            queued_at: 0,
            sleep: None,
            done: false,
            #[cfg(feature = "redis")]
            remote: None,
        }
    }

    /// Fleet mode: the store error behind an `Err` this future resolved to, if the limiter
    /// failed closed because Redis was unavailable (the [`Limiter`](crate::Limiter) service
    /// returns it instead of the `RateLimited`). Poll the future by reference to read it:
    /// `(&mut acquire).await`.
    #[cfg(feature = "redis")]
    pub fn take_store_error(&mut self) -> Option<crate::fleet::StoreUnavailable> {
        self.remote.as_mut().and_then(|r| r.store_error.take())
    }

    /// The error to report instead of the `RateLimited` this future resolved to, if any.
    pub(crate) fn take_failure(&mut self) -> Option<tollway_core::BoxError> {
        #[cfg(feature = "redis")]
        if let Some(error) = self.take_store_error() {
            return Some(Box::new(error));
        }
        None
    }

    fn reject(&mut self, wait: u64) -> Poll<Result<(), RateLimited>> {
        self.done = true;
        metrics::rejected();
        tracing::trace!(wait_ns = wait, "rate limiter refused a waiter");
        Poll::Ready(Err(RateLimited::new(Duration::from_nanos(wait.max(1)))))
    }

    /// Joins the queue, or takes the permit if it is free and no one is ahead.
    fn enqueue(&mut self) -> Option<Poll<Result<(), RateLimited>>> {
        let shared = &*self.limiter.shared;
        let cost = self.cost;
        if shared.queued.load(Relaxed) == 0 && shared.gcra.try_acquire(shared.now(), cost).is_ok() {
            self.done = true;
            metrics::admitted();
            return Some(Poll::Ready(Ok(())));
        }
        let mut queue = shared.queue.lock();
        let now = shared.now();
        #[cfg(feature = "redis")]
        if shared.remote.is_some() {
            // Only Redis knows the wait: the head asks it in `poll`.
            if queue.waiters.len() >= shared.max_queue {
                drop(queue);
                return Some(self.reject(shared.gcra.first().interval_nanos()));
            }
            self.ticket = Some(queue.push(cost));
            shared.queued.fetch_add(1, Relaxed);
            self.queued_at = now;
            return None;
        }
        if queue.waiters.is_empty() && shared.gcra.try_acquire(now, cost).is_ok() {
            drop(queue);
            self.done = true;
            metrics::admitted();
            return Some(Poll::Ready(Ok(())));
        }
        let wait = shared
            .gcra
            .wait(now, queue.queued_cost + u64::from(cost))
            .max(1);
        let too_long = shared
            .max_wait
            .is_some_and(|max| Duration::from_nanos(wait) > max);
        if too_long || queue.waiters.len() >= shared.max_queue {
            drop(queue);
            return Some(self.reject(wait));
        }
        self.ticket = Some(queue.push(cost));
        shared.queued.fetch_add(1, Relaxed);
        self.queued_at = now;
        None
    }
}

impl<C: LimiterClock> Future for Acquire<C> {
    type Output = Result<(), RateLimited>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "Acquire polled after it resolved");
        let ticket = match this.ticket {
            Some(ticket) => ticket,
            None => match this.enqueue() {
                Some(ready) => return ready,
                None => match this.ticket {
                    Some(ticket) => ticket,
                    None => return Poll::Pending,
                },
            },
        };
        let shared = Arc::clone(&this.limiter.shared);
        loop {
            let mut queue = shared.queue.lock();
            queue.set_waker(ticket, cx.waker());
            if !queue.is_head(ticket) {
                return Poll::Pending;
            }
            #[cfg(feature = "redis")]
            if let Some(remote) = &shared.remote {
                drop(queue);
                let wait = this.remote.get_or_insert_with(Default::default);
                let outcome =
                    ready!(wait.poll(cx, &this.limiter, remote, this.cost, this.queued_at));
                let mut queue = shared.queue.lock();
                queue.remove(ticket);
                shared.queued.fetch_sub(1, Relaxed);
                drop(queue);
                this.ticket = None;
                this.done = true;
                return match outcome {
                    crate::fleet::Outcome::Admitted => {
                        let waited = shared.now().saturating_sub(this.queued_at);
                        metrics::waited(Duration::from_nanos(waited));
                        Poll::Ready(Ok(()))
                    }
                    crate::fleet::Outcome::Refused(refused) => {
                        metrics::rejected();
                        Poll::Ready(Err(refused))
                    }
                };
            }
            let now = shared.now();
            match shared.gcra.try_acquire(now, this.cost) {
                Ok(()) => {
                    queue.remove(ticket);
                    shared.queued.fetch_sub(1, Relaxed);
                    drop(queue);
                    this.ticket = None;
                    this.done = true;
                    metrics::waited(Duration::from_nanos(now.saturating_sub(this.queued_at)));
                    return Poll::Ready(Ok(()));
                }
                Err(wait) => {
                    let waited = now.saturating_sub(this.queued_at);
                    if shared
                        .max_wait
                        .is_some_and(|max| Duration::from_nanos(waited.saturating_add(wait)) > max)
                    {
                        queue.remove(ticket);
                        shared.queued.fetch_sub(1, Relaxed);
                        drop(queue);
                        this.ticket = None;
                        return this.reject(wait);
                    }
                    drop(queue);
                    let deadline = tokio::time::Instant::now() + Duration::from_nanos(wait);
                    let sleep = match &mut this.sleep {
                        Some(sleep) => {
                            sleep.as_mut().reset(deadline);
                            sleep
                        }
                        None => this
                            .sleep
                            .insert(Box::pin(tokio::time::sleep_until(deadline))),
                    };
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl<C: LimiterClock> Drop for Acquire<C> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let shared = &*self.limiter.shared;
            shared.queue.lock().remove(ticket);
            shared.queued.fetch_sub(1, Relaxed);
        }
    }
}
