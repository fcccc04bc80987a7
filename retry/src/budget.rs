//! [`RetryBudget`]: a retry budget shared by every clone of a layer.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tollway_core::Clock;

use crate::error::InvalidConfig;
use tollway_core::SharedClock;

const SLOTS: usize = 10;
/// Fixed-point scale: one retry is this many units, so ratios keep three decimals exactly
/// (tower truncates `1 / ratio`, so 0.3 becomes one retry in three).
const UNIT: i64 = 1000;

/// A retry budget shared by every clone of a layer (Finagle's and tower's `TpsBudget`).
/// Clones share one budget.
///
/// Every original request deposits a fraction of a retry (`retry_ratio`, 20% by default); every
/// retry withdraws a whole one. Deposits and withdrawals expire after the `window` (10 s by
/// default), tracked in ten slots. On top of that the budget always allows `min_per_second`
/// retries per second (10 by default, as a reserve of `min_per_second * window`), so that a
/// client sending little traffic can still retry. When the upstream fails for everybody, the
/// extra load retries add is held to about `retry_ratio` of the traffic, instead of multiplying
/// it by the number of attempts.
///
/// Unlike tower's, this budget reads time from a [`Clock`], so it can be tested with
/// [`FakeClock`](tollway_core::FakeClock) or tokio's paused clock; its ratio is exact to a
/// thousandth (tower truncates `1 / ratio`); and a retry taken for a resend that is never sent
/// (the request was dropped while it waited for its backoff) is given back to the slot it came
/// from.
///
/// ```
/// use std::time::Duration;
/// use tollway_core::FakeClock;
/// use tollway_retry::RetryBudget;
///
/// let clock = FakeClock::new();
/// let budget = RetryBudget::builder()
///     .window(Duration::from_secs(1))
///     .min_per_second(0)
///     .retry_ratio(0.5)
///     .clock(clock.clone())
///     .build()
///     .unwrap();
/// budget.deposit();
/// budget.deposit();
/// assert!(budget.withdraw()); // two requests earn one retry
/// assert!(!budget.withdraw());
/// clock.advance(Duration::from_secs(2));
/// budget.deposit();
/// assert!(!budget.withdraw()); // the old deposits expired
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    deposit: i64,
    reserve: i64,
    slot_len: Duration,
    clock: SharedClock,
    /// Deposits of the slot being filled: added to without the lock.
    current: AtomicI64,
    /// When the slot being filled ends, in nanoseconds since `origin`: a deposit before it
    /// only adds to `current`.
    slot_end: AtomicU64,
    origin: Instant,
    ledger: Mutex<Ledger>,
    window: Duration,
    min_per_second: u32,
    retry_ratio: f64,
}

struct Ledger {
    slots: [i64; SLOTS],
    index: usize,
    slot_start: Instant,
    /// Slots started since the budget was made: names the slot a withdrawal was booked in.
    epoch: u64,
}

/// A retry taken from the budget for a resend that has not been sent yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Withdrawal {
    epoch: u64,
}

impl RetryBudget {
    /// Starts a budget with the defaults: a 10 s window, 10 retries per second, 20% of requests.
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder::default()
    }

    /// Records an original request (not a retry): it earns `retry_ratio` of a retry. Takes no
    /// lock unless the slot being filled has ended.
    #[inline]
    pub fn deposit(&self) {
        let inner = &*self.inner;
        let now = inner.clock.now();
        if inner.nanos(now) >= inner.slot_end.load(Ordering::Acquire) {
            inner.ledger.lock().expire(inner, now);
        }
        inner.current.fetch_add(inner.deposit, Ordering::AcqRel);
    }

    /// Takes one retry from the budget; `false` (and nothing taken) when it is empty.
    pub fn withdraw(&self) -> bool {
        self.take().is_some()
    }

    pub(crate) fn take(&self) -> Option<Withdrawal> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let mut ledger = inner.ledger.lock();
        ledger.expire(inner, now);
        // Only deposits change the balance without the lock, and they only raise it: what is
        // checked here is still there when it is taken.
        if ledger.balance(inner) >= UNIT {
            inner.current.fetch_sub(UNIT, Ordering::AcqRel);
            Some(Withdrawal {
                epoch: ledger.epoch,
            })
        } else {
            None
        }
    }

    /// Gives back a retry whose resend was never sent (the caller dropped the request while it
    /// waited), to the slot it was taken from if that slot is still in the window.
    pub(crate) fn refund(&self, withdrawal: Withdrawal) {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let mut ledger = inner.ledger.lock();
        ledger.expire(inner, now);
        let age = ledger.epoch - withdrawal.epoch;
        if age == 0 {
            inner.current.fetch_add(UNIT, Ordering::AcqRel);
        } else if age < SLOTS as u64 {
            let slot = usize::try_from(withdrawal.epoch % SLOTS as u64).unwrap_or(0);
            ledger.slots[slot] += UNIT;
        }
    }

    /// How many whole retries the budget would allow now.
    pub fn available(&self) -> u64 {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let mut ledger = inner.ledger.lock();
        ledger.expire(inner, now);
        u64::try_from(ledger.balance(inner) / UNIT).unwrap_or(0)
    }

    /// How long deposits and withdrawals count.
    pub fn window(&self) -> Duration {
        self.inner.window
    }

    /// The floor of retries per second.
    pub fn min_per_second(&self) -> u32 {
        self.inner.min_per_second
    }

    /// The fraction of requests that may be retried on top of the floor.
    pub fn retry_ratio(&self) -> f64 {
        self.inner.retry_ratio
    }
}

