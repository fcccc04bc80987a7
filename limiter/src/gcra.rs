//! The lock-free GCRA state: one atomic word (the theoretical arrival time, TAT) per quota.
//!
//! Time is nanoseconds since the limiter's origin. A request of cost `n` at `now` is admitted
//! when `max(tat, now) + n * interval <= now + capacity`, where `capacity = burst * interval`;
//! admitting it stores that left-hand side as the new TAT. A denial writes nothing.
//!
//! Several quotas are admitted all-or-nothing without a lock: each is committed in turn with
//! its own compare-and-swap, and if a later one refuses, the ones already committed take their
//! increment back. Subtracting exactly what was added restores every later reader's view, so a
//! refused request consumes nothing; a concurrent request may see the brief tentative commit
//! and be refused too (never admitted wrongly).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::quota::Quota;

/// One quota's parameters and state.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Slot {
    tat: AtomicU64,
    interval: AtomicU64,
    capacity: AtomicU64,
    burst: AtomicU32,
}

impl Slot {
    fn new(quota: Quota) -> Self {
        let slot = Self {
            tat: AtomicU64::new(0),
            interval: AtomicU64::new(0),
            capacity: AtomicU64::new(0),
            burst: AtomicU32::new(1),
        };
        slot.store_quota(quota);
        slot
    }

    fn store_quota(&self, quota: Quota) {
        let interval = quota.interval_nanos();
        self.interval.store(interval, Relaxed);
        self.capacity.store(
            interval.saturating_mul(u64::from(quota.burst().get())),
            Relaxed,
        );
        self.burst.store(quota.burst().get(), Relaxed);
    }

    fn quota(&self) -> Quota {
        let burst = NonZeroU32::new(self.burst.load(Relaxed)).unwrap_or(NonZeroU32::MIN);
        Quota::from_interval_nanos(self.interval.load(Relaxed), burst)
    }

    /// Commits `n` if this quota admits it; returns the increment added to the TAT, or the
    /// wait in nanoseconds.
    #[inline]
    fn try_commit(&self, now: u64, n: u64) -> Result<u64, u64> {
        self.try_commit_on(&self.tat, now, n)
    }

    /// [`try_commit`](Self::try_commit) with this quota's parameters on another key's TAT.
    #[inline]
    pub(crate) fn try_commit_on(&self, tat_cell: &AtomicU64, now: u64, n: u64) -> Result<u64, u64> {
        let increment = self.interval.load(Relaxed).saturating_mul(n);
        let limit = now.saturating_add(self.capacity.load(Relaxed));
        let mut tat = tat_cell.load(Relaxed);
        loop {
            let new = tat.max(now).saturating_add(increment);
            if new > limit {
                return Err(new - limit);
            }
            match tat_cell.compare_exchange_weak(tat, new, Relaxed, Relaxed) {
                Ok(_) => return Ok(new - tat.max(now)),
                Err(current) => tat = current,
            }
        }
    }

    /// The wait before `n` would be admitted (0: now).
    fn wait(&self, now: u64, n: u64) -> u64 {
        let increment = self.interval.load(Relaxed).saturating_mul(n);
        let limit = now.saturating_add(self.capacity.load(Relaxed));
        let new = self.tat.load(Relaxed).max(now).saturating_add(increment);
        new.saturating_sub(limit)
    }

    fn take_back(&self, increment: u64) {
        let _ = self
            .tat
            .fetch_update(Relaxed, Relaxed, |tat| Some(tat.saturating_sub(increment)));
    }

    fn available(&self, now: u64) -> u64 {
        let interval = self.interval.load(Relaxed).max(1);
        let room = now
            .saturating_add(self.capacity.load(Relaxed))
            .saturating_sub(self.tat.load(Relaxed).max(now));
        room / interval
    }
}

/// The quotas of one limiter (or of one key), admitted all-or-nothing.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Gcra {
    /// The first quota, inline: the single-quota hot path touches no other allocation.
    first: Slot,
    /// Any further quotas.
    rest: Box<[Slot]>,
}

