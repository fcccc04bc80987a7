//! How one key is decided: taking from its TATs (or its full limiter), reporting each
//! quota's state when asked ([`Views`]), looking without taking, and undoing exactly. What the
//! server side and the public `check`s share.

use std::hash::Hash;

use parking_lot::{RwLockReadGuard, RwLockWriteGuard};

use super::KeyedRateLimiter;
use super::shard::{Entry, Shard};
use crate::clock::LimiterClock;
use crate::gcra::{self, Grant, SlotView, load};

impl<K: Hash + Eq + Clone, C: LimiterClock> KeyedRateLimiter<K, C> {
    /// Takes `cost` from `key` under every quota, or nothing: on refusal the wait in
    /// nanoseconds. Inserts an unseen key.
    #[inline]
    pub(crate) fn try_acquire(&self, key: &K, cost: u32) -> Result<Grant, u64> {
        self.try_acquire_with(key, cost, NoViews)
    }

    /// [`try_acquire`](Self::try_acquire), reporting each quota's state after the decision
    /// to `view(quota index, state)`.
    #[inline]
    pub(crate) fn try_acquire_with(
        &self,
        key: &K,
        cost: u32,
        mut view: impl Views,
    ) -> Result<Grant, u64> {
        let hash = self.hash(key);
        let now = self.now();
        let shard = self.shard(hash).read();
        if let Some(entry) = shard.get(hash, key) {
            // A key seen before earns a pass of the eviction hand; a new key's first check
            // does not (see `shard`).
            entry.touch();
            return decide(&shard, entry, now, cost, &mut view);
        }
        drop(shard);
        let shard = self.insert(hash, key, now);
        let shard = RwLockWriteGuard::downgrade(shard);
        match shard.get(hash, key) {
            Some(entry) => decide(&shard, entry, now, cost, &mut view),
            None => Ok(Grant::NONE),
        }
    }

    /// The wait before `key` would admit `cost` under every quota (0: now), taking nothing and
    /// inserting nothing; reports each quota's state to `view`.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn peek_with(
        &self,
        key: &K,
        cost: u32,
        mut view: impl FnMut(usize, SlotView),
    ) -> u64 {
        let hash = self.hash(key);
        let now = self.now();
        let shard = self.shard(hash).read();
        let n = u64::from(cost);
        match shard.get(hash, key) {
            Some(Entry {
                limiter: Some(limiter),
                ..
            }) => {
                for (i, v) in limiter.shared.gcra.views(now).enumerate() {
                    view(i, v);
                }
                limiter.shared.gcra.wait(now, n)
            }
            found => {
                let mut wait = 0;
                for (i, params) in shard.params.iter().enumerate() {
                    let tat = found.and_then(|e| e.tat(i)).map_or(0, load);
                    view(i, params.view(tat, now));
                    wait = wait.max(params.wait(tat, now, n));
                }
                wait
            }
        }
    }

    /// Gives back what `grant` took from `key`, if nothing was admitted on top of it since (a
    /// request admitted here but refused by another limit).
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn undo(&self, key: &K, grant: &Grant) {
        let hash = self.hash(key);
        let shard = self.shard(hash).read();
        let Some(entry) = shard.get(hash, key) else {
            return;
        };
        match &entry.limiter {
            Some(limiter) => limiter.shared.undo(grant),
            None => {
                for (tat, commit) in entry.tats().zip(grant.commits()) {
                    gcra::undo(tat, *commit);
                }
            }
        }
    }

    /// Forgets the idle keys among a slice of one shard (`index` modulo the shard count),
    /// without waiting for its lock: bounded work for the request path.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn forget_idle_in(&self, index: usize, budget: usize) {
        let shards = &self.shared.shards;
        if let Some(mut shard) = shards[index % shards.len()].try_write() {
            shard.sweep(self.now(), budget);
        }
    }
}

/// Where a decision reports each quota's state: nowhere ([`NoViews`], the state is then not
/// even computed), or a closure `FnMut(quota index, state)`.
pub(crate) trait Views {
    /// Whether the state is wanted at all.
    const WANTED: bool;

    fn view(&mut self, quota: usize, state: SlotView);
}

/// No state wanted.
pub(crate) struct NoViews;

impl Views for NoViews {
    const WANTED: bool = false;

    #[inline]
    fn view(&mut self, _quota: usize, _state: SlotView) {}
}

impl<F: FnMut(usize, SlotView)> Views for F {
    const WANTED: bool = true;

    #[inline]
    fn view(&mut self, quota: usize, state: SlotView) {
        self(quota, state);
    }
}

/// Decides on `entry` at `now` under the shard's quotas (the shard is locked by the caller).
#[inline]
fn decide<K, C: LimiterClock, V: Views>(
    shard: &RwLockReadGuard<'_, Shard<K, C>>,
    entry: &Entry<K, C>,
    now: u64,
    cost: u32,
    view: &mut V,
) -> Result<Grant, u64> {
    if let Some(limiter) = &entry.limiter {
        let outcome = limiter.shared.try_acquire_at(now, cost);
        if V::WANTED {
            for (i, v) in limiter.shared.gcra.views(now).enumerate() {
                view.view(i, v);
            }
        }
        return outcome;
    }
    let params = &shard.params;
    let n = u64::from(cost);
    let outcome = if params.len() == 1 {
        let p = params[0];
        gcra::commit(&entry.first, now, n, || p).map(Grant::one)
    } else {
        let tat = |i: usize| entry.tat(i).unwrap_or(&entry.first);
        gcra::commit_all(params.len(), tat, |i| params[i], now, n)
    };
    if V::WANTED {
        for (i, (tat, p)) in entry.tats().zip(params.iter()).enumerate() {
            view.view(i, p.view(load(tat), now));
        }
    }
    outcome
}
