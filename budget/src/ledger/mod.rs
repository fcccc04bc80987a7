//! The credit ledger: limits, reservations, the critical reserve, the 402 latch and the upstream
//! balance, kept in a [store](crate::store).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollway_core::StoreUnavailable;

use crate::error::ReserveError;
use crate::priority::Priority;
use crate::reservation::Reservation;
use crate::snapshot::Snapshot;
use crate::store::{Decision, DynStore, Finish, Grant, MemoryStore, Store, SyncStore};
use crate::window::Window;

mod builder;
mod observe;
mod reserve;
mod time;

pub use builder::LedgerBuilder;
pub use reserve::Reserve;
pub(crate) use time::Time;

/// A shared credit budget. Cheap to clone: clones share one ledger.
///
/// Credit is [reserved](Self::reserve) before a request is sent and the [`Reservation`] is
/// settled with the real charge when the response arrives, or refunded when it is dropped. Under
/// any concurrency, spend plus reservations never exceed any limit: the check and the reservation
/// are one step of the [store](crate::store) (`St`): [`MemoryStore`] by default, a journal file
/// with [`LedgerBuilder::open`], Redis with `LedgerBuilder::redis`.
///
/// ```
/// use tollway_budget::{Ledger, Priority, Window};
/// use tollway_core::ExhaustedReason;
///
/// let ledger = Ledger::builder()
///     .limit(5_000, Window::day())
///     .limit(100_000, Window::month())
///     .critical_reserve(1_000)
///     .build();
///
/// let reservation = ledger.reserve(1, Priority::Normal).unwrap();
/// assert_eq!(ledger.snapshot().reserved, 1);
/// reservation.settle(1); // the upstream charged it
/// assert_eq!(ledger.snapshot().windows[0].spent, 1);
///
/// ledger.reserve(7, Priority::Normal).unwrap(); // dropped at once: refunded
/// assert_eq!(ledger.remaining(), 4_999);
///
/// // The last 1,000 credits of the day are kept for critical work.
/// let err = ledger.reserve(4_000, Priority::Normal).unwrap_err();
/// assert_eq!(err.exhausted().unwrap().reason(), ExhaustedReason::CriticalReserve);
/// assert!(ledger.reserve(4_000, Priority::Critical).is_ok());
/// ```
pub struct Ledger<St: Store = MemoryStore> {
    pub(crate) shared: Arc<Shared<St>>,
}

pub(crate) struct Shared<St> {
    pub(crate) store: St,
    time: Time,
    critical_reserve: u64,
    backfill_reserve: u64,
    pub(crate) name: Arc<str>,
}

impl<St: Store> Clone for Ledger<St> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<St: Store> fmt::Debug for Ledger<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("name", &self.shared.name)
            .field("store", &self.shared.store)
            .field("critical_reserve", &self.shared.critical_reserve)
            .field("backfill_reserve", &self.shared.backfill_reserve)
            .finish()
    }
}

/// Milliseconds since the unix epoch (negative before it), saturating far out.
pub(crate) fn system_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX / 4),
    }
}

impl Ledger {
    /// Starts configuring a ledger.
    pub fn builder() -> LedgerBuilder {
        LedgerBuilder::new()
    }

    /// An in-memory ledger allowing `credits` per `window`, with no reserve.
    pub fn new(credits: u64, window: Window) -> Self {
        Self::builder().limit(credits, window).build()
    }
}

