//! One shard of the keyed map: a hash table of indices into a dense vector of entries, with
//! sampled eviction.
//!
//! The table (`hashbrown`'s `HashTable`) finds a key's index; the entries live in one vector
//! with no holes, so a random index is a random key and removing one is a swap with the last.
//! When the shard is full, a new key evicts one of [`SAMPLES`] keys picked at random: an idle
//! one (nothing owed, nobody holding it: forgetting it changes no answer) if the sample has
//! one, else the least indebted one nobody holds. The cost of a new key is therefore bounded
//! whatever the keys' state, where a scan for the best victim grew with the shard.

use std::num::NonZeroU64;

use hashbrown::HashTable;

use crate::clock::LimiterClock;
use crate::gcra::{Params, load};
use crate::limiter::RateLimiter;
use crate::sync::AtomicU64;

/// Keys looked at to pick a victim.
pub(crate) const SAMPLES: usize = 8;

/// One key's state: a bare TAT per quota, until a full limiter takes over (someone waits on
/// the key, or the limiter adapts to responses).
pub(crate) struct Entry<K, C: LimiterClock> {
    hash: u64,
    pub(crate) key: K,
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

    /// The latest TAT: how far ahead of now its most indebted bucket is.
    fn latest(&self) -> u64 {
        match &self.limiter {
            Some(l) => l.shared.gcra.latest_tat(),
            None => self.tats().map(load).max().unwrap_or(0),
        }
    }
}

/// A shard: at most `capacity` keys.
pub(crate) struct Shard<K, C: LimiterClock> {
    table: HashTable<u32>,
    entries: Vec<Entry<K, C>>,
    /// Every quota's parameters, as bare TATs in this shard are written under them. Changed
    /// only under the shard's write lock, so a check (read lock) sees them with the TATs.
    pub(crate) params: Box<[Params]>,
    capacity: usize,
    /// Xorshift state for sampling (write lock only).
    rng: NonZeroU64,
    /// Where the incremental idle sweep resumes.
    sweep: usize,
}

impl<K: Eq, C: LimiterClock> Shard<K, C> {
    pub(crate) fn new(params: Box<[Params]>, capacity: usize, seed: u64) -> Self {
        Self {
            table: HashTable::new(),
            entries: Vec::new(),
            params,
            capacity: capacity.max(1),
            rng: NonZeroU64::new(seed | 1).unwrap_or(NonZeroU64::MIN),
            sweep: 0,
        }
    }

    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &K) -> Option<&Entry<K, C>> {
        let entries = &self.entries;
        let &index = self
            .table
            .find(hash, |&i| entries[i as usize].key == *key)?;
        Some(&entries[index as usize])
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn entries_mut_free(&self) -> impl Iterator<Item = &Entry<K, C>> {
        self.entries.iter()
    }

    pub(crate) fn entries_mut(&mut self) -> &mut [Entry<K, C>] {
        &mut self.entries
    }

    /// `key`'s entry, inserted (making room first if the shard is full) if absent.
    pub(crate) fn get_or_insert(&mut self, hash: u64, key: K, now: u64) -> &mut Entry<K, C> {
        let entries = &self.entries;
        let found = self
            .table
            .find(hash, |&i| entries[i as usize].key == key)
            .copied();
        let index = match found {
            Some(index) => index as usize,
            None => {
                if self.entries.len() >= self.capacity {
                    self.evict(now);
                }
                self.push(hash, key)
            }
        };
        &mut self.entries[index]
    }

    fn push(&mut self, hash: u64, key: K) -> usize {
        let index = self.entries.len();
        if index == self.entries.capacity() {
            // Grow by doubling, but never past the bound: memory stays what the bound says.
            let target = (index * 2).clamp(8, self.capacity);
            self.entries.reserve_exact(target.saturating_sub(index).max(1));
        }
        let quotas = self.params.len();
        self.entries.push(Entry {
            hash,
            key,
            first: AtomicU64::new(0),
            rest: (1..quotas).map(|_| AtomicU64::new(0)).collect(),
            limiter: None,
        });
        let entries = &self.entries;
        self.table.insert_unique(hash, index as u32, |&i| entries[i as usize].hash);
        index
    }

    /// Forgets one key picked from a random sample (see the module docs); returns how many
    /// keys it looked at.
    pub(crate) fn evict(&mut self, now: u64) -> usize {
        let len = self.entries.len();
        if len == 0 {
            return 0;
        }
        let mut best: Option<(bool, u64, usize)> = None;
        let mut looked = 0;
        for _ in 0..SAMPLES.min(len) {
            let index = (self.next_random() % len as u64) as usize;
            looked += 1;
            let entry = &self.entries[index];
            if entry.is_idle(now) {
                best = Some((false, 0, index));
                break;
            }
            let rank = (entry.is_held(), entry.latest(), index);
            if best.is_none_or(|b| (rank.0, rank.1) < (b.0, b.1)) {
                best = Some(rank);
            }
        }
        if let Some((_, _, index)) = best {
            self.remove_at(index);
        }
        looked
    }

    /// Removes the entry at `index`: the last one takes its place.
    fn remove_at(&mut self, index: usize) {
        let hash = self.entries[index].hash;
        if let Ok(slot) = self.table.find_entry(hash, |&i| i as usize == index) {
            slot.remove();
        }
        let last = self.entries.len() - 1;
        if index != last {
            let moved_hash = self.entries[last].hash;
            if let Some(slot) = self.table.find_mut(moved_hash, |&i| i as usize == last) {
                *slot = index as u32;
            }
        }
        self.entries.swap_remove(index);
    }

    /// Forgets the idle keys among the next `budget` (a slice of the shard, resumed where the
    /// last sweep stopped): bounded work for the request path.
    pub(crate) fn sweep(&mut self, now: u64, budget: usize) {
        for _ in 0..budget.min(self.entries.len()) {
            if self.sweep >= self.entries.len() {
                self.sweep = 0;
            }
            if self.entries[self.sweep].is_idle(now) {
                // The last entry moves here: look at this index again.
                self.remove_at(self.sweep);
            } else {
                self.sweep += 1;
            }
        }
    }

    /// Forgets every idle key.
    pub(crate) fn retain_busy(&mut self, now: u64) {
        let mut index = 0;
        while index < self.entries.len() {
            if self.entries[index].is_idle(now) {
                self.remove_at(index);
            } else {
                index += 1;
            }
        }
    }

    /// Bytes this shard holds on the heap now (entries, their extra TATs and the table).
    pub(crate) fn heap_bytes(&self) -> usize {
        let extra = self.params.len().saturating_sub(1) * std::mem::size_of::<AtomicU64>();
        self.entries.capacity() * std::mem::size_of::<Entry<K, C>>()
            + self.entries.len() * extra
            + self.table.allocation_size()
    }

    /// The most bytes a shard of `capacity` keys with `quotas` quotas ever holds on the heap
    /// (full limiters of waiting keys aside).
    pub(crate) fn heap_bound(capacity: usize, quotas: usize) -> usize {
        let extra = quotas.saturating_sub(1) * std::mem::size_of::<AtomicU64>();
        // The table grows only while more than half full (tombstones aside), so it never
        // holds more buckets than twice the capacity needs: 4 bytes and a control byte each.
        let buckets = ((2 * capacity + 1) * 8 / 7).next_power_of_two();
        capacity * (std::mem::size_of::<Entry<K, C>>() + extra) + buckets * 5 + 64
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = NonZeroU64::new(x).unwrap_or(NonZeroU64::MIN);
        x
    }
}
