//! One shard of the keyed map: `hashbrown`'s `HashTable` holding the entries themselves (one
//! probe, no index to follow), with sampled eviction.
//!
//! When the shard is full, a new key evicts a key found by a clock hand (a generalised CLOCK)
//! that walks the table's buckets round and round: every check of a key raises its use count
//! (up to [`MAX_USES`]); the hand forgets the first key that is idle (nothing owed, nobody
//! holding it: forgetting it changes no answer) or whose count is down to zero, and lowers the
//! count of the others. A new key starts at zero, so a flood of one-off keys evicts itself;
//! a key checked again and again has credit for several passes of the hand (hashbrown moves
//! entries when it rehashes in place, so one pass is not a full revolution). Keys in use (legitimate clients, and abusive ones being refused: their debt
//! is what refuses them) survive a flood of one-off keys, and each new key costs O(1)
//! amortised (every mark the hand clears was set by a check), at most [`MAX_HAND_STEPS`] keys
//! looked at, whatever the keys' state; a scan for the best victim grew with the shard. The
//! bucket order is the hash's, so the hand meets keys in an order no client chooses.
//!
//! The first time the shard is full, its table is sized once for good (twice the capacity:
//! hashbrown then rehashes in place instead of growing when deletions pile up), so memory stops
//! growing there.

use hashbrown::HashTable;

use crate::clock::LimiterClock;
use crate::gcra::{Params, load};
use crate::limiter::RateLimiter;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use crate::sync::AtomicU64;

/// The most keys the hand looks at for one eviction (then the key under it goes, used or not).
pub(crate) const MAX_HAND_STEPS: usize = 32;

/// The most passes of the hand a key's checks buy it.
pub(crate) const MAX_USES: u8 = 3;

/// One key's state: a bare TAT per quota, until a full limiter takes over (someone waits on
/// the key, or the limiter adapts to responses).
pub(crate) struct Entry<K, C: LimiterClock> {
    pub(crate) key: K,
    /// Checks not yet spent by the clock hand, at most [`MAX_USES`] (relaxed: a hint, never a
    /// correctness matter).
    pub(crate) used: AtomicU8,
    /// The first quota's TAT inline; the others (if any) in one small allocation.
    pub(crate) first: AtomicU64,
    pub(crate) rest: Box<[AtomicU64]>,
    pub(crate) limiter: Option<RateLimiter<C>>,
}

impl<K, C: LimiterClock> Entry<K, C> {
    /// Quota `index`'s bare TAT.
    pub(crate) fn tat(&self, index: usize) -> Option<&AtomicU64> {
        match index {
            0 => Some(&self.first),
            i => self.rest.get(i - 1),
        }
    }

    pub(crate) fn tats(&self) -> impl Iterator<Item = &AtomicU64> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    /// Someone holds its full limiter (a waiter, a response on its way back).
    fn is_held(&self) -> bool {
        self.limiter
            .as_ref()
            .is_some_and(|l| std::sync::Arc::strong_count(&l.shared) > 1)
    }

    /// Nothing owed and nobody holding it: forgetting it changes nothing.
    pub(crate) fn is_idle(&self, now: u64) -> bool {
        match &self.limiter {
            Some(l) => !self.is_held() && l.shared.gcra.is_full(now),
            None => self.tats().all(|t| load(t) <= now),
        }
    }

    /// Counts a check (the clock hand passes it over once per count). A key checked often
    /// stays at the top and is never written again: no cache-line traffic on the hot path.
    #[inline]
    pub(crate) fn touch(&self) {
        let uses = self.used.load(Relaxed);
        if uses < MAX_USES {
            self.used.store(uses + 1, Relaxed);
        }
    }
}

/// A shard: at most `capacity` keys.
pub(crate) struct Shard<K, C: LimiterClock> {
    table: HashTable<Entry<K, C>>,
    /// Every quota's parameters, as bare TATs in this shard are written under them. Changed
    /// only under the shard's write lock, so a check (read lock) sees them with the TATs.
    pub(crate) params: Box<[Params]>,
    capacity: usize,
    /// The bucket where eviction looks next (write lock only).
    hand: usize,
    /// The bucket where the incremental idle sweep resumes.
    sweep: usize,
    /// Whether the table was sized for good.
    sized: bool,
}