impl Gcra {
    pub(crate) fn new(quotas: &[Quota]) -> Self {
        debug_assert!(!quotas.is_empty());
        Self {
            first: Slot::new(quotas[0]),
            rest: quotas[1..].iter().map(|&q| Slot::new(q)).collect(),
        }
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    fn slot(&self, index: usize) -> Option<&Slot> {
        match index {
            0 => Some(&self.first),
            i => self.rest.get(i - 1),
        }
    }

    /// The most one request may cost: the smallest burst.
    pub(crate) fn max_cost(&self) -> u32 {
        self.slots()
            .map(|s| s.burst.load(Relaxed))
            .min()
            .unwrap_or(1)
    }

    /// Admits `n` under every quota, or none; on refusal returns the wait in nanoseconds until
    /// all quotas would admit it.
    #[inline]
    pub(crate) fn try_acquire(&self, now: u64, n: u32) -> Result<(), u64> {
        let n = u64::from(n);
        if self.rest.is_empty() {
            return self.first.try_commit(now, n).map(drop);
        }
        self.try_acquire_all(now, n)
    }

    fn try_acquire_all(&self, now: u64, n: u64) -> Result<(), u64> {
        // The increments committed so far (quota changes may race, so keep what was added).
        let mut committed = [0u64; 8];
        for (i, slot) in self.slots().enumerate() {
            match slot.try_commit(now, n) {
                Ok(increment) => {
                    if let Some(c) = committed.get_mut(i) {
                        *c = increment;
                    }
                }
                Err(_) => {
                    let earlier_slots: Vec<&Slot> = self.slots().take(i).collect();
                    for (j, earlier) in earlier_slots.into_iter().enumerate().rev() {
                        let increment = committed
                            .get(j)
                            .copied()
                            .unwrap_or_else(|| earlier.interval.load(Relaxed).saturating_mul(n));
                        earlier.take_back(increment);
                    }
                    return Err(self.wait(now, n).max(1));
                }
            }
        }
        Ok(())
    }

    /// The wait before `n` would be admitted under every quota (0: now).
    pub(crate) fn wait(&self, now: u64, n: u64) -> u64 {
        self.slots().map(|s| s.wait(now, n)).max().unwrap_or(0)
    }

    /// How many cost-1 requests every quota would admit right now.
    pub(crate) fn available(&self, now: u64) -> u64 {
        self.slots().map(|s| s.available(now)).min().unwrap_or(0)
    }

    /// Returns `n` permits to every quota.
    pub(crate) fn refund(&self, n: u32) {
        for slot in self.slots() {
            slot.take_back(slot.interval.load(Relaxed).saturating_mul(u64::from(n)));
        }
    }

    /// Empties every bucket so that one request is admitted at `until` and the next ones at the
    /// steady rate after it. Never brings a later TAT earlier.
    pub(crate) fn pause_until(&self, until: u64) {
        for slot in self.slots() {
            let tau = slot
                .capacity
                .load(Relaxed)
                .saturating_sub(slot.interval.load(Relaxed));
            slot.tat.fetch_max(until.saturating_add(tau), Relaxed);
        }
    }

    pub(crate) fn quotas(&self) -> Vec<Quota> {
        self.slots().map(Slot::quota).collect()
    }

    pub(crate) fn quota(&self, index: usize) -> Option<Quota> {
        self.slot(index).map(Slot::quota)
    }

    pub(crate) fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// Replaces quota `index`, keeping its debt in requests: a bucket that owed `k` requests'
    /// worth of time at the old rate owes `k` requests' worth at the new one. Callers serialise
    /// quota changes.
    pub(crate) fn set_quota(&self, index: usize, quota: Quota, now: u64) {
        let Some(slot) = self.slot(index) else {
            return;
        };
        let old_interval = slot.interval.load(Relaxed);
        slot.store_quota(quota);
        rescale(&slot.tat, old_interval, quota.interval_nanos(), now);
    }

    /// How many cost-1 requests the first quota would admit on `tat` at `now`.
    pub(crate) fn available_on(&self, tat: &AtomicU64, now: u64) -> u64 {
        let slot = &self.first;
        let room = now
            .saturating_add(slot.capacity.load(Relaxed))
            .saturating_sub(tat.load(Relaxed).max(now));
        room / slot.interval.load(Relaxed).max(1)
    }

    /// The first quota (its parameters serve keys whose state is a bare TAT).
    pub(crate) fn first(&self) -> &Slot {
        &self.first
    }

    /// Whether every bucket is full at `now` (nothing owed): state that can be forgotten.
    pub(crate) fn is_full(&self, now: u64) -> bool {
        self.slots().all(|s| s.tat.load(Relaxed) <= now)
    }

    /// The latest TAT: how far ahead of `now` the most indebted bucket is.
    pub(crate) fn latest_tat(&self) -> u64 {
        self.slots().map(|s| s.tat.load(Relaxed)).max().unwrap_or(0)
    }
}

/// Converts the debt in `tat` from `old_interval` to `new_interval`, keeping it in requests.
pub(crate) fn rescale(tat: &AtomicU64, old_interval: u64, new_interval: u64, now: u64) {
    let old_interval = old_interval.max(1);
    let _ = tat.fetch_update(Relaxed, Relaxed, |t| {
        let debt = u128::from(t.saturating_sub(now));
        let scaled = debt * u128::from(new_interval) / u128::from(old_interval);
        Some(now.saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX)))
    });
}

/// One quota's state as the server side reports it in response headers.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotView {
    pub(crate) quota: Quota,
    /// Cost-1 requests admitted now.
    pub(crate) available: u64,
    /// Nanoseconds until the bucket is full again.
    pub(crate) full_in: u64,
    /// Nanoseconds until one more request is admitted (0: now).
    pub(crate) wait: u64,
}

