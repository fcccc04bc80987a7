//! The lock-free GCRA state: one atomic word (the theoretical arrival time, TAT) per quota.
//!
//! Time is nanoseconds since the limiter's origin. A request of cost `n` at `now` is admitted
//! when `max(tat, now) + n * interval <= now + capacity`, where `capacity = burst * interval`;
//! admitting it stores that left-hand side as the new TAT. A denial writes nothing.
//!
//! **Several quotas** are admitted all-or-nothing without a lock: every quota is first asked
//! without writing (so a refusal writes nothing, and a refused flood cannot spend the quotas it
//! passed), then each is committed with its own compare-and-swap. If a later commit loses a
//! race and refuses, the earlier ones are undone by a compare-and-swap that restores exactly
//! the value they replaced, and only if nothing was committed on top of it since: an undo never
//! erases another request's permit. When it cannot restore, the permit stays spent (the bucket
//! is then at most one request more conservative than exact), never the other way round.
//!
//! **Quota changes** are atomic with respect to commits. A quota's parameters (interval,
//! capacity) live next to its TAT; a change swaps the TAT for the [`LOCKED`] marker, stores
//! the new parameters, and releases the rescaled TAT, which is never the value it replaced.
//! A commit reads the TAT, then the parameters, and compare-and-swaps the TAT: it succeeds
//! only on a TAT that no change touched since it read it, so the parameters it used are the
//! ones that TAT was written under. Commits wait (spin, then yield) while a change holds the
//! word: a few stores.

mod cell;

pub(crate) use cell::{
    Commit, LOCKED, MAX_TAT, Params, changed_tat, commit, commit_all, load, rescale, undo, update,
};

use crate::quota::Quota;
use crate::sync::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
    spin_wait,
};

/// One quota of a limiter: its TAT and the parameters it is written under.
#[derive(Debug)]
pub(crate) struct Slot {
    tat: AtomicU64,
    interval: AtomicU64,
    capacity: AtomicU64,
}

impl Slot {
    fn new(quota: Quota) -> Self {
        let params = Params::of(quota);
        Self {
            tat: AtomicU64::new(0),
            interval: AtomicU64::new(params.interval),
            capacity: AtomicU64::new(params.capacity),
        }
    }

    /// The parameters; consistent with a TAT read (with [`load`]) just before.
    #[inline]
    fn params(&self) -> Params {
        Params {
            interval: self.interval.load(Relaxed),
            capacity: self.capacity.load(Relaxed),
        }
    }

    /// The TAT and the parameters it was written under.
    /// For reports and the advice that comes before a commit (the commit itself is exact).
    fn snapshot(&self) -> (u64, Params) {
        let mut tries = 0;
        loop {
            let tat = load(&self.tat);
            let params = self.params();
            // The TAT moved in between: a quota change may have too, read both again (a few
            // times: busy commits move it as well, and they do not change the parameters).
            tries += 1;
            if self.tat.load(Acquire) == tat || tries == 4 {
                return (tat, params);
            }
        }
    }

    #[inline]
    fn commit(&self, now: u64, n: u64) -> Result<Commit, u64> {
        commit(&self.tat, now, n, || self.params())
    }

    fn wait(&self, now: u64, n: u64) -> u64 {
        let (tat, params) = self.snapshot();
        params.wait(tat, now, n)
    }

    /// Replaces the parameters and rescales the TAT in one step as commits see it. Callers
    /// serialise changes.
    fn set(&self, new: Params, now: u64, base: u64) {
        let mut turns = 0;
        let old_tat = loop {
            let tat = self.tat.load(Relaxed);
            if tat != LOCKED
                && self
                    .tat
                    .compare_exchange_weak(tat, LOCKED, Acquire, Relaxed)
                    .is_ok()
            {
                break tat;
            }
            spin_wait(&mut turns);
        };
        let old = self.params();
        self.interval.store(new.interval, Relaxed);
        self.capacity.store(new.capacity, Relaxed);
        self.tat
            .store(changed_tat(old_tat, old, new, now, base), Release);
    }
}

/// The quotas of one limiter, admitted all-or-nothing.
#[derive(Debug)]
pub(crate) struct Gcra {
    /// The first quota, inline: the single-quota hot path touches no other allocation.
    first: Slot,
    /// Any further quotas.
    rest: Box<[Slot]>,
}

/// What one admission wrote, to undo it exactly (up to [`Grant::INLINE`] quotas; a limiter
/// with more quotas keeps no undo record, and its unspent permits are not returned).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grant {
    commits: [Commit; Grant::INLINE],
    len: u8,
}

impl Grant {
    pub(crate) const INLINE: usize = 2;
    const EMPTY: Commit = Commit { old: 0, new: 0 };

