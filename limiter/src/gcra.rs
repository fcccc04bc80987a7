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

use crate::quota::Quota;
use crate::sync::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
    spin_wait,
};

/// The TAT while a quota change holds it. Never a real TAT: those stay under `2^63`.
pub(crate) const LOCKED: u64 = u64::MAX;

/// The highest TAT ever stored (pauses and rescaled debts are clamped to it).
const MAX_TAT: u64 = 1 << 63;

/// One quota's parameters, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    pub(crate) interval: u64,
    pub(crate) capacity: u64,
}

impl Params {
    pub(crate) const fn of(quota: Quota) -> Self {
        Self {
            interval: quota.interval_nanos(),
            capacity: quota.capacity_nanos(),
        }
    }

    pub(crate) fn burst(&self) -> u32 {
        u32::try_from(self.capacity / self.interval.max(1)).unwrap_or(u32::MAX)
    }

    pub(crate) fn quota(&self) -> Quota {
        Quota::clamped(self.interval, self.burst())
    }

    /// The TAT after admitting `n` at `now`, or the wait before it would be admitted.
    #[inline]
    fn decide(&self, tat: u64, now: u64, n: u64) -> Result<u64, u64> {
        let new = tat.max(now).saturating_add(self.interval.saturating_mul(n));
        let limit = now.saturating_add(self.capacity);
        if new > limit { Err(new - limit) } else { Ok(new) }
    }

    /// The wait before `n` would be admitted on `tat` (0: now).
    #[inline]
    pub(crate) fn wait(&self, tat: u64, now: u64, n: u64) -> u64 {
        self.decide(tat, now, n).err().unwrap_or(0)
    }

    /// How many cost-1 requests `tat` admits at `now`.
    pub(crate) fn available(&self, tat: u64, now: u64) -> u64 {
        let room = now
            .saturating_add(self.capacity)
            .saturating_sub(tat.max(now));
        room / self.interval.max(1)
    }

    /// This quota's state on `tat`, as the server side reports it.
    pub(crate) fn view(&self, tat: u64, now: u64) -> SlotView {
        SlotView {
            available: self.available(tat, now),
            full_in: tat.saturating_sub(now),
            wait: self.wait(tat, now, 1),
        }
    }
}

/// One commit: the TAT it replaced and the one it stored, so it can be undone exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Commit {
    pub(crate) old: u64,
    pub(crate) new: u64,
}

/// Reads a TAT, waiting while a quota change holds it.
#[inline]
pub(crate) fn load(cell: &AtomicU64) -> u64 {
    let mut turns = 0;
    loop {
        let tat = cell.load(Acquire);
        if tat != LOCKED {
            return tat;
        }
        spin_wait(&mut turns);
    }
}

/// Admits `n` at `now` on `cell` under `params()` (read after the TAT: see the module docs).
#[inline]
pub(crate) fn commit(
    cell: &AtomicU64,
    now: u64,
    n: u64,
    params: impl Fn() -> Params,
) -> Result<Commit, u64> {
    let mut tat = load(cell);
    loop {
        let new = params().decide(tat, now, n)?;
        // Release: a quota change that takes the word after this commit sees the parameters
        // read above as read before its own stores.
        match cell.compare_exchange_weak(tat, new, Release, Acquire) {
            Ok(_) => return Ok(Commit { old: tat, new }),
            Err(LOCKED) => tat = load(cell),
            Err(current) => tat = current,
        }
    }
}

/// Undoes `commit` if nothing was written on `cell` since; whether it did.
pub(crate) fn undo(cell: &AtomicU64, commit: Commit) -> bool {
    cell.compare_exchange(commit.new, commit.old, Release, Relaxed)
        .is_ok()
}

/// Applies `f` to the TAT in `cell` (refunds, pauses, rescaling of bare keys).
pub(crate) fn update(cell: &AtomicU64, mut f: impl FnMut(u64) -> u64) {
    let mut tat = load(cell);
    loop {
        let new = f(tat).min(MAX_TAT);
        match cell.compare_exchange_weak(tat, new, Release, Acquire) {
            Ok(_) => return,
            Err(LOCKED) => tat = load(cell),
            Err(current) => tat = current,
        }
    }
}

/// `tat` converted from `old` to `new` parameters, keeping the debt beyond `base` in requests
/// (the part before `base` is a pause the upstream ordered, in absolute time: it stays).
pub(crate) fn rescale(tat: u64, old: Params, new: Params, base: u64) -> u64 {
    if tat <= base || old.interval == new.interval {
        return tat;
    }
    let debt = u128::from(tat - base) * u128::from(new.interval) / u128::from(old.interval.max(1));
    base.saturating_add(u64::try_from(debt).unwrap_or(u64::MAX))
        .min(MAX_TAT)
}