impl<K: Eq, C: LimiterClock> Shard<K, C> {
    pub(crate) fn new(params: Box<[Params]>, capacity: usize, seed: u64) -> Self {
        Self {
            table: HashTable::new(),
            params,
            capacity: capacity.max(1),
            hand: (seed >> 48) as usize,
            sweep: 0,
            sized: false,
        }
    }

    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &K) -> Option<&Entry<K, C>> {
        self.table.find(hash, |e| e.key == *key)
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    #[cfg(all(test, not(tollway_loom)))]
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry<K, C>> {
        self.table.iter()
    }

    pub(crate) fn entries_mut(&mut self) -> impl Iterator<Item = &mut Entry<K, C>> {
        self.table.iter_mut()
    }

    /// `key`'s entry, inserted (making room first if the shard is full) if absent. `rehash`
    /// hashes a key again when the table moves its entries (the entries keep no hash: smaller
    /// entries, fewer cache lines per lookup).
    pub(crate) fn get_or_insert(
        &mut self,
        hash: u64,
        key: K,
        now: u64,
        rehash: impl Fn(&K) -> u64,
    ) -> &mut Entry<K, C> {
        if self.table.find(hash, |e| e.key == key).is_none() && self.len() >= self.capacity {
            if !self.sized {
                self.sized = true;
                self.table.reserve(self.capacity, |e| rehash(&e.key));
            }
            self.evict(now);
        }
        let quotas = self.params.len();
        self.table
            .entry(hash, |e| e.key == key, |e| rehash(&e.key))
            .or_insert_with(|| Entry {
                key,
                // No credit: a key seen once is the hand's first choice, so a flood of one-off
                // keys evicts itself and never a key that keeps coming back. (Crediting new
                // keys let a flood use up the hand's steps and force it onto a key in use.)
                used: AtomicU8::new(0),
                first: AtomicU64::new(0),
                rest: (1..quotas).map(|_| AtomicU64::new(0)).collect(),
                limiter: None,
            })
            .into_mut()
    }

    /// Forgets one key found by the clock hand (see the module docs); returns how many keys
    /// it looked at.
    pub(crate) fn evict(&mut self, now: u64) -> usize {
        let buckets = self.table.num_buckets();
        if self.table.is_empty() {
            return 0;
        }
        let mask = buckets - 1; // a power of two: a mask, not a division, per step
        let mut looked = 0;
        let mut victim = None;
        // When every key looked at had credit, the one with the least goes. A held key never
        // does: its holder would keep using the forgotten limiter while the key's next request
        // started a new one, two buckets for one key. If every key looked at is held, nothing
        // is forgotten: the shard goes over its bound while they are held (held keys come on
        // top of the bound, as their limiters do).
        let mut fallback: Option<(usize, u8)> = None;
        for _ in 0..buckets {
            self.hand = (self.hand + 1) & mask;
            let Some(entry) = self.table.get_bucket(self.hand) else {
                continue;
            };
            looked += 1;
            if entry.is_idle(now) {
                victim = Some(self.hand);
                break;
            }
            let held = entry.is_held();
            let uses = entry.used.load(Relaxed);
            if uses == 0 && !held {
                victim = Some(self.hand);
                break;
            }
            if !held && fallback.is_none_or(|(_, best)| uses < best) {
                fallback = Some((self.hand, uses));
            }
            if looked == MAX_HAND_STEPS {
                victim = fallback.map(|(index, _)| index);
                break;
            }
            entry.used.store(uses.saturating_sub(1), Relaxed);
        }
        // A whole revolution of a small shard without a victim: the least used goes.
        let victim = victim.or(fallback.map(|(index, _)| index));
        if let Some(Ok(entry)) = victim.map(|index| self.table.get_bucket_entry(index)) {
            entry.remove();
        }
        looked
    }

    /// Forgets the idle keys among the next `budget` buckets (resumed where the last sweep
    /// stopped): bounded work for the request path.
    pub(crate) fn sweep(&mut self, now: u64, budget: usize) {
        let buckets = self.table.num_buckets();
        for _ in 0..budget.min(buckets) {
            self.sweep = (self.sweep + 1) & (buckets - 1);
            if let Ok(entry) = self.table.get_bucket_entry(self.sweep)
                && entry.get().is_idle(now)
            {
                entry.remove();
            }
        }
    }

    /// Forgets every idle key.
    pub(crate) fn retain_busy(&mut self, now: u64) {
        self.table.retain(|e| !e.is_idle(now));
    }

    /// Bytes this shard holds on the heap now (the table, and the entries' extra TATs).
    pub(crate) fn heap_bytes(&self) -> usize {
        let extra = self.params.len().saturating_sub(1) * std::mem::size_of::<AtomicU64>();
        self.table.allocation_size() + self.table.len() * extra
    }

    /// The most bytes a shard of `capacity` keys with `quotas` quotas ever holds on the heap
    /// (full limiters of waiting keys aside).
    pub(crate) fn heap_bound(capacity: usize, quotas: usize) -> usize {
        let extra = quotas.saturating_sub(1) * std::mem::size_of::<AtomicU64>();
        // The table grows only while more than half full (tombstones aside), so it never
        // holds more buckets than twice the capacity needs: an entry and a control byte each,
        // and one group of control bytes more.
        let buckets = ((2 * capacity + 1) * 8 / 7).next_power_of_two();
        buckets * (std::mem::size_of::<Entry<K, C>>() + 1) + 64 + capacity * extra
    }
}
