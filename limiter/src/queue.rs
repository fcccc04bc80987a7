//! The fair queue of callers waiting for a permit, and the [`Acquire`] future.
//!
//! Waiters queue in arrival order. Only the head of the queue waits on tokio's timer, until
//! the moment its permit is due; when it takes the permit it wakes the next one, which then
//! computes its own due time. Nothing is taken from the bucket before a waiter's turn, so a
//! waiter that is dropped has nothing to give back and cannot leave a hole or a debt behind
//! (the AWS SDK's bucket went negative exactly that way, smithy-rs#4632); and since only one
//! waiter is timed at once, no herd wakes together.
//!
//! The head registers its waker, checks that it is the head and tries the bucket under the
//! queue's lock; everything that can let it go sooner (a refund, a quota change, a pause, the
//! previous head leaving) wakes it under the same lock, so no wake-up is lost.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tollway_core::RateLimited;

use crate::clock::LimiterClock;
use crate::gcra::Grant;
use crate::limiter::RateLimiter;
use crate::metrics;
use crate::store::{Enqueue, MemoryStore, Store};
use crate::sync::Ordering::Relaxed;
use crate::timer::Timer;

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    cost: u32,
    waker: Option<Waker>,
    /// `false` once it left: a tombstone until it reaches the front or the queue compacts.
    live: bool,
}

/// Waiters in arrival order (tickets ascending, so a waiter is found by binary search).
#[derive(Debug, Default)]
pub(crate) struct WaitQueue {
    waiters: VecDeque<Waiter>,
    next_ticket: u64,
    queued_cost: u64,
    live: usize,
}

impl WaitQueue {
    pub(crate) fn queued_cost(&self) -> u64 {
        self.queued_cost
    }

    /// Waiters still waiting.
    pub(crate) fn len(&self) -> usize {
        self.live
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
        self.live += 1;
        self.waiters.push_back(Waiter {
            ticket,
            cost,
            waker: None,
            live: true,
        });
        ticket
    }

    fn find(&self, ticket: u64) -> Option<usize> {
        self.waiters
            .binary_search_by_key(&ticket, |w| w.ticket)
            .ok()
            .filter(|&i| self.waiters[i].live)
    }

    /// Removes `ticket`; wakes the new head if the head left.
    pub(crate) fn remove(&mut self, ticket: u64) {
        let Some(index) = self.find(ticket) else {
            return;
        };
        let waiter = &mut self.waiters[index];
        waiter.live = false;
        waiter.waker = None;
        self.queued_cost -= u64::from(waiter.cost);
        self.live -= 1;
        // The front is always live: tombstones go when they reach it.
        while self.waiters.front().is_some_and(|w| !w.live) {
            self.waiters.pop_front();
        }
        // Churn behind a long-waiting head: keep the tombstones fewer than the waiters.
        if self.waiters.len() > 2 * self.live + 16 {
            self.waiters.retain(|w| w.live);
        }
        if index == 0 {
            self.wake_head();
        }
    }

    pub(crate) fn is_head(&self, ticket: u64) -> bool {
        self.waiters.front().is_some_and(|w| w.ticket == ticket)
    }

