//! The credit ledger: limits, reservations, the critical reserve, the 402 latch and the upstream
//! balance, optionally journaled to a file.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tollway_core::{BudgetExhausted, Clock, ExhaustedReason, MonotonicClock};

use crate::error::{ReserveError, StoreUnavailable};
use crate::journal::{self, Event, Journal, Record};
use crate::priority::Priority;
use crate::reservation::Reservation;
use crate::snapshot::{Snapshot, WindowUsage};
#[cfg(feature = "redis")]
use crate::store::{DEFAULT_LEASE, DEFAULT_STORE_TIMEOUT, RedisStore};
use crate::window::{Window, WindowState, millis_to_duration};

/// Compact a file-backed journal after this many appended records, unless configured.
const DEFAULT_COMPACT_EVERY: u64 = 10_000;

/// A shared credit budget. Cheap to clone: clones share one ledger.
///
/// Credit is [reserved](Self::reserve) before a request is sent and the [`Reservation`] is
/// settled with the real charge when the response arrives, or refunded when it is dropped. Under
/// any concurrency, spend plus reservations never exceed any limit: the check and the reservation
/// happen under one short lock.
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
#[derive(Clone)]
pub struct Ledger {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    clock: Box<dyn WallClock>,
    critical_reserve: u64,
    backfill_reserve: u64,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    name: String,
    /// Fleet mode: the ledger lives in Redis and `state` is unused.
    #[cfg(feature = "redis")]
    remote: Option<RedisStore>,
}

#[derive(Debug)]
struct State {
    windows: Vec<WindowState>,
    reserved: u64,
    balance: Option<u64>,
    latch: Option<Latch>,
    next_id: u64,
    journal: Option<Journal>,
}

#[derive(Debug, Clone, Copy)]
struct Latch {
    /// When the latch lifts by itself (the first window rollover after it was set).
    until: Option<i64>,
}

trait WallClock: Send + Sync {
    fn millis(&self) -> i64;
}

impl<C: Clock> WallClock for C {
    fn millis(&self) -> i64 {
        system_millis(self.system_now())
    }
}

fn system_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX / 4),
    }
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.shared.remote {
            return f
                .debug_struct("Ledger")
                .field("store", remote)
                .field("critical_reserve", &self.shared.critical_reserve)
                .field("backfill_reserve", &self.shared.backfill_reserve)
                .finish();
        }
        let state = self.shared.state.lock();
        f.debug_struct("Ledger")
            .field("windows", &state.windows)
            .field("reserved", &state.reserved)
            .field("balance", &state.balance)
            .field("latched", &state.latch.is_some())
            .field("critical_reserve", &self.shared.critical_reserve)
            .field("backfill_reserve", &self.shared.backfill_reserve)
            .field("file_backed", &state.journal.is_some())
            .finish()
    }
}

/// Configures a [`Ledger`]; see [`Ledger::builder`].
pub struct LedgerBuilder {
    limits: Vec<(u64, Window)>,
    critical_reserve: u64,
    backfill_reserve: u64,
    balance: Option<u64>,
    clock: Box<dyn WallClock>,
    name: String,
    compact_every: u64,
    #[cfg(feature = "redis")]
    lease: Duration,
    #[cfg(feature = "redis")]
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
            .finish_non_exhaustive()
    }
}

impl LedgerBuilder {
    /// Allows at most `credits` per `window`. Several limits are checked together, all or
    /// nothing (e.g. 5,000 a day and 100,000 a month). No limit at all means only the upstream
    /// balance, if synced, bounds spend.
    #[must_use]
    pub fn limit(mut self, credits: u64, window: Window) -> Self {
        self.limits.push((credits, window));
        self
    }

    /// Credits that only [`Priority::Critical`] requests may spend (default 0). It applies to
    /// every limit and to the upstream balance.
    #[must_use]
    pub fn critical_reserve(mut self, credits: u64) -> Self {
        self.critical_reserve = credits;
        self
    }

    /// Credits that [`Priority::Backfill`] requests leave alone (default: the critical
    /// reserve; never less than it).
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