#[cfg_attr(not(feature = "server"), allow(dead_code))]
impl Slot {
    /// This quota's state on `tat_cell` (its own TAT, or a key's bare one).
    pub(crate) fn view_on(&self, tat_cell: &AtomicU64, now: u64) -> SlotView {
        let interval = self.interval.load(Relaxed).max(1);
        let capacity = self.capacity.load(Relaxed);
        let tat = tat_cell.load(Relaxed);
        let room = now.saturating_add(capacity).saturating_sub(tat.max(now));
        let wait = tat
            .max(now)
            .saturating_add(interval)
            .saturating_sub(now.saturating_add(capacity));
        SlotView {
            quota: self.quota(),
            available: room / interval,
            full_in: tat.saturating_sub(now),
            wait,
        }
    }

    /// Gives `n` requests back to `tat_cell` (a key's bare TAT).
    pub(crate) fn take_back_on(&self, tat_cell: &AtomicU64, n: u64) {
        let increment = self.interval.load(Relaxed).saturating_mul(n);
        let _ = tat_cell.fetch_update(Relaxed, Relaxed, |tat| Some(tat.saturating_sub(increment)));
    }
}

#[cfg_attr(not(feature = "server"), allow(dead_code))]
impl Gcra {
    /// Every quota's state at `now`, first one first.
    pub(crate) fn views(&self, now: u64) -> impl Iterator<Item = SlotView> + '_ {
        self.slots().map(move |s| s.view_on(&s.tat, now))
    }
}

impl Slot {
    pub(crate) fn interval_nanos(&self) -> u64 {
        self.interval.load(Relaxed)
    }

    /// Sets this quota's state (a key's bare TAT moving into a full limiter).
    pub(crate) fn set_tat(&self, tat: u64) {
        self.tat.store(tat, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn burst_then_rate() {
        let g = Gcra::new(&[Quota::per_second(nz(10)).with_burst(nz(3))]);
        for _ in 0..3 {
            assert_eq!(g.try_acquire(0, 1), Ok(()));
        }
        assert_eq!(g.try_acquire(0, 1), Err(100 * MS));
        assert_eq!(g.try_acquire(99 * MS, 1), Err(MS));
        assert_eq!(g.try_acquire(100 * MS, 1), Ok(()));
        assert_eq!(g.available(100 * MS), 0);
        assert_eq!(g.available(400 * MS), 3);
    }

    #[test]
    fn cost_above_burst_never_fits_and_denial_writes_nothing() {
        let g = Gcra::new(&[Quota::per_second(nz(10)).with_burst(nz(5))]);
        assert_eq!(g.max_cost(), 5);
        assert!(g.try_acquire(0, 6).is_err());
        assert_eq!(g.available(0), 5);
        assert_eq!(g.try_acquire(0, 5), Ok(()));
    }

    #[test]
    fn all_or_nothing() {
        let g = Gcra::new(&[
            Quota::per_second(nz(10)).with_burst(nz(5)),
            Quota::per_minute(nz(3)).with_burst(nz(3)),
        ]);
        assert_eq!(g.try_acquire(0, 3), Ok(()));
        // The minute quota is spent; the second quota refuses and the first keeps its 2.
        assert_eq!(g.try_acquire(0, 2), Err(2 * 20_000 * MS));
        assert_eq!(g.available(0), 0);
        assert_eq!(g.first.available(0), 2);
    }

    #[test]
    fn pause_empties_then_spreads() {
        let g = Gcra::new(&[Quota::per_second(nz(10)).with_burst(nz(4))]);
        g.pause_until(1_000 * MS);
        assert!(g.try_acquire(999 * MS, 1).is_err());
        assert_eq!(g.try_acquire(1_000 * MS, 1), Ok(()));
        assert!(g.try_acquire(1_000 * MS, 1).is_err());
        assert_eq!(g.try_acquire(1_100 * MS, 1), Ok(()));
    }

    #[test]
    fn set_quota_keeps_debt_in_requests() {
        let g = Gcra::new(&[Quota::per_second(nz(10))]);
        for i in 0..1 {
            assert_eq!(g.try_acquire(i, 1), Ok(()));
        }
        // Owes one request's worth: 100 ms at 10/s.
        g.set_quota(0, Quota::per_second(nz(2)), 0);
        assert_eq!(g.wait(0, 1), 500 * MS);
        g.set_quota(0, Quota::per_second(nz(20)), 0);
        assert_eq!(g.wait(0, 1), 50 * MS);
    }

    #[test]
    fn refund_returns_capacity() {
        let g = Gcra::new(&[Quota::per_second(nz(10)).with_burst(nz(2))]);
        assert_eq!(g.try_acquire(0, 2), Ok(()));
        g.refund(1);
        assert_eq!(g.available(0), 1);
        g.refund(5);
        assert_eq!(g.available(0), 2, "never more than the burst");
    }
}