    pub(crate) fn set_waker(&mut self, ticket: u64, waker: &Waker) {
        if let Some(index) = self.find(ticket) {
            let w = &mut self.waiters[index];
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
pub struct Acquire<C: LimiterClock, St: Store<C> = MemoryStore> {
    pub(crate) limiter: RateLimiter<C, St>,
    pub(crate) cost: u32,
    pub(crate) ticket: Option<u64>,
    pub(crate) queued_at: u64,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) timer: Timer,
    done: bool,
    /// What the permit took, to give it back exactly if it goes unused.
    grant: Grant,
    /// What the store keeps for the head of the queue (fleet mode: its round trips).
    pub(crate) head: St::Head,
}

impl<C: LimiterClock, St: Store<C>> fmt::Debug for Acquire<C, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("cost", &self.cost)
            .field("ticket", &self.ticket)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<C: LimiterClock, St: Store<C>> Acquire<C, St> {
    pub(crate) fn new(limiter: RateLimiter<C, St>, cost: u32) -> Self {
        let max_wait = limiter.shared.max_wait;
        Self {
            limiter,
            cost,
            ticket: None,
            queued_at: 0,
            max_wait,
            timer: Timer::default(),
            done: false,
            grant: Grant::NONE,
            head: St::Head::default(),
        }
    }

    /// Waits at most `max` (the tighter of it and the limiter's own `max_wait`).
    pub(crate) fn within(mut self, max: Option<Duration>) -> Self {
        self.max_wait = match (self.max_wait, max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }

    /// What the permit this future resolved to took (nothing to undo in fleet mode).
    pub(crate) fn grant(&self) -> Grant {
        self.grant
    }

    /// The error to report instead of the `RateLimited` this future resolved to, if any.
    pub(crate) fn take_failure(&mut self) -> Option<tollway_core::BoxError> {
        St::take_failure(&mut self.head)
    }

    pub(crate) fn too_long(&self, wait: u64) -> bool {
        self.max_wait
            .is_some_and(|max| Duration::from_nanos(wait) > max)
    }

    pub(crate) fn reject(&mut self, wait: u64) -> Poll<Result<(), RateLimited>> {
        self.done = true;
        metrics::rejected();
        tracing::trace!(wait_ns = wait, "rate limiter refused a waiter");
        Poll::Ready(Err(RateLimited::new(Duration::from_nanos(wait.max(1)))))
    }

    /// Resolves to `refused` (a store's own refusal, or a cost no bucket holds any more).
    pub(crate) fn refuse(&mut self, refused: RateLimited) -> Poll<Result<(), RateLimited>> {
        self.done = true;
        metrics::rejected();
        Poll::Ready(Err(refused))
    }

    pub(crate) fn admit(&mut self, grant: Grant) -> Poll<Result<(), RateLimited>> {
        self.done = true;
        self.grant = grant;
        Poll::Ready(Ok(()))
    }

    /// Leaves the queue (the caller holds no queue lock).
    pub(crate) fn leave(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let shared = &*self.limiter.shared;
            shared.queue.lock().remove(ticket);
            shared.queued.fetch_sub(1, Relaxed);
        }
    }

    /// Joins the queue, or takes the permit if it is free and no one is ahead.
    fn enqueue(&mut self) -> Option<Poll<Result<(), RateLimited>>> {
        let shared = Arc::clone(&self.limiter.shared);
        let cost = self.cost;
        if let Ok(grant) = St::try_now(&shared, shared.now(), cost) {
            metrics::admitted();
            return Some(self.admit(grant));
        }
        let mut queue = shared.queue.lock();
        let now = shared.now();
        match St::enqueue(&shared, &queue, now, cost) {
            Enqueue::Admit(grant) => {
                drop(queue);
                metrics::admitted();
                return Some(self.admit(grant));
            }
            Enqueue::Wait(wait) => {
                if self.too_long(wait) || queue.len() >= shared.max_queue {
                    drop(queue);
                    return Some(self.reject(wait));
                }
            }
            Enqueue::Ask => {
                if queue.len() >= shared.max_queue {
                    drop(queue);
                    return Some(self.reject(shared.gcra.first_interval()));
                }
            }
        }
        self.ticket = Some(queue.push(cost));
        shared.queued.fetch_add(1, Relaxed);
        self.queued_at = now;
        None
    }
}

impl<C: LimiterClock, St: Store<C>> Future for Acquire<C, St> {
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
        // The burst may have been lowered under this waiter's cost since it queued (a quota
        // change wakes the head): no bucket can hold it any more, and waiting would hold up
        // everyone behind it. Refused like `peek_n` answers such a cost: never. (A cost of 1
        // always fits: no burst is below 1.)
        if this.cost > 1 && this.cost > this.limiter.shared.gcra.max_cost() {
            this.leave();
            return this.refuse(RateLimited::new(Duration::MAX));
        }
        St::poll_queued(this, cx, ticket)
    }
}

impl<C: LimiterClock, St: Store<C>> Drop for Acquire<C, St> {
    fn drop(&mut self) {
        self.leave();
    }
}
