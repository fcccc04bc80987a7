//! Priority admission: a fixed number of requests are processed at once; the rest
//! wait in one bounded queue shared by every priority. When the queue is full, an arrival of
//! higher priority than the lowest waiter takes that waiter's place (the evicted one is
//! answered 503); any other arrival is answered 503. Waiters are served highest priority
//! first, first come first served within a priority.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;

use super::key::RequestHead;
use tokio::sync::oneshot;

type TierFn = dyn Fn(&RequestHead<'_>) -> u8 + Send + Sync;

/// Priority admission: `slots` requests in progress at once, up to `max_queue` waiting.
///
/// A request's priority (0 lowest, 255 highest) comes from its tier, computed from its head
/// (typically from the API key: a free tier 0, a paying tier 6).
#[derive(Clone)]
pub struct PriorityAdmission {
    pub(crate) slots: usize,
    pub(crate) max_queue: usize,
    pub(crate) tier: Arc<TierFn>,
}

impl fmt::Debug for PriorityAdmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityAdmission")
            .field("slots", &self.slots)
            .field("max_queue", &self.max_queue)
            .finish_non_exhaustive()
    }
}

impl PriorityAdmission {
    /// `slots` requests processed at once (at least one), `max_queue` waiting; every request
    /// has priority 0 until [`tier`](Self::tier) says otherwise.
    pub fn new(slots: usize, max_queue: usize) -> Self {
        Self {
            slots: slots.max(1),
            max_queue,
            tier: Arc::new(|_: &RequestHead<'_>| 0),
        }
    }

    /// How a request's priority is found.
    #[must_use]
    pub fn tier<F>(mut self, tier: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> u8 + Send + Sync + 'static,
    {
        self.tier = Arc::new(tier);
        self
    }
}

/// What became of an arrival.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival<W> {
    /// A slot was free and nobody waits: go.
    Admitted,
    /// Waiting with this ticket; the waiter it displaced, if the queue was full.
    Queued(u64, Option<(u64, W)>),
    /// The queue is full of waiters of at least this priority.
    Rejected(W),
}

/// The admission state, without any async machinery (what the reference model checks).
#[derive(Debug)]
pub(crate) struct AdmissionQueue<W> {
    slots: usize,
    max_queue: usize,
    busy: usize,
    /// Highest priority first, then oldest first; the last entry is the next to be evicted.
    waiting: BTreeMap<(Reverse<u8>, u64), W>,
    next_ticket: u64,
}

impl<W> AdmissionQueue<W> {
    pub(crate) fn new(slots: usize, max_queue: usize) -> Self {
        Self {
            slots,
            max_queue,
            busy: 0,
            waiting: BTreeMap::new(),
            next_ticket: 0,
        }
    }

    /// Takes a slot if one is free and nobody waits (no waiter needed).
    pub(crate) fn try_admit(&mut self) -> bool {
        let free = self.busy < self.slots && self.waiting.is_empty();
        if free {
            self.busy += 1;
        }
        free
    }

    pub(crate) fn arrive(&mut self, priority: u8, waiter: W) -> Arrival<W> {
        if self.busy < self.slots && self.waiting.is_empty() {
            self.busy += 1;
            return Arrival::Admitted;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        if self.waiting.len() < self.max_queue {
            self.waiting.insert((Reverse(priority), ticket), waiter);
            return Arrival::Queued(ticket, None);
        }
        // Full: the newest waiter of the lowest priority goes, if it is below the arrival.
        match self.waiting.last_key_value() {
            Some((&(Reverse(lowest), _), _)) if lowest < priority => {
                let ((_, evicted_ticket), evicted) =
                    self.waiting.pop_last().expect("the queue has a last entry");
                self.waiting.insert((Reverse(priority), ticket), waiter);
                Arrival::Queued(ticket, Some((evicted_ticket, evicted)))
            }
            _ => Arrival::Rejected(waiter),
        }
    }

    /// A request finished: its slot goes to the first waiter, which is returned.
    pub(crate) fn release(&mut self) -> Option<(u64, W)> {
        self.busy = self.busy.saturating_sub(1);
        let ((_, ticket), waiter) = self.waiting.pop_first()?;
        self.busy += 1;
        Some((ticket, waiter))
    }

    /// A waiter gave up; whether it was still waiting.
    pub(crate) fn cancel(&mut self, priority: u8, ticket: u64) -> bool {
        self.waiting.remove(&(Reverse(priority), ticket)).is_some()
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub(crate) fn busy(&self) -> usize {
        self.busy
    }
}

/// The shared admission state of a layer.
#[derive(Debug)]
pub(crate) struct Admission {
    queue: Mutex<AdmissionQueue<oneshot::Sender<()>>>,
}

/// What the service does with a request.
#[derive(Debug)]
pub(crate) enum Admit {
    Now(Permit),
    Wait(Waiting),
    Rejected,
}

impl Admission {
    pub(crate) fn new(config: &PriorityAdmission) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(AdmissionQueue::new(config.slots, config.max_queue)),
        })
    }

    pub(crate) fn arrive(self: &Arc<Self>, priority: u8) -> Admit {
        let mut queue = self.queue.lock();
        // Admitted at once: no channel to make.
        if queue.try_admit() {
            return Admit::Now(Permit {
                admission: Arc::clone(self),
            });
        }
        let (sender, receiver) = oneshot::channel();
        match queue.arrive(priority, sender) {
            Arrival::Admitted => Admit::Now(Permit {
                admission: Arc::clone(self),
            }),
            // Dropping the evicted waiter's sender tells it it was evicted.
            Arrival::Queued(ticket, _evicted) => Admit::Wait(Waiting {
                admission: Some(Arc::clone(self)),
                receiver,
                priority,
                ticket,
            }),
            Arrival::Rejected(_) => Admit::Rejected,
        }
    }

    fn release(&self) {
        let mut queue = self.queue.lock();
        // A waiter whose receiver is gone has already left; give the slot to the next.
        while let Some((_, sender)) = queue.release() {
            if sender.send(()).is_ok() {
                return;
            }
        }
    }

    /// Requests in progress and waiting.
    pub(crate) fn load(&self) -> (usize, usize) {
        let queue = self.queue.lock();
        (queue.busy(), queue.waiting())
    }
}

/// A processing slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    admission: Arc<Admission>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.release();
    }
}

/// A queued request: resolves to its permit, or to `None` when it was evicted.
#[derive(Debug)]
pub(crate) struct Waiting {
    admission: Option<Arc<Admission>>,
    receiver: oneshot::Receiver<()>,
    priority: u8,
    ticket: u64,
}

impl Future for Waiting {
    type Output = Option<Permit>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = std::task::ready!(Pin::new(&mut self.receiver).poll(cx));
        let admission = self.admission.take();
        Poll::Ready(match (outcome, admission) {
            (Ok(()), Some(admission)) => Some(Permit { admission }),
            _ => None,
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        let mut queue = admission.queue.lock();
        if queue.cancel(self.priority, self.ticket) {
            return;
        }
        drop(queue);
        // Admitted while being dropped: the slot was ours, pass it on.
        if self.receiver.try_recv().is_ok() {
            admission.release();
        }
    }
}

#[cfg(test)]
mod tests;