impl<St: Store> Ledger<St> {
    pub(crate) fn from_parts(
        store: St,
        time: Time,
        critical_reserve: u64,
        backfill_reserve: u64,
        name: Arc<str>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                time,
                critical_reserve,
                backfill_reserve: backfill_reserve.max(critical_reserve),
                name,
            }),
        }
    }

    /// The configured clock, in milliseconds since the epoch.
    #[inline]
    pub(crate) fn now(&self) -> i64 {
        self.shared.time.millis()
    }

    /// Credit a request of `priority` must leave untouched.
    #[inline]
    pub(crate) fn floor(&self, priority: Priority) -> u64 {
        match priority {
            Priority::Critical => 0,
            Priority::Normal => self.shared.critical_reserve,
            Priority::Backfill => self.shared.backfill_reserve,
        }
    }

    /// Reserves `cost` credits for a request of `priority`, waiting as long as the store needs:
    /// not at all in memory, one group commit for a journal, one round trip to Redis.
    ///
    /// The reservation is made when this is called; dropping the future before it completes
    /// releases it.
    ///
    /// # Errors
    ///
    /// As [`reserve`](Self::reserve); [`ReserveError::Store`] when the store cannot be reached
    /// or cannot make the reservation durable (nothing is reserved: fail closed).
    pub fn reserve_async(&self, cost: u64, priority: Priority) -> Reserve<St> {
        let now = self.now();
        let reserving = self.shared.store.reserve(cost, self.floor(priority), now);
        Reserve::new(self.clone(), reserving, cost, priority)
    }

    /// Ends `grant` as `finish` says, counting it.
    pub(crate) fn finish(&self, grant: Grant, finish: Finish) -> St::Pending {
        self.count_finish(&grant, &finish);
        self.shared.store.finish(grant, finish, self.now())
    }

    /// Marks the account empty after an upstream `402`: every reservation is refused at once
    /// until the first window rolls over, the balance is [synced](Self::sync_balance) above zero,
    /// or the ledger is [`reset`](Self::reset). Takes effect at once in this process; a
    /// journal or Redis records it a moment later ([`latch_async`](Self::latch_async) waits).
    pub fn latch(&self) {
        drop(self.shared.store.latch(self.now()));
        tracing::warn!(ledger = %self.shared.name, "budget latched: the upstream answered 402");
    }

    /// [`latch`](Self::latch), waiting until the store has recorded it.
    ///
    /// # Errors
    ///
    /// If the store could not record it.
    pub async fn latch_async(&self) -> Result<(), StoreUnavailable> {
        let pending = self.shared.store.latch(self.now());
        tracing::warn!(ledger = %self.shared.name, "budget latched: the upstream answered 402");
        pending.await
    }

    /// Lifts the 402 latch. Spend is kept: it was really charged.
    pub fn reset(&self) {
        drop(self.shared.store.reset(self.now()));
        tracing::info!(ledger = %self.shared.name, "budget latch reset");
    }

    /// [`reset`](Self::reset), waiting until the store has recorded it.
    ///
    /// # Errors
    ///
    /// If the store could not record it.
    pub async fn reset_async(&self) -> Result<(), StoreUnavailable> {
        self.shared.store.reset(self.now()).await
    }

    /// Tells the ledger the upstream's real balance, read now: from then on it is one more
    /// limit, lowered by every charge. Above zero it lifts the 402 latch; at zero every request
    /// is refused with [`ExhaustedReason::Upstream402`](tollway_core::ExhaustedReason) until a
    /// later sync.
    ///
    /// A balance a *response* reports is applied through the [`BudgetLayer`](crate::BudgetLayer)
    /// instead, which knows when that request was sent: one sent before a 402 never lifts its
    /// latch.
    pub fn sync_balance(&self, remaining: u64) {
        drop(self.shared.store.sync_balance(remaining, self.now()));
        tracing::debug!(ledger = %self.shared.name, remaining, "budget balance synced");
    }

    /// [`sync_balance`](Self::sync_balance), waiting until the store has recorded it.
    ///
    /// # Errors
    ///
    /// If the store could not record it.
    pub async fn sync_balance_async(&self, remaining: u64) -> Result<(), StoreUnavailable> {
        self.shared.store.sync_balance(remaining, self.now()).await
    }

    /// Everything the ledger knows, at once (read from Redis for a Redis ledger).
    ///
    /// # Errors
    ///
    /// If the store cannot be reached.
    pub async fn snapshot_async(&self) -> Result<Snapshot, StoreUnavailable> {
        let mut snapshot = self.shared.store.snapshot(self.now()).await?;
        snapshot.critical_reserve = self.shared.critical_reserve;
        Ok(snapshot)
    }

    /// Waits until everything this process handed the store so far has reached it: settles,
    /// refunds, latches and syncs of a Redis ledger are sent in background tasks, and those of
    /// a journal are made durable by its next group commit.
    pub async fn flush(&self) {
        if let Err(error) = self.shared.store.flush().await {
            tracing::warn!(ledger = %self.shared.name, %error, "budget flush incomplete");
        }
    }

    /// How long a reservation holds credit before it counts as spent, for a ledger shared by
    /// processes that may die (Redis); `None` for the others.
    pub fn lease(&self) -> Option<Duration> {
        self.shared.store.lease()
    }

    /// Whether this ledger lives in a store shared with other processes (Redis).
    pub fn is_shared(&self) -> bool {
        self.shared.store.is_shared()
    }

    /// The ledger's name (its metrics' `ledger` label).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// This ledger behind a [`DynStore`]: the same state, one type whatever the store, for code
    /// that chooses the store at run time.
    pub fn to_dyn(&self) -> Ledger<DynStore> {
        let store = DynStore::new(self.clone(), |ledger: &Self| &ledger.shared.store);
        Ledger::from_parts(
            store,
            self.shared.time.clone(),
            self.shared.critical_reserve,
            self.shared.backfill_reserve,
            Arc::clone(&self.shared.name),
        )
    }
}

