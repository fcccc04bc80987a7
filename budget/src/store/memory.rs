//! The in-memory store: the ledger of one process, behind one short lock.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tollway_core::StoreUnavailable;

use super::backend::{Backend, Decision, Finish, Grant, SyncBackend};
use super::state::State;
use super::{Store, StoreConfig, SyncStore};
use crate::snapshot::Snapshot;

/// A ledger kept in this process's memory: [`Ledger::new`](crate::Ledger::new) and
/// [`LedgerBuilder::build`](crate::LedgerBuilder::build). Every operation is one short lock;
/// nothing survives the process.
pub struct MemoryStore {
    state: Mutex<State>,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    name: Arc<str>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("MemoryStore")
            .field("windows", &state.windows)
            .field("reserved", &state.reserved)
            .field("balance", &state.balance)
            .field("latched", &state.latch.is_some())
            .finish()
    }
}

impl MemoryStore {
    pub(crate) fn new(config: &StoreConfig, now: i64) -> Self {
        let store = Self {
            state: Mutex::new(State::new(&config.limits, config.balance, now)),
            name: Arc::clone(&config.name),
        };
        store.with(|_| ());
        store
    }

    /// Runs `f` under the lock, then updates the gauges.
    #[inline]
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock();
        let out = f(&mut state);
        #[cfg(feature = "metrics")]
        state.record_gauges(&self.name);
        out
    }
}

impl Store for MemoryStore {}
impl SyncStore for MemoryStore {}

type Done = Ready<Result<(), StoreUnavailable>>;

/// A memory store's decision, already made.
// Public in a private module: the sealed store trait names it.
#[allow(unreachable_pub)]
#[derive(Debug)]
pub struct Decided(Option<Decision>);

impl Future for Decided {
    type Output = Result<Decision, StoreUnavailable>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(self.0.take().expect("Decided polled after completion")))
    }
}

impl Backend for MemoryStore {
    type Reserving = Decided;
    type Pending = Done;
    type Snapshotting = Ready<Result<Snapshot, StoreUnavailable>>;

    #[inline]
    fn reserve(&self, cost: u64, floor: u64, now: i64) -> Decided {
        Decided(Some(self.with(|s| s.decide(cost, floor, now))))
    }

    fn cancel(&self, reserving: Decided, now: i64) {
        if let Some(Decision::Granted(grant)) = reserving.0 {
            self.with(|s| s.finish(&grant, &Finish::refund(), now));
        }
    }

    #[inline]
    fn finish(&self, grant: Grant, finish: Finish, now: i64) -> Done {
        self.with(|s| s.finish(&grant, &finish, now));
        ready(Ok(()))
    }

    fn latch(&self, now: i64) -> Done {
        self.with(|s| s.set_latch(now));
        ready(Ok(()))
    }

    fn reset(&self, _now: i64) -> Done {
        self.with(|s| s.latch = None);
        ready(Ok(()))
    }

    fn sync_balance(&self, balance: u64, _now: i64) -> Done {
        self.with(|s| s.sync(balance));
        ready(Ok(()))
    }

    fn snapshot(&self, now: i64) -> Self::Snapshotting {
        ready(Ok(self.snapshot_now(now)))
    }

    fn flush(&self) -> Done {
        ready(Ok(()))
    }
}

impl SyncBackend for MemoryStore {
    #[inline]
    fn reserve_now(&self, cost: u64, floor: u64, now: i64) -> Result<Decision, StoreUnavailable> {
        Ok(self.with(|s| s.decide(cost, floor, now)))
    }

    fn snapshot_now(&self, now: i64) -> Snapshot {
        self.state.lock().snapshot(now)
    }
}