    /// What was recorded, first quota first.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn commits(&self) -> &[Commit] {
        &self.commits[..usize::from(self.len)]
    }

    pub(crate) fn one(commit: Commit) -> Self {
        let mut commits = [Self::EMPTY; Self::INLINE];
        commits[0] = commit;
        Self { commits, len: 1 }
    }

    /// A grant with nothing to undo.
    pub(crate) const NONE: Self = Self {
        commits: [Self::EMPTY; Self::INLINE],
        len: 0,
    };
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

    /// Quota `index`, which must exist.
    fn slot_at(&self, index: usize) -> &Slot {
        if index == 0 {
            &self.first
        } else {
            &self.rest[index - 1]
        }
    }

    fn slot(&self, index: usize) -> Option<&Slot> {
        match index {
            0 => Some(&self.first),
            i => self.rest.get(i - 1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// The most one request may cost: the smallest burst.
    pub(crate) fn max_cost(&self) -> u32 {
        self.slots()
            .map(|s| s.snapshot().1.burst())
            .min()
            .unwrap_or(1)
    }

    /// The first quota's interval (a nominal retry-after).
    pub(crate) fn first_interval(&self) -> u64 {
        self.first.snapshot().1.interval
    }

    /// Admits `n` under every quota, or none; on refusal, the wait in nanoseconds until all
    /// quotas would admit it.
    #[inline(always)]
    pub(crate) fn try_acquire(&self, now: u64, n: u32) -> Result<Grant, u64> {
        let n = u64::from(n);
        if self.rest.is_empty() {
            return self.first.commit(now, n).map(Grant::one);
        }
        self.try_acquire_all(now, n)
    }

    #[inline(never)]
    fn try_acquire_all(&self, now: u64, n: u64) -> Result<Grant, u64> {
        commit_all(
            self.len(),
            |i| &self.slot_at(i).tat,
            |i| self.slot_at(i).params(),
            now,
            n,
        )
    }

    /// Undoes `grant` where nothing was written since (see the module docs).
    pub(crate) fn undo(&self, grant: &Grant) {
        for (slot, commit) in self.slots().zip(&grant.commits[..usize::from(grant.len)]) {
            undo(&slot.tat, *commit);
        }
    }

    /// The wait before `n` would be admitted under every quota (0: now).
    pub(crate) fn wait(&self, now: u64, n: u64) -> u64 {
        self.slots().map(|s| s.wait(now, n)).max().unwrap_or(0)
    }

    /// How many cost-1 requests every quota would admit right now.
    pub(crate) fn available(&self, now: u64) -> u64 {
        self.slots()
            .map(|s| {
                let (tat, params) = s.snapshot();
                params.available(tat, now)
            })
            .min()
            .unwrap_or(0)
    }

    /// Returns `n` requests' worth of time to every quota (never more than a full bucket:
    /// admission takes `max(tat, now)`).
    pub(crate) fn refund(&self, n: u32) {
        for slot in self.slots() {
            update(&slot.tat, |tat| {
                tat.saturating_sub(slot.params().interval.saturating_mul(u64::from(n)))
            });
        }
    }

    /// Empties every bucket so that one request is admitted at `until` and the next ones at the
    /// steady rate after it. Never brings a later TAT earlier.
    pub(crate) fn pause_until(&self, until: u64) {
        let until = until.min(MAX_TAT);
        for slot in self.slots() {
            update(&slot.tat, |tat| {
                let params = slot.params();
                tat.max(until.saturating_add(params.capacity.saturating_sub(params.interval)))
            });
        }
    }

    /// Replaces quota `index`, keeping its debt beyond `base` in requests (see [`rescale`]).
    /// Callers serialise quota changes.
    pub(crate) fn set_quota(&self, index: usize, quota: Quota, now: u64, base: u64) {
        if let Some(slot) = self.slot(index) {
            slot.set(Params::of(quota), now, base);
        }
    }

    /// Sets the TATs, first quota first (a key's bare TATs move into a full limiter).
    pub(crate) fn set_tats(&self, tats: impl Iterator<Item = u64>) {
        for (slot, tat) in self.slots().zip(tats) {
            update(&slot.tat, |_| tat);
        }
    }

    /// Whether every bucket is full at `now` (nothing owed): state that can be forgotten.
    pub(crate) fn is_full(&self, now: u64) -> bool {
        self.slots().all(|s| load(&s.tat) <= now)
    }

    /// Every quota's state at `now`, first one first.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn views(&self, now: u64) -> impl Iterator<Item = SlotView> + '_ {
        self.slots().map(move |s| {
            let (tat, params) = s.snapshot();
            params.view(tat, now)
        })
    }
}

/// One quota's state as the server side reports it in response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SlotView {
    /// Cost-1 requests admitted now.
    pub(crate) available: u64,
    /// Nanoseconds until the bucket is full again.
    pub(crate) full_in: u64,
    /// Nanoseconds until one more request is admitted (0: now).
    pub(crate) wait: u64,
}

/// What the model checks need to reach.
#[cfg(all(test, tollway_loom))]
impl Gcra {
    pub(crate) fn tats(&self) -> Vec<u64> {
        self.slots().map(|s| load(&s.tat)).collect()
    }
}

#[cfg(all(test, not(tollway_loom)))]
mod tests;