/// Admits `n` at `now` under each of `len` quotas (quota `i`: the TAT `cell(i)`, written under
/// `params(i)`), or none: see the module docs.
pub(crate) fn commit_all<'a>(
    len: usize,
    cell: impl Fn(usize) -> &'a AtomicU64,
    params: impl Fn(usize) -> Params,
    now: u64,
    n: u64,
) -> Result<Grant, u64> {
    // Ask first: a refusal writes nothing.
    let wait = (0..len)
        .map(|i| params(i).wait(load(cell(i)), now, n))
        .max()
        .unwrap_or(0);
    if wait > 0 {
        return Err(wait);
    }
    let mut grant = Grant::NONE;
    let mut spilled = Vec::new();
    for index in 0..len {
        match commit(cell(index), now, n, || params(index)) {
            Ok(done) => match grant.commits.get_mut(index) {
                Some(record) => {
                    *record = done;
                    grant.len += 1;
                }
                None => spilled.push(done),
            },
            Err(wait) => {
                // Lost a race: undo what this request wrote, newest first.
                for earlier in (0..index).rev() {
                    let done = match grant.commits.get(earlier) {
                        Some(done) => Some(*done),
                        None => spilled.get(earlier - Grant::INLINE).copied(),
                    };
                    if let Some(done) = done {
                        undo(cell(earlier), done);
                    }
                }
                let all = (0..len)
                    .map(|i| params(i).wait(load(cell(i)), now, n))
                    .max()
                    .unwrap_or(0);
                return Err(wait.max(all).max(1));
            }
        }
    }
    if !spilled.is_empty() {
        // Too many quotas to keep an exact undo record.
        grant.len = 0;
    }
    Ok(grant)
}

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
    fn snapshot(&self) -> (u64, Params) {
        loop {
            let tat = load(&self.tat);
            let params = self.params();
            // A change in between moved the TAT: read both again.
            if self.tat.load(Acquire) == tat {
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

/// The TAT a quota change stores: [`rescale`]d, and never the value it replaced when a
/// commit under the old parameters could still succeed on it, so that a commit that read the
/// old TAT (and maybe the old parameters) fails its compare-and-swap and reads both again.
/// Where the exact value would be the same, it moves by one nanosecond in the direction that
/// changes no decision: earlier when nothing is owed, later otherwise.
///
/// No nudge is needed with the same interval (the TAT means the same under both parameters,
/// so a commit under the old ones is simply ordered before the change), nor inside a pause of
/// burst 1 (`now < tat <= base`: every commit is refused there under either parameters).
pub(crate) fn changed_tat(tat: u64, old: Params, new: Params, now: u64, base: u64) -> u64 {
    let scaled = rescale(tat, old, new, base);
    if scaled != tat || old.interval == new.interval || (now < tat && tat <= base) {
        scaled
    } else if tat > now || tat == 0 {
        tat + 1
    } else {
        tat - 1
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
        if index == 0 { &self.first } else { &self.rest[index - 1] }
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
    #[cfg(feature = "redis")]
    pub(crate) fn first_interval(&self) -> u64 {
        self.first.snapshot().1.interval
    }

    /// Admits `n` under every quota, or none; on refusal, the wait in nanoseconds until all
    /// quotas would admit it.
    #[inline]
    pub(crate) fn try_acquire(&self, now: u64, n: u32) -> Result<Grant, u64> {
        let n = u64::from(n);
        if self.rest.is_empty() {
            return self.first.commit(now, n).map(Grant::one);
        }
        self.try_acquire_all(now, n)
    }

    fn try_acquire_all(&self, now: u64, n: u64) -> Result<Grant, u64> {
        commit_all(self.len(), |i| &self.slot_at(i).tat, |i| self.slot_at(i).params(), now, n)
    }

    /// Undoes `grant` where nothing was written since (see the module docs).
    pub(crate) fn undo(&self, grant: &Grant) {
        for (slot, commit) in self
            .slots()
            .zip(&grant.commits[..usize::from(grant.len)])
        {
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

    /// The latest TAT: how far ahead of `now` the most indebted bucket is.
    pub(crate) fn latest_tat(&self) -> u64 {
        self.slots().map(|s| load(&s.tat)).max().unwrap_or(0)
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
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn burst_then_rate() {
        let g = Gcra::new(&[Quota::per_second(10).burst(3)]);
        for _ in 0..3 {
            assert!(g.try_acquire(0, 1).is_ok());
        }
        assert_eq!(g.try_acquire(0, 1).err(), Some(100 * MS));
        assert_eq!(g.try_acquire(99 * MS, 1).err(), Some(MS));
        assert!(g.try_acquire(100 * MS, 1).is_ok());
        assert_eq!(g.available(100 * MS), 0);
        assert_eq!(g.available(400 * MS), 3);
    }

    #[test]
    fn a_refusal_writes_nothing_on_any_quota() {
        let g = Gcra::new(&[
            Quota::per_second(10).burst(5),
            Quota::per_minute(3).burst(3),
        ]);
        assert!(g.try_acquire(0, 3).is_ok());
        let before = (load(&g.first.tat), load(&g.rest[0].tat));
        // The minute quota is spent; the second quota refuses and the first keeps its 2.
        assert_eq!(g.try_acquire(0, 2).err(), Some(2 * 20_000 * MS));
        assert_eq!((load(&g.first.tat), load(&g.rest[0].tat)), before);
        assert_eq!(g.available(0), 0);
    }

    /// Finding: "commit, then subtract to undo" erased another request's permit that landed
    /// in between. A at t=0 and B at t=1.5 s both commit on a 1/s burst-1 bucket; A's undo
    /// must not bring the TAT back below B's permit, or C is admitted at 1.5 s next to B.
    #[test]
    fn an_undo_never_erases_a_later_permit() {
        let params = Params::of(Quota::per_second(1).burst(1));
        let cell = AtomicU64::new(0);
        let a = commit(&cell, 0, 1, || params).unwrap();
        let b = commit(&cell, 1_500 * MS, 1, || params).unwrap();
        assert!(!undo(&cell, a), "B wrote since: A's undo must not apply");
        assert!(commit(&cell, 1_500 * MS, 1, || params).is_err(), "C next to B");
        assert!(undo(&cell, b), "nothing since B: exact");
        assert_eq!(load(&cell), a.new);
    }

    #[test]
    fn pause_empties_then_spreads() {
        let g = Gcra::new(&[Quota::per_second(10).burst(4)]);
        g.pause_until(1_000 * MS);
        assert!(g.try_acquire(999 * MS, 1).is_err());
        assert!(g.try_acquire(1_000 * MS, 1).is_ok());
        assert!(g.try_acquire(1_000 * MS, 1).is_err());
        assert!(g.try_acquire(1_100 * MS, 1).is_ok());
    }

    #[test]
    fn set_quota_keeps_debt_in_requests() {
        let g = Gcra::new(&[Quota::per_second(10).burst(1)]);
        assert!(g.try_acquire(0, 1).is_ok());
        // Owes one request's worth: 100 ms at 10/s.
        g.set_quota(0, Quota::per_second(2).burst(1), 0, 0);
        assert_eq!(g.wait(0, 1), 500 * MS);
        g.set_quota(0, Quota::per_second(20).burst(1), 0, 0);
        assert_eq!(g.wait(0, 1), 50 * MS);
    }

    /// Finding: a slower rate after a pause stretched the pause as if it were debt.
    #[test]
    fn a_rate_change_keeps_a_pause_in_absolute_time() {
        let g = Gcra::new(&[Quota::per_second(10).burst(1)]);
        g.pause_until(2_000 * MS);
        g.set_quota(0, Quota::per_second(5).burst(1), 0, 2_000 * MS);
        assert!(g.try_acquire(2_000 * MS, 1).is_ok(), "admitted when the pause ends");
        assert!(g.try_acquire(2_000 * MS, 1).is_err());
    }

    #[test]
    fn refund_returns_capacity_but_never_more_than_the_burst() {
        let g = Gcra::new(&[Quota::per_second(10).burst(2)]);
        assert!(g.try_acquire(0, 2).is_ok());
        g.refund(1);
        assert_eq!(g.available(0), 1);
        g.refund(5);
        assert_eq!(g.available(0), 2, "never more than the burst");
    }

    #[test]
    fn a_grant_is_undone_exactly() {
        let g = Gcra::new(&[
            Quota::per_second(10).burst(1),
            Quota::per_minute(10).burst(1),
        ]);
        let grant = g.try_acquire(0, 1).unwrap();
        assert_eq!(g.available(0), 0);
        g.undo(&grant);
        assert_eq!(g.available(0), 1);
    }
}