impl<St: SyncStore> Ledger<St> {
    /// Reserves `cost` credits for a request of `priority`, or says why not.
    ///
    /// Refused when the ledger is latched by a 402 ([`ExhaustedReason::Upstream402`]), when any
    /// limit or the upstream balance has less than `cost` left ([`ExhaustedReason::Window`], or
    /// `Upstream402` for the balance), or when granting it would dip into a reserve this priority
    /// may not use ([`ExhaustedReason::CriticalReserve`]). A [file-backed](LedgerBuilder::open)
    /// ledger grants nothing that is not durable: this blocks the thread for one group commit
    /// (in async code, use [`reserve_async`](Self::reserve_async)).
    ///
    /// # Errors
    ///
    /// [`ReserveError::Exhausted`] with the reason and, when known, how long until credit is back;
    /// [`ReserveError::Store`] if the journal could not make it durable.
    ///
    /// [`ExhaustedReason::Upstream402`]: tollway_core::ExhaustedReason::Upstream402
    /// [`ExhaustedReason::Window`]: tollway_core::ExhaustedReason::Window
    /// [`ExhaustedReason::CriticalReserve`]: tollway_core::ExhaustedReason::CriticalReserve
    pub fn reserve(&self, cost: u64, priority: Priority) -> Result<Reservation<St>, ReserveError> {
        let now = self.now();
        match self
            .shared
            .store
            .reserve_now(cost, self.floor(priority), now)
        {
            Ok(Decision::Granted(grant)) => {
                tracing::trace!(cost, priority = priority.as_str(), "credit reserved");
                Ok(Reservation::new(self.clone(), grant))
            }
            Ok(Decision::Refused(reason, retry_after)) => {
                Err(self.reject(reason, retry_after, cost, priority))
            }
            Err(error) => Err(ReserveError::Store(error)),
        }
    }

    /// Everything the ledger knows, at once.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = self.shared.store.snapshot_now(self.now());
        snapshot.critical_reserve = self.shared.critical_reserve;
        snapshot
    }

    /// Credit a normal-priority request could reserve now, ignoring the critical reserve:
    /// the least left across limits and balance, after reservations in flight. `u64::MAX` when
    /// nothing bounds spend; 0 while latched.
    pub fn remaining(&self) -> u64 {
        self.snapshot().remaining
    }

    /// Whether a 402 latch is holding.
    pub fn is_latched(&self) -> bool {
        self.snapshot().latched
    }
}
