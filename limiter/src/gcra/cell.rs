//! The primitives on one TAT word: [`Params`], a [`commit`] and its exact [`undo`], updates
//! that wait out a quota change ([`LOCKED`]), rescaling, and the all-or-nothing
//! [`commit_all`] over several words. See the [parent module](super) for the protocol.

use crate::quota::Quota;
use crate::sync::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
    spin_wait,
};

use super::{Grant, SlotView};

/// The TAT while a quota change holds it. Never a real TAT: those stay under `2^63`.
pub(crate) const LOCKED: u64 = u64::MAX;

/// The highest TAT ever stored (pauses and rescaled debts are clamped to it).
pub(crate) const MAX_TAT: u64 = 1 << 63;

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
        if new > limit {
            Err(new - limit)
        } else {
            Ok(new)
        }
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