    /// Reads wall-clock time from `clock` (default: the system clock). Windows are wall-clock
    /// spans, so [`Clock::system_now`] is what counts; use a
    /// [`FakeClock`](tollway_core::FakeClock) in tests.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// The ledger's name: the `ledger` label of its metrics and a field of its log events.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A file-backed ledger compacts its journal after this many appended records (default
    /// 10,000).
    ///
    /// # Panics
    ///
    /// If `records` is zero.
    #[must_use]
    pub fn compact_every(mut self, records: u64) -> Self {
        assert!(records > 0, "compact_every must be at least 1");
        self.compact_every = records;
        self
    }

    /// An in-memory ledger.
    pub fn build(self) -> Ledger {
        let now = self.clock.millis();
        let state = self.initial_state(now);
        self.finish(state)
    }

    /// A ledger journaled to the file at `path`, created if missing.
    ///
    /// What the journal holds is replayed first: spend still inside a window counts, reservations
    /// that were never settled (their process died) count as spent at their full cost, and a torn
    /// or corrupt record is skipped. The journal is then compacted. Only one process may use a
    /// journal at a time.
    ///
    /// # Errors
    ///
    /// If the file cannot be read, or the compacted journal cannot be written and synced.
    pub fn open(self, path: impl AsRef<Path>) -> io::Result<Ledger> {
        let path = path.as_ref();
        let now = self.clock.millis();
        let records = Journal::read(path)?;
        let (events, max_id) = journal::replay(&records, true);
        let mut state = self.initial_state(now);
        state.balance = None;
        state.next_id = max_id + 1;
        for event in &events {
            state.apply(event, now);
        }
        if let Some(Latch { until: Some(until) }) = state.latch
            && now >= until
        {
            state.latch = None;
        }
        let mut compacted = journal::compact(&events, &state.windows, now);
        // The builder's balance is the balance now, unless the journal already knows one.
        if let Some(balance) = self.balance
            && state.balance.is_none()
        {
            state.apply(&Event::Sync { balance }, now);
            compacted.push(Record::Sync { balance, at: now });
        }
        state.journal = Some(Journal::create(path, &compacted, self.compact_every)?);
        tracing::info!(
            path = %path.display(),
            records = records.len(),
            spent = ?state.windows.iter().map(|w| w.spent).collect::<Vec<_>>(),
            "budget ledger opened"
        );
        Ok(self.finish(state))
    }

