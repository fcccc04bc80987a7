//! [`MemoryStore`]: the limiter's state in this process, one atomic GCRA word per quota.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tollway_core::RateLimited;

use super::Enqueue;
use super::backend::Backend;
use crate::clock::LimiterClock;
use crate::gcra::Grant;
use crate::limiter::Shared;
use crate::metrics;
use crate::queue::{Acquire, WaitQueue};
use crate::sync::Ordering::Relaxed;

/// The default store: the quotas' state in this process, in the limiter's lock-free GCRA
/// words. Nothing to configure.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryStore;

#[allow(private_interfaces)]
impl<C: LimiterClock> Backend<C> for MemoryStore {
    type Head = ();

    // Always: the permit's undo record then never leaves registers when the caller drops it.
    #[inline(always)]
    fn try_now(shared: &Shared<C, Self>, now: u64, cost: u32) -> Result<Grant, u64> {
        if shared.queued.load(Relaxed) != 0 {
            return behind_the_queue(shared, now, cost);
        }
        shared.gcra.try_acquire(now, cost)
    }

    fn peek(shared: &Shared<C, Self>, now: u64, cost: u32) -> u64 {
        let queued = if shared.queued.load(Relaxed) == 0 {
            0
        } else {
            shared.queue.lock().queued_cost()
        };
        shared.gcra.wait(now, queued + u64::from(cost))
    }

    fn available(shared: &Shared<C, Self>, now: u64) -> u64 {
        shared.gcra.available(now)
    }

    fn enqueue(shared: &Shared<C, Self>, queue: &WaitQueue, now: u64, cost: u32) -> Enqueue {
        if queue.len() == 0
            && let Ok(grant) = shared.gcra.try_acquire(now, cost)
        {
            return Enqueue::Admit(grant);
        }
        Enqueue::Wait(
            shared
                .gcra
                .wait(now, queue.queued_cost() + u64::from(cost))
                .max(1),
        )
    }

    fn poll_queued(
        acquire: &mut Acquire<C, Self>,
        cx: &mut Context<'_>,
        ticket: u64,
    ) -> Poll<Result<(), RateLimited>> {
        let shared = Arc::clone(&acquire.limiter.shared);
        loop {
            let mut queue = shared.queue.lock();
            queue.set_waker(ticket, cx.waker());
            if !queue.is_head(ticket) {
                return Poll::Pending;
            }
            let now = shared.now();
            // An adaptive limiter forgives the timer's own lateness (see `timer`): a head woken
            // late is admitted as of its due time, within the margin.
            let at = acquire.timer.admit_at(now);
            let admitted = match shared.gcra.try_acquire(at, acquire.cost) {
                Err(_) if at < now => shared.gcra.try_acquire(now, acquire.cost),
                admitted => admitted,
            };
            match admitted {
                Ok(grant) => {
                    // Leaves under the same lock: the next head is woken before anyone can
                    // see this one gone.
                    queue.remove(ticket);
                    shared.queued.fetch_sub(1, Relaxed);
                    acquire.ticket = None;
                    drop(queue);
                    metrics::waited(Duration::from_nanos(now.saturating_sub(acquire.queued_at)));
                    return acquire.admit(grant);
                }
                Err(wait) => {
                    drop(queue);
                    let waited = now.saturating_sub(acquire.queued_at);
                    if acquire.too_long(waited.saturating_add(wait)) {
                        acquire.leave();
                        return acquire.reject(wait);
                    }
                    let margin = shared.adaptive.as_ref().map_or(0.0, |a| a.margin);
                    let pace = if margin > 0.0 {
                        shared.gcra.first_interval()
                    } else {
                        0
                    };
                    if acquire
                        .timer
                        .sleep(cx, now, wait, margin, pace)
                        .is_pending()
                    {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

#[cold]
fn behind_the_queue<C: LimiterClock>(
    shared: &Shared<C, MemoryStore>,
    now: u64,
    cost: u32,
) -> Result<Grant, u64> {
    let queued_cost = shared.queue.lock().queued_cost();
    Err(shared.gcra.wait(now, queued_cost + u64::from(cost)).max(1))
}