impl Default for RetryBudget {
    /// 10 s window, 10 retries per second, 20% of requests (Finagle's and tower's defaults).
    fn default() -> Self {
        RetryBudgetBuilder::default()
            .build()
            .expect("the default budget is valid")
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("window", &self.inner.window)
            .field("min_per_second", &self.inner.min_per_second)
            .field("retry_ratio", &self.inner.retry_ratio)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Ledger {
    fn balance(&self, inner: &Inner) -> i64 {
        self.slots.iter().fold(
            inner
                .current
                .load(Ordering::Acquire)
                .saturating_add(inner.reserve),
            |sum, s| sum.saturating_add(*s),
        )
    }

    /// Commits the slot being filled and clears every slot that fell out of the window. Runs
    /// under the ledger's lock.
    fn expire(&mut self, inner: &Inner, now: Instant) {
        let slot_len = inner.slot_len;
        let elapsed = now.saturating_duration_since(self.slot_start);
        if elapsed < slot_len {
            return;
        }
        let steps = elapsed.as_nanos() / slot_len.as_nanos().max(1);
        // A deposit that saw the old slot end and adds after this swap lands in the new slot:
        // a few nanoseconds late, never lost.
        self.slots[self.index] = inner.current.swap(0, Ordering::AcqRel);
        let cleared = usize::try_from(steps).unwrap_or(usize::MAX).min(SLOTS);
        for step in 1..=cleared {
            self.slots[(self.index + step) % SLOTS] = 0;
        }
        self.index = (self.index + usize::try_from(steps % SLOTS as u128).unwrap_or(0)) % SLOTS;
        self.epoch = self
            .epoch
            .saturating_add(u64::try_from(steps).unwrap_or(u64::MAX));
        self.slot_start = if steps as usize > SLOTS {
            now
        } else {
            self.slot_start + slot_len * u32::try_from(steps).unwrap_or(u32::MAX)
        };
        let end = inner.nanos(self.slot_start + slot_len);
        inner.slot_end.store(end, Ordering::Release);
    }
}

/// Builds a [`RetryBudget`].
#[derive(Debug, Clone)]
pub struct RetryBudgetBuilder {
    window: Duration,
    min_per_second: u32,
    retry_ratio: f64,
    clock: SharedClock,
}

impl Default for RetryBudgetBuilder {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            min_per_second: 10,
            retry_ratio: 0.2,
            clock: SharedClock::default(),
        }
    }
}

impl RetryBudgetBuilder {
    /// How long deposits and withdrawals count: 1 s to 60 s (Finagle's bounds).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Retries per second allowed whatever the traffic.
    #[must_use]
    pub fn min_per_second(mut self, min_per_second: u32) -> Self {
        self.min_per_second = min_per_second;
        self
    }

    /// The fraction of requests that may be retried on top of the floor: 0 to 1000.
    #[must_use]
    pub fn retry_ratio(mut self, retry_ratio: f64) -> Self {
        self.retry_ratio = retry_ratio;
        self
    }

    /// The clock windows are measured with ([`TokioClock`](tollway_core::TokioClock) by
    /// default, which follows tokio's paused test clock).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = SharedClock::new(clock);
        self
    }

    pub(crate) fn shared_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The budget, or what is wrong with the settings.
    pub fn build(self) -> Result<RetryBudget, InvalidConfig> {
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(60) {
            return Err(InvalidConfig::new("window", "must be 1 s to 60 s"));
        }
        if !(0.0..=1000.0).contains(&self.retry_ratio) {
            return Err(InvalidConfig::new("retry_ratio", "must be 0 to 1000"));
        }
        let deposit = (self.retry_ratio * UNIT as f64).round() as i64;
        // The floor over one window: `min_per_second` retries for each second of it.
        let reserve = (f64::from(self.min_per_second) * self.window.as_secs_f64() * UNIT as f64)
            .round() as i64;
        let now = self.clock.now();
        let slot_len = self.window / SLOTS as u32;
        Ok(RetryBudget {
            inner: Arc::new(Inner {
                deposit,
                reserve,
                slot_len,
                current: AtomicI64::new(0),
                slot_end: AtomicU64::new(u64::try_from(slot_len.as_nanos()).unwrap_or(u64::MAX)),
                origin: now,
                ledger: Mutex::new(Ledger {
                    slots: [0; SLOTS],
                    index: 0,
                    slot_start: now,
                    epoch: 0,
                }),
                clock: self.clock,
                window: self.window,
                min_per_second: self.min_per_second,
                retry_ratio: self.retry_ratio,
            }),
        })
    }
}

#[cfg(test)]
mod tests;