    /// How long a [Redis](Self::redis) ledger's reservation holds credit (default 30 s). A
    /// reservation neither settled nor refunded by then (its worker crashed or hung) expires and
    /// **counts as spent** at its full cost; settling or refunding it later counts nothing twice
    /// (only a charge above its cost is added). Make it longer than your slowest request.
    ///
    /// # Panics
    ///
    /// If `lease` is under a millisecond.
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        assert!(
            lease >= Duration::from_millis(1),
            "a lease must be at least 1 ms"
        );
        self.lease = lease;
        self
    }

    /// How long a [Redis](Self::redis) ledger waits for one answer, reconnection included
    /// (default 1 s), before it fails closed with [`StoreUnavailable`]. A reservation that timed
    /// out may still have been granted: its lease then expires and counts as spent.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero.
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "a store timeout must be above zero");
        self.store_timeout = timeout;
        self
    }

    /// A ledger kept in Redis, shared by every process (on any machine) that builds it with the
    /// same `prefix` and the same limits: fleet mode.
    ///
    /// Reserve, settle and refund are atomic Lua scripts (`EVALSHA`, reloaded on `NOSCRIPT`)
    /// timed by Redis's clock; window keys expire by themselves; reservations are
    /// [leases](Self::lease); the 402 latch is one key every process sees. Use the async
    /// methods ([`Ledger::reserve_async`], [`Ledger::snapshot_async`], ...) directly, or put the
    /// ledger in a [`BudgetLayer`](crate::BudgetLayer) as usual.
    ///
    /// When Redis cannot be reached the ledger **fails closed**: nothing is reserved and the
    /// service returns [`StoreUnavailable`]. A [`balance`](Self::balance) given to the builder
    /// is sent to Redis in the background (inside a tokio runtime); prefer
    /// [`Ledger::sync_balance_async`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tollway_budget::redis::{Client, aio::ConnectionManager};
    /// use tollway_budget::{BudgetLayer, Ledger, Priority, StoreUnavailable, Window};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let connection = ConnectionManager::new(Client::open("redis://127.0.0.1:6379/")?).await?;
    /// let ledger = Ledger::builder()
    ///     .limit(5_000, Window::day())
    ///     .critical_reserve(500)
    ///     .lease(Duration::from_secs(30))
    ///     .redis(connection, "billing:acme"); // every process with this prefix shares it
    /// let layer = BudgetLayer::new(ledger.clone()); // wraps a client as usual
    ///
    /// let reservation = ledger.reserve_async(1, Priority::Normal).await?;
    /// reservation.settle_async(1).await?;
    /// assert_eq!(ledger.snapshot_async().await?.reserved, 0);
    /// # let _ = layer;
    /// # let _: Option<StoreUnavailable> = None;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(
        self,
        connection: redis::aio::ConnectionManager,
        prefix: impl AsRef<str>,
    ) -> Ledger {
        let now = self.clock.millis();
        let mut state = self.initial_state(now);
        state.balance = None;
        let balance = self.balance;
        let store = RedisStore::new(
            connection,
            prefix.as_ref(),
            self.limits.clone(),
            self.lease,
            self.store_timeout,
        );
        let ledger = self.finish_with(state, Some(store));
        if let Some(balance) = balance {
            ledger.sync_balance(balance);
        }
        ledger
    }

    fn initial_state(&self, now: i64) -> State {
        State {
            windows: self
                .limits
                .iter()
                .map(|&(limit, window)| WindowState::new(limit, window, now))
                .collect(),
            reserved: 0,
            balance: self.balance,
            latch: None,
            next_id: 1,
            journal: None,
        }
    }

    fn finish(self, state: State) -> Ledger {
        #[cfg(feature = "redis")]
        return self.finish_with(state, None);
        #[cfg(not(feature = "redis"))]
        self.finish_with(state)
    }

    fn finish_with(
        self,
        state: State,
        #[cfg(feature = "redis")] remote: Option<RedisStore>,
    ) -> Ledger {
        let ledger = Ledger {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                clock: self.clock,
                critical_reserve: self.critical_reserve,
                backfill_reserve: self.backfill_reserve.max(self.critical_reserve),
                name: self.name,
                #[cfg(feature = "redis")]
                remote,
            }),
        };
        ledger.record_gauges(&ledger.shared.state.lock());
        ledger
    }
}

impl State {
    fn roll(&mut self, now: i64) {
        for window in &mut self.windows {
            window.roll(now);
        }
        if let Some(Latch { until: Some(until) }) = self.latch
            && now >= until
        {
            tracing::info!("budget 402 latch lifted: the window rolled over");
            self.latch = None;
        }
    }

    fn charge(&mut self, amount: u64, at: i64, now: i64) {
        for window in &mut self.windows {
            window.add(amount, at, now);
        }
        if let Some(balance) = &mut self.balance {
            *balance = balance.saturating_sub(amount);
        }
    }

    fn apply(&mut self, event: &Event, now: i64) {
        match *event {
            Event::Charge { amount, at } => self.charge(amount, at, now),
            Event::Pending { cost, .. } => self.reserved = self.reserved.saturating_add(cost),
            Event::Sync { balance } => {
                self.balance = Some(balance);
                if balance > 0 {
                    self.latch = None;
                }
            }
            Event::Latch { until } => self.latch = Some(Latch { until }),
            Event::Reset => self.latch = None,
        }
    }

    /// Credit left for new reservations across every limit and the balance, with the reason
    /// that binds and when it frees up.
    fn headroom(&self) -> (u64, ExhaustedReason, Option<usize>) {
        let mut best = (u64::MAX, ExhaustedReason::Window, None);
        for (i, window) in self.windows.iter().enumerate() {
            let left = window.remaining(self.reserved);
            if left < best.0 {
                best = (left, ExhaustedReason::Window, Some(i));
            }
        }
        if let Some(balance) = self.balance {
            let left = balance.saturating_sub(self.reserved);
            if left < best.0 {
                best = (left, ExhaustedReason::Upstream402, None);
            }
        }
        best
    }

