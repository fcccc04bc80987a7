//! [`LedgerBuilder`]: limits, reserves, the clock, and the store the ledger lives in.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tollway_core::{Clock, SharedClock};

use super::Time;

use super::Ledger;
use crate::store::{FileStore, MemoryStore, Store, StoreConfig};
use crate::window::Window;

/// Compact a file-backed journal after this many appended records, unless configured.
const DEFAULT_COMPACT_EVERY: u64 = 10_000;

/// How long a shared store's reservation holds credit unless configured.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How long one shared-store operation may take unless configured, reconnection included.
const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// Configures a [`Ledger`]; see [`Ledger::builder`]. [`build`](Self::build) keeps it in memory,
/// [`open`](Self::open) in a journal file, `redis` (feature `redis`) in Redis.
pub struct LedgerBuilder {
    limits: Vec<(u64, Window)>,
    critical_reserve: u64,
    backfill_reserve: u64,
    balance: Option<u64>,
    time: Time,
    name: String,
    compact_every: u64,
    lease: Duration,
    store_timeout: Duration,
}

impl fmt::Debug for LedgerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LedgerBuilder")
            .field("limits", &self.limits)
            .field("critical_reserve", &self.critical_reserve)
            .field("backfill_reserve", &self.backfill_reserve)
            .field("balance", &self.balance)
            .field("name", &self.name)
            .field("compact_every", &self.compact_every)
            .field("lease", &self.lease)
            .field("store_timeout", &self.store_timeout)
            .finish_non_exhaustive()
    }
}

impl LedgerBuilder {
    pub(super) fn new() -> Self {
        Self {
            limits: Vec::new(),
            critical_reserve: 0,
            backfill_reserve: 0,
            balance: None,
            time: Time::Coarse,
            name: String::from("default"),
            compact_every: DEFAULT_COMPACT_EVERY,
            lease: DEFAULT_LEASE,
            store_timeout: DEFAULT_STORE_TIMEOUT,
        }
    }

    /// Allows at most `credits` per `window`. Several limits are checked together, all or
    /// nothing (e.g. 5,000 a day and 100,000 a month). No limit at all means only the upstream
    /// balance, if synced, bounds spend.
    #[must_use]
    pub fn limit(mut self, credits: u64, window: Window) -> Self {
        self.limits.push((credits, window));
        self
    }

    /// Credits that only [`Priority::Critical`](crate::Priority::Critical) requests may spend
    /// (default 0). It applies to every limit and to the upstream balance.
    #[must_use]
    pub fn critical_reserve(mut self, credits: u64) -> Self {
        self.critical_reserve = credits;
        self
    }

    /// Credits that [`Priority::Backfill`](crate::Priority::Backfill) requests leave alone
    /// (default: the critical reserve; never less than it).
    #[must_use]
    pub fn backfill_reserve(mut self, credits: u64) -> Self {
        self.backfill_reserve = credits;
        self
    }

    /// The upstream balance known at start, as if [`Ledger::sync_balance`] were called. A
    /// file-backed ledger whose journal already holds a synced balance keeps that one.
    #[must_use]
    pub fn balance(mut self, credits: u64) -> Self {
        self.balance = Some(credits);
        self
    }

    /// Reads wall-clock time from `clock`. Windows are wall-clock spans, so
    /// [`Clock::system_now`] is what counts; use a [`FakeClock`](tollway_core::FakeClock) in
    /// tests.
    ///
    /// By default the ledger reads the system's real-time clock coarsely: in a few nanoseconds,
    /// exact to the kernel's tick (a few milliseconds), so windows roll over and rolling spend
    /// leaves to within that. Give [`MonotonicClock`](tollway_core::MonotonicClock) (whose
    /// `system_now` is the precise system time) to read it precisely instead.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.time = Time::Clock(SharedClock::new(clock));
        self
    }

    /// The ledger's name: the `ledger` label of its metrics and a field of its log events.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A file-backed ledger compacts its journal after this many appended records (default
    /// 10,000; 0 counts as 1).
    #[must_use]
    pub fn compact_every(mut self, records: u64) -> Self {
        self.compact_every = records.max(1);
        self
    }

    /// How long a shared ledger's reservation holds credit (default 30 s, at least 1 ms). A
    /// reservation neither settled nor refunded by then (its worker crashed or hung) expires
    /// and **counts as spent** at its full cost; settling or refunding it later counts nothing
    /// twice (only a charge above its cost is added). Make it longer than your slowest request.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(1));
        self
    }

    /// How long a shared ledger waits for one answer, reconnection included (default 1 s, at
    /// least 1 ms), before it fails closed with
    /// [`StoreUnavailable`](tollway_core::StoreUnavailable). A reservation that timed out may
    /// still have been granted: its lease then expires and counts as spent.
    #[must_use]
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// An in-memory ledger.
    pub fn build(self) -> Ledger<MemoryStore> {
        let store = MemoryStore::new(&self.store_config(), self.now());
        self.finish(store)
    }

    /// A ledger journaled to the file at `path`, created (`0600`, its missing folders `0700`)
    /// if missing.
    ///
    /// What the journal holds is replayed first: spend still inside a window counts,
    /// reservations that were never settled (their process died) count as spent at their full
    /// cost, and a torn or corrupt record is skipped. The journal is then compacted. Only one
    /// ledger may have a journal open at a time, in any process: it is locked (`flock`, released
    /// when the process dies, even by `kill -9`).
    ///
    /// Reservations are granted once their record is durable; concurrent ones share one sync
    /// (group commit) made by a thread of the ledger's own.
    ///
    /// # Errors
    ///
    /// If another ledger has the journal open: an error of kind
    /// [`WouldBlock`](io::ErrorKind::WouldBlock) holding a
    /// [`Locked`](tollway_core::durable::Locked). If the file cannot be read, or the
    /// compacted journal cannot be written and synced.
    pub fn open(self, path: impl AsRef<Path>) -> io::Result<Ledger<FileStore>> {
        let store = FileStore::open(path.as_ref(), &self.store_config(), self.now())?;
        Ok(self.finish(store))
    }

    /// [`open`](Self::open) on a disk that fails on command.
    #[cfg(test)]
    pub(crate) fn open_on(
        self,
        path: impl AsRef<Path>,
        disk: Arc<dyn crate::store::TestDisk>,
    ) -> io::Result<Ledger<FileStore>> {
        let store = FileStore::open_on(path.as_ref(), &self.store_config(), self.now(), disk)?;
        Ok(self.finish(store))
    }

    /// What a store needs to know.
    pub(crate) fn store_config(&self) -> StoreConfig {
        StoreConfig {
            limits: self.limits.clone(),
            balance: self.balance,
            name: Arc::from(self.name.as_str()),
            lease: self.lease,
            timeout: self.store_timeout,
            compact_every: self.compact_every,
            clock: self.time.shared(),
        }
    }

    /// The configured clock, now.
    pub(crate) fn now(&self) -> i64 {
        self.time.millis()
    }

    /// The ledger over `store`.
    pub(crate) fn finish<St: Store>(self, store: St) -> Ledger<St> {
        Ledger::from_parts(
            store,
            self.time,
            self.critical_reserve,
            self.backfill_reserve,
            Arc::from(self.name),
        )
    }
}
