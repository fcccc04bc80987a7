//! Where a ledger keeps its state: [`MemoryStore`] (this process), [`FileStore`] (a journal
//! that survives `kill -9`), `RedisStore` (feature `redis`: shared by a fleet), or
//! [`DynStore`] (any of them, chosen at run time).
//!
//! A [`Ledger`](crate::Ledger) is generic over its store. The ledger owns the policy (which
//! priority may spend which reserve, metrics, logs, the clock); the store owns the state and
//! decides each reservation in one atomic step (one lock, one journal record, one Lua script).
//! A store never calls back into its ledger.
//!
//! Stores that answer without waiting on the network implement [`SyncStore`], and only their
//! ledgers have the synchronous API ([`Ledger::reserve`](crate::Ledger::reserve),
//! [`Ledger::snapshot`](crate::Ledger::snapshot), ...). Every ledger has the asynchronous one.
//!
//! The traits are sealed: the stores are this crate's.

use std::sync::Arc;
use std::time::Duration;

use tollway_core::SharedClock;

use crate::window::Window;

mod dynamic;
mod file;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod state;

#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
pub use dynamic::DynStore;
pub use file::FileStore;
pub use memory::MemoryStore;

pub(crate) use backend::{Backend, Decision, Finish, Grant, SyncBackend};
#[cfg(test)]
pub(crate) use file::Disk as TestDisk;

/// A ledger's state: [`MemoryStore`], [`FileStore`], `RedisStore` or [`DynStore`]. Sealed.
pub trait Store: Backend {}

/// A [`Store`] that answers without a round trip: [`MemoryStore`] at once, [`FileStore`]
/// after its journal write is durable (blocking the calling thread for one group commit).
/// Sealed.
///
/// Only their ledgers have the synchronous API; the others do not compile with it:
///
/// ```compile_fail
/// use tollway_budget::{Ledger, Priority, Window};
///
/// let ledger = Ledger::new(10, Window::day()).to_dyn(); // any store: maybe Redis
/// ledger.reserve(1, Priority::Normal); // no: use reserve_async
/// ```
pub trait SyncStore: Store + SyncBackend {}

/// What a builder hands a store when it creates one. Each store reads what concerns it (the
/// lease, timeout and clock concern shared stores only).
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub(crate) struct StoreConfig {
    pub(crate) limits: Vec<(u64, Window)>,
    pub(crate) balance: Option<u64>,
    pub(crate) name: Arc<str>,
    pub(crate) lease: Duration,
    pub(crate) timeout: Duration,
    pub(crate) compact_every: u64,
    pub(crate) clock: SharedClock,
}

// The sealed half of the store traits: public items in a private module, so that `Store` can be
// named in bounds but not implemented outside this crate.
#[allow(unreachable_pub)]
mod backend {
    use std::fmt;
    use std::future::Future;
    use std::time::Duration;

    use tollway_core::{ExhaustedReason, StoreUnavailable};

    use crate::snapshot::Snapshot;

    /// A store's operations. Each one takes effect when it is called (a future that is never
    /// polled has still reserved, settled or latched); the future only reports the outcome.
    pub trait Backend: fmt::Debug + Send + Sync + 'static {
        /// A reservation's outcome: decided and, for a durable store, durable.
        type Reserving: Future<Output = Result<Decision, StoreUnavailable>> + Unpin + Send + 'static;
        /// The outcome of an operation that changes the state.
        type Pending: Future<Output = Result<(), StoreUnavailable>> + Send + 'static;
        /// A snapshot.
        type Snapshotting: Future<Output = Result<Snapshot, StoreUnavailable>> + Send + 'static;

        /// Reserves `cost` if every limit leaves `cost + floor`.
        fn reserve(&self, cost: u64, floor: u64, now: i64) -> Self::Reserving;
        /// Releases whatever `reserving` was or will be granted: its caller gave up on it.
        fn cancel(&self, reserving: Self::Reserving, now: i64);
        /// Settles or refunds `grant`, syncs the balance its response carried and latches on
        /// a 402, as one step.
        fn finish(&self, grant: Grant, finish: Finish, now: i64) -> Self::Pending;
        /// Latches after a 402.
        fn latch(&self, now: i64) -> Self::Pending;
        /// Lifts the latch.
        fn reset(&self, now: i64) -> Self::Pending;
        /// The upstream balance, read now.
        fn sync_balance(&self, balance: u64, now: i64) -> Self::Pending;
        /// Everything the store knows (the ledger fills in its critical reserve).
        fn snapshot(&self, now: i64) -> Self::Snapshotting;
        /// Resolves once everything started so far has reached the store.
        fn flush(&self) -> Self::Pending;
        /// How long a reservation holds credit before it counts as spent, for stores shared
        /// by processes that may die.
        fn lease(&self) -> Option<Duration> {
            None
        }
        /// Whether the state is shared with other processes.
        fn is_shared(&self) -> bool {
            false
        }
    }

    /// The operations of stores that answer without a round trip.
    pub trait SyncBackend: Backend {
        /// [`Backend::reserve`], waiting in this thread.
        fn reserve_now(
            &self,
            cost: u64,
            floor: u64,
            now: i64,
        ) -> Result<Decision, StoreUnavailable>;
        /// [`Backend::snapshot`], at once.
        fn snapshot_now(&self, now: i64) -> Snapshot;
    }

    /// What a store decided.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Decision {
        /// Reserved.
        Granted(Grant),
        /// Refused, and when credit is expected back if the store knows.
        Refused(ExhaustedReason, Option<Duration>),
    }

    /// A reservation as its store knows it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Grant {
        id: u64,
        cost: u64,
        stamp: u64,
    }

    impl Grant {
        /// Reservation `id` of `cost`, granted at `stamp` (a value that only grows, in the
        /// store's own order: an id, or the store's clock).
        pub const fn new(id: u64, cost: u64, stamp: u64) -> Self {
            Self { id, cost, stamp }
        }

        /// The store's id for it.
        pub const fn id(&self) -> u64 {
            self.id
        }

        /// The credits held.
        pub const fn cost(&self) -> u64 {
            self.cost
        }

        /// When it was granted, in the store's order.
        pub const fn stamp(&self) -> u64 {
            self.stamp
        }
    }

    /// How a reservation ends.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Finish {
        /// What to charge; `None` refunds.
        pub charge: Option<u64>,
        /// The upstream balance the response reported.
        pub balance: Option<u64>,
        /// The response was a 402: latch.
        pub latch: bool,
    }

    impl Finish {
        /// A refund: nothing charged, nothing learned.
        pub const fn refund() -> Self {
            Self {
                charge: None,
                balance: None,
                latch: false,
            }
        }

        /// A settle charging `charge`.
        pub const fn settle(charge: u64) -> Self {
            Self {
                charge: Some(charge),
                balance: None,
                latch: false,
            }
        }

        /// What a response says: its charge, the balance it reported, whether it was a 402.
        pub const fn response(charge: u64, balance: Option<u64>, latch: bool) -> Self {
            Self {
                charge: Some(charge),
                balance,
                latch,
            }
        }
    }
}