    fn append(&mut self, record: Record, sync: bool, now: i64) -> io::Result<()> {
        let Some(journal) = &mut self.journal else {
            return Ok(());
        };
        journal.append(record, sync)?;
        if journal.wants_compaction()
            && let Err(e) = journal.compact(&self.windows, now)
        {
            // The uncompacted journal is still whole; compaction is tried again later.
            tracing::warn!(error = %e, "budget journal compaction failed");
        }
        Ok(())
    }
}

impl Ledger {
    /// Starts configuring a ledger.
    pub fn builder() -> LedgerBuilder {
        LedgerBuilder {
            limits: Vec::new(),
            critical_reserve: 0,
            backfill_reserve: 0,
            balance: None,
            clock: Box::new(MonotonicClock),
            name: String::from("default"),
            compact_every: DEFAULT_COMPACT_EVERY,
            #[cfg(feature = "redis")]
            lease: DEFAULT_LEASE,
            #[cfg(feature = "redis")]
            store_timeout: DEFAULT_STORE_TIMEOUT,
        }
    }

    /// An in-memory ledger allowing `credits` per `window`, with no reserve.
    pub fn new(credits: u64, window: Window) -> Self {
        Self::builder().limit(credits, window).build()
    }

    /// Reserves `cost` credits for a request of `priority`, or says why not.
    ///
    /// Refused when the ledger is latched by a 402 ([`ExhaustedReason::Upstream402`]), when any
    /// limit or the upstream balance has less than `cost` left ([`ExhaustedReason::Window`], or
    /// `Upstream402` for the balance), or when granting it would dip into a reserve this priority
    /// may not use ([`ExhaustedReason::CriticalReserve`]). A file-backed ledger grants nothing it
    /// has not synced to disk.
    ///
    /// # Errors
    ///
    /// [`ReserveError::Exhausted`] with the reason and, when known, how long until credit is back;
    /// [`ReserveError::Journal`] if the journal could not be written.
    ///
    /// A [Redis](LedgerBuilder::redis) ledger cannot answer synchronously: it refuses with
    /// [`ReserveError::Store`]; use [`reserve_async`](Self::reserve_async).
    pub fn reserve(&self, cost: u64, priority: Priority) -> Result<Reservation, ReserveError> {
        #[cfg(feature = "redis")]
        if self.shared.remote.is_some() {
            return Err(ReserveError::Store(StoreUnavailable::new(
                "budget",
                "reserve",
                "a Redis ledger reserves asynchronously: use Ledger::reserve_async",
            )));
        }
        let now = self.shared.clock.millis();
        let mut state = self.shared.state.lock();
        state.roll(now);
        if let Some(latch) = state.latch {
            let retry = latch.until.map(|u| millis_to_duration(u - now));
            return Err(self.reject(ExhaustedReason::Upstream402, retry, cost, priority));
        }
        let (left, reason, binding) = state.headroom();
        let floor = self.floor(priority);
        if left < cost.saturating_add(floor) {
            let reason = if left < cost {
                reason
            } else {
                ExhaustedReason::CriticalReserve
            };
            let needed = cost.saturating_add(floor) - left;
            let retry = binding
                .and_then(|i| state.windows[i].free_in(needed, now))
                .map(millis_to_duration);
            return Err(self.reject(reason, retry, cost, priority));
        }
        let id = state.next_id;
        state.next_id += 1;
        if let Err(e) = state.append(Record::Reserve { id, cost, at: now }, true, now) {
            tracing::error!(error = %e, "budget journal: reservation not granted");
            return Err(ReserveError::Journal(e));
        }
        state.reserved = state.reserved.saturating_add(cost);
        self.record_gauges(&state);
        drop(state);
        tracing::trace!(id, cost, priority = priority.as_str(), "credit reserved");
        Ok(Reservation::new(self.clone(), id, cost))
    }

    /// The configured clock, in milliseconds since the epoch.
    #[cfg(feature = "redis")]
    pub(crate) fn clock_millis(&self) -> i64 {
        self.shared.clock.millis()
    }

    /// Credit a request of `priority` must leave untouched.
    fn floor(&self, priority: Priority) -> u64 {
        match priority {
            Priority::Critical => 0,
            Priority::Normal => self.shared.critical_reserve,
            Priority::Backfill => self.shared.backfill_reserve,
        }
    }

    /// [`reserve`](Self::reserve) for every kind of ledger: an in-memory or file-backed ledger
    /// answers at once, a [Redis](LedgerBuilder::redis) ledger after one round trip.
    ///
    /// # Errors
    ///
    /// As [`reserve`](Self::reserve); [`ReserveError::Store`] when Redis cannot be reached
    /// (nothing is reserved: fail closed).
    pub async fn reserve_async(
        &self,
        cost: u64,
        priority: Priority,
    ) -> Result<Reservation, ReserveError> {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.shared.remote {
            return match remote.reserve(self, cost, self.floor(priority)).await? {
                Ok(reservation) => {
                    tracing::trace!(
                        cost,
                        priority = priority.as_str(),
                        "credit reserved in Redis"
                    );
                    Ok(reservation)
                }
                Err((reason, retry_after)) => Err(self.reject(reason, retry_after, cost, priority)),
            };
        }
        self.reserve(cost, priority)
    }

    /// Whether this ledger lives in a shared store (Redis) rather than in this process.
    pub fn is_shared(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.shared.remote.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }

    /// Waits until every settle, refund, latch or sync that synchronous code handed to the
    /// shared store has been applied (a [Redis](LedgerBuilder::redis) ledger sends those in
    /// background tasks so a response is never held up). Returns at once for other ledgers.
    pub async fn flush(&self) {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.shared.remote {
            remote.flush().await;
        }
    }

    /// Counts and logs a store failure; the caller fails closed.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn store_failed(
        &self,
        operation: &'static str,
        error: impl Into<tollway_core::BoxError>,
    ) -> StoreUnavailable {
        let error = StoreUnavailable::new("budget", operation, error);
        tracing::error!(ledger = %self.shared.name, %error, "budget store unavailable");
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "tollway_budget_store_errors_total",
            "ledger" => self.shared.name.clone(),
            "operation" => operation,
        )
        .increment(1);
        error
    }

    fn reject(
        &self,
        reason: ExhaustedReason,
        retry_after: Option<Duration>,
        cost: u64,
        priority: Priority,
    ) -> ReserveError {
        tracing::debug!(
            %reason,
            cost,
            priority = priority.as_str(),
            ?retry_after,
            "budget refused a request"
        );
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "tollway_budget_rejected_total",
            "ledger" => self.shared.name.clone(),
            "reason" => reason_label(reason),
        )
        .increment(1);
        ReserveError::Exhausted(BudgetExhausted::new(reason, retry_after))
    }

    pub(crate) fn finish_reservation(&self, id: u64, cost: u64, charge: Option<u64>) {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.shared.remote {
            let ledger = self.clone();
            remote.spawn("finish", async move {
                // Failures are logged and counted; the lease then expires and counts as spent.
                let _ = ledger.finish_reservation_async(id, cost, charge).await;
            });
            return;
        }
        let now = self.shared.clock.millis();
        let mut state = self.shared.state.lock();
        state.roll(now);
        state.reserved = state.reserved.saturating_sub(cost);
        let record = match charge {
            Some(charge) => {
                state.charge(charge, now, now);
                Record::Settle {
                    id,
                    charge,
                    at: now,
                }
            }
            None => Record::Refund { id },
        };
        // Losing a settle or refund record leaves the reserve, which counts the full cost:
        // only a charge above the reservation must be synced.
        let sync = charge.is_some_and(|c| c > cost);
        if let Err(e) = state.append(record, sync, now) {
            tracing::error!(error = %e, id, "budget journal: settle or refund not recorded; the full reservation stays counted");
        }
        self.record_gauges(&state);
        drop(state);
        #[cfg(feature = "metrics")]
        match charge {
            Some(charge) => metrics::counter!(
                "tollway_budget_charged_credits_total",
                "ledger" => self.shared.name.clone(),
            )
            .increment(charge),
            None => metrics::counter!(
                "tollway_budget_refunded_credits_total",
                "ledger" => self.shared.name.clone(),
            )
            .increment(cost),
        }
    }

    /// Settles or refunds, and waits until it is recorded: for a [Redis](LedgerBuilder::redis)
    /// ledger, one round trip.
    pub(crate) async fn finish_reservation_async(
        &self,
        id: u64,
        cost: u64,
        charge: Option<u64>,
    ) -> Result<(), StoreUnavailable> {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.shared.remote {
            let live = remote.finish(self, id, cost, charge).await?;
            #[cfg(feature = "metrics")]
            self.count_finish(live, cost, charge);
            #[cfg(not(feature = "metrics"))]
            let _ = live;
            return Ok(());
        }
        self.finish_reservation(id, cost, charge);
        Ok(())
    }

    #[cfg(all(feature = "redis", feature = "metrics"))]
    fn count_finish(&self, live: bool, cost: u64, charge: Option<u64>) {
        if !live {
            // Already counted as spent in full when the lease expired.
            metrics::counter!(
                "tollway_budget_expired_leases_total",
                "ledger" => self.shared.name.clone(),
            )
            .increment(1);
            return;
        }
        match charge {
            Some(charge) => metrics::counter!(
                "tollway_budget_charged_credits_total",
                "ledger" => self.shared.name.clone(),
            )
            .increment(charge),
            None => metrics::counter!(
                "tollway_budget_refunded_credits_total",
                "ledger" => self.shared.name.clone(),
            )
            .increment(cost),
        }
    }

    /// [`latch`](Self::latch), waiting for a [Redis](LedgerBuilder::redis) ledger to record it.
    ///
    /// # Errors
    ///
    /// If Redis cannot be reached.
    pub async fn latch_async(&self) -> Result<(), StoreUnavailable> {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.shared.remote {
            let until = remote.latch(self).await?;
            tracing::warn!(until_ms = ?until, "budget latched in Redis: the upstream answered 402");
            return Ok(());
        }
        self.latch();
        Ok(())
    }

    /// [`reset`](Self::reset), waiting for a [Redis](LedgerBuilder::redis) ledger to record it.
    ///
    /// # Errors
    ///
    /// If Redis cannot be reached.
    pub async fn reset_async(&self) -> Result<(), StoreUnavailable> {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.shared.remote {
            remote.reset(self).await?;
            tracing::info!("budget latch reset in Redis");
            return Ok(());
        }
        self.reset();
        Ok(())
    }

    /// [`sync_balance`](Self::sync_balance), waiting for a [Redis](LedgerBuilder::redis) ledger
    /// to record it.
    ///
    /// # Errors
    ///
    /// If Redis cannot be reached.
    pub async fn sync_balance_async(&self, remaining: u64) -> Result<(), StoreUnavailable> {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.shared.remote {
            remote.sync(self, remaining).await?;
            tracing::debug!(remaining, "budget balance synced in Redis");
            return Ok(());
        }
        self.sync_balance(remaining);
        Ok(())
    }

    /// [`snapshot`](Self::snapshot), read from Redis for a [Redis](LedgerBuilder::redis) ledger.
    ///
    /// # Errors
    ///
    /// If Redis cannot be reached.
    pub async fn snapshot_async(&self) -> Result<Snapshot, StoreUnavailable> {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.shared.remote {
            return remote.snapshot(self, self.shared.critical_reserve).await;
        }
        Ok(self.snapshot())
    }

    /// Marks the account empty after an upstream `402`: every reservation is refused at once
    /// until the first window rolls over, the balance is [synced](Self::sync_balance) above zero,
    /// or the ledger is [`reset`](Self::reset).
    ///
    /// A [Redis](LedgerBuilder::redis) ledger sends it in a background task (see
    /// [`flush`](Self::flush)); [`latch_async`](Self::latch_async) waits for it.
    pub fn latch(&self) {
        #[cfg(feature = "redis")]
        if self.shared.remote.is_some() {
            let ledger = self.clone();
            self.spawn_remote("latch", async move {
                let _ = ledger.latch_async().await;
            });
            return;
        }
        let now = self.shared.clock.millis();
        let mut state = self.shared.state.lock();
        state.roll(now);
        let until = state
            .windows
            .iter()
            .filter_map(|w| w.rollover_at(now))
            .min();
        state.latch = Some(Latch { until });
        if let Err(e) = state.append(Record::Latch { until, at: now }, true, now) {
            tracing::error!(error = %e, "budget journal: latch not recorded");
        }
        self.record_gauges(&state);
        drop(state);
        tracing::warn!(until_ms = ?until, "budget latched: the upstream answered 402");
    }

    /// Lifts the 402 latch. Spend is kept: it was really charged.
    pub fn reset(&self) {
        #[cfg(feature = "redis")]
        if self.shared.remote.is_some() {
            let ledger = self.clone();
            self.spawn_remote("reset", async move {
                let _ = ledger.reset_async().await;
            });
            return;
        }
        let now = self.shared.clock.millis();
        let mut state = self.shared.state.lock();
        state.latch = None;
        if let Err(e) = state.append(Record::Reset { at: now }, true, now) {
            tracing::error!(error = %e, "budget journal: reset not recorded");
        }
        self.record_gauges(&state);
        drop(state);
        tracing::info!("budget latch reset");
    }

    /// Tells the ledger the upstream's real balance: from then on it is one more limit, lowered
    /// by every charge. Above zero it lifts the 402 latch; at zero every request is refused with
    /// [`ExhaustedReason::Upstream402`] until a later sync.
    pub fn sync_balance(&self, remaining: u64) {
        #[cfg(feature = "redis")]
        if self.shared.remote.is_some() {
            let ledger = self.clone();
            self.spawn_remote("sync", async move {
                let _ = ledger.sync_balance_async(remaining).await;
            });
            return;
        }
        let now = self.shared.clock.millis();
        let mut state = self.shared.state.lock();
        state.balance = Some(remaining);
        if remaining > 0 {
            state.latch = None;
        }
        if let Err(e) = state.append(
            Record::Sync {
                balance: remaining,
                at: now,
            },
            true,
            now,
        ) {
            tracing::error!(error = %e, "budget journal: balance sync not recorded");
        }
        self.record_gauges(&state);
        drop(state);
        tracing::debug!(remaining, "budget balance synced");
    }

    /// Credit a normal-priority request could reserve now, ignoring the critical reserve:
    /// the least left across limits and balance, after reservations in flight. `u64::MAX` when
    /// nothing bounds spend; 0 while latched.
    ///
    /// A [Redis](LedgerBuilder::redis) ledger answers from the snapshot last read by
    /// [`snapshot_async`](Self::snapshot_async).
    pub fn remaining(&self) -> u64 {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.shared.remote {
            return self.cached_snapshot(remote).remaining;
        }
        let now = self.shared.clock.millis();
        let mut state = self.shared.state.lock();
        state.roll(now);
        if state.latch.is_some() {
            return 0;
        }
        state.headroom().0
    }

    /// Whether a 402 latch is holding.
    ///
    /// A [Redis](LedgerBuilder::redis) ledger answers from the snapshot last read by
    /// [`snapshot_async`](Self::snapshot_async).
    pub fn is_latched(&self) -> bool {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.shared.remote {
            return self.cached_snapshot(remote).latched;
        }
        let now = self.shared.clock.millis();
        let mut state = self.shared.state.lock();
        state.roll(now);
        state.latch.is_some()
    }

    /// Everything the ledger knows, at once.
    ///
    /// A [Redis](LedgerBuilder::redis) ledger answers with the snapshot last read by
    /// [`snapshot_async`](Self::snapshot_async) (before the first: nothing spent).
    pub fn snapshot(&self) -> Snapshot {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.shared.remote {
            return self.cached_snapshot(remote);
        }
        let now = self.shared.clock.millis();
        let mut state = self.shared.state.lock();
        state.roll(now);
        Snapshot {
            windows: state
                .windows
                .iter()
                .map(|w| WindowUsage {
                    window: w.window,
                    limit: w.limit,
                    spent: w.spent,
                    remaining: w.remaining(state.reserved),
                    resets_in: w.resets_in_duration(now),
                })
                .collect(),
            reserved: state.reserved,
            balance: state.balance,
            latched: state.latch.is_some(),
            latched_for: state
                .latch
                .and_then(|l| l.until)
                .map(|u| millis_to_duration(u - now)),
            remaining: if state.latch.is_some() {
                0
            } else {
                state.headroom().0
            },
            critical_reserve: self.shared.critical_reserve,
        }
    }

    #[cfg(feature = "redis")]
    fn cached_snapshot(&self, remote: &RedisStore) -> Snapshot {
        remote.last_snapshot().unwrap_or_else(|| {
            let now = self.shared.clock.millis();
            let state = self.shared.state.lock();
            Snapshot {
                windows: state
                    .windows
                    .iter()
                    .map(|w| WindowUsage {
                        window: w.window,
                        limit: w.limit,
                        spent: 0,
                        remaining: w.limit,
                        resets_in: w.resets_in_duration(now),
                    })
                    .collect(),
                reserved: 0,
                balance: None,
                latched: false,
                latched_for: None,
                remaining: state.headroom().0,
                critical_reserve: self.shared.critical_reserve,
            }
        })
    }

    #[cfg(feature = "redis")]
    fn spawn_remote(
        &self,
        what: &'static str,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        if let Some(remote) = &self.shared.remote {
            let _ = remote.spawn(what, work);
        }
    }

    /// What a response means for a shared ledger, sent in order in one background task: settle,
    /// then sync the balance, then latch on a 402.
    #[cfg(feature = "redis")]
    pub(crate) fn settle_in_background(
        &self,
        reservation: Reservation,
        charge: u64,
        balance: Option<u64>,
        latch: bool,
    ) {
        let ledger = self.clone();
        self.spawn_remote("finish", async move {
            // Failures are logged and counted where they happen; an unsettled lease expires and
            // counts as spent.
            let _ = reservation.settle_async(charge).await;
            if let Some(balance) = balance {
                let _ = ledger.sync_balance_async(balance).await;
            }
            if latch {
                let _ = ledger.latch_async().await;
            }
        });
    }

    /// Starts a [`reserve_async`](Self::reserve_async) as a background task (counted by
    /// [`flush`](Self::flush)), so a reservation granted after its caller gave up is still
    /// seen, and refunded by its drop.
    ///
    /// # Errors
    ///
    /// Without a tokio runtime.
    #[cfg(feature = "redis")]
    pub(crate) fn spawn_reserve(
        &self,
        cost: u64,
        priority: Priority,
    ) -> Result<tokio::task::JoinHandle<Result<Reservation, ReserveError>>, StoreUnavailable> {
        let ledger = self.clone();
        let work = async move { ledger.reserve_async(cost, priority).await };
        let spawned = match &self.shared.remote {
            Some(remote) => remote.spawn("reserve", work),
            None => tokio::runtime::Handle::try_current()
                .ok()
                .map(|runtime| runtime.spawn(work)),
        };
        spawned.ok_or_else(|| self.store_failed("reserve", "a Redis ledger needs a tokio runtime"))
    }

    /// The lease of a [Redis](LedgerBuilder::redis) ledger's reservations; `None` for others.
    pub fn lease(&self) -> Option<Duration> {
        #[cfg(feature = "redis")]
        return self.shared.remote.as_ref().map(RedisStore::lease);
        #[cfg(not(feature = "redis"))]
        None
    }

    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    fn record_gauges(&self, state: &State) {
        #[cfg(feature = "metrics")]
        {
            let name = self.shared.name.clone();
            metrics::gauge!("tollway_budget_reserved_credits", "ledger" => name.clone())
                .set(state.reserved as f64);
            let left = if state.latch.is_some() {
                0
            } else {
                state.headroom().0
            };
            if left != u64::MAX {
                metrics::gauge!("tollway_budget_remaining_credits", "ledger" => name.clone())
                    .set(left as f64);
            }
            if let Some(first) = state.windows.first() {
                metrics::gauge!("tollway_budget_spent_credits", "ledger" => name.clone())
                    .set(first.spent as f64);
            }
            metrics::gauge!("tollway_budget_latched", "ledger" => name)
                .set(if state.latch.is_some() { 1.0 } else { 0.0 });
        }
        #[cfg(not(feature = "metrics"))]
        let _ = state;
    }
}

#[cfg(feature = "metrics")]
fn reason_label(reason: ExhaustedReason) -> &'static str {
    match reason {
        ExhaustedReason::Window => "window",
        ExhaustedReason::CriticalReserve => "critical_reserve",
        ExhaustedReason::Upstream402 => "upstream_402",
        _ => "other",
    }
}
