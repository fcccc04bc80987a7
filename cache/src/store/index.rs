//! An index of entries: sizes for a byte cap, last use for LRU eviction.
//!
//! The disk store's index mirrors the folder's journal (every process's entries); the memory
//! tier keeps one of its own.

use std::collections::BTreeMap;

use crate::key::{CacheKey, KeyMap};

#[derive(Debug, Clone, Copy)]
struct Slot {
    size: u64,
    last_used: u64,
}

/// Entries by key, and by last use (a logical tick, so touching is O(log n) and ties cannot
/// happen).
#[derive(Debug, Default)]
pub(crate) struct Index {
    slots: KeyMap<Slot>,
    by_use: BTreeMap<u64, CacheKey>,
    tick: u64,
    total: u64,
}

impl Index {
    /// Total bytes of the indexed entries.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// How many entries are indexed.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The size recorded for `key`.
    pub(crate) fn size_of(&self, key: &CacheKey) -> Option<u64> {
        self.slots.get(key).map(|slot| slot.size)
    }

    /// Records that `key` (of `size` bytes) was just used; adds it if it is new.
    pub(crate) fn touch(&mut self, key: CacheKey, size: u64) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(old) = self.slots.insert(
            key,
            Slot {
                size,
                last_used: tick,
            },
        ) {
            self.by_use.remove(&old.last_used);
            self.total -= old.size;
        }
        self.by_use.insert(tick, key);
        self.total += size;
    }

    /// Marks `key` as just used, if it is indexed.
    pub(crate) fn touch_existing(&mut self, key: &CacheKey) {
        if let Some(slot) = self.slots.get(key) {
            let size = slot.size;
            self.touch(*key, size);
        }
    }

    /// Forgets `key`.
    pub(crate) fn remove(&mut self, key: &CacheKey) {
        if let Some(old) = self.slots.remove(key) {
            self.by_use.remove(&old.last_used);
            self.total -= old.size;
        }
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// The least recently used entry, removed from the index, while the total is above `cap`.
    /// Called in a loop after each insert: eviction is incremental, a few entries at a time.
    pub(crate) fn pop_victim(&mut self, cap: u64) -> Option<CacheKey> {
        if self.total <= cap {
            return None;
        }
        let (_, key) = self.by_use.pop_first()?;
        if let Some(slot) = self.slots.remove(&key) {
            self.total -= slot.size;
        }
        Some(key)
    }

    /// The least recently used entry other than `keep` (left in the index). Looks at two
    /// entries at most.
    pub(crate) fn lru_except(&self, keep: &CacheKey) -> Option<CacheKey> {
        self.by_use
            .values()
            .take(2)
            .find(|key| *key != keep)
            .copied()
    }

    /// Every entry with its size, least recently used first.
    pub(crate) fn by_use(&self) -> impl Iterator<Item = (CacheKey, u64)> + '_ {
        self.by_use
            .values()
            .map(|key| (*key, self.slots.get(key).map_or(0, |slot| slot.size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u8) -> CacheKey {
        CacheKey::from_bytes([n; 32])
    }

    #[test]
    fn evicts_least_recently_used_until_under_cap() {
        let mut index = Index::default();
        index.touch(k(1), 40);
        index.touch(k(2), 40);
        index.touch(k(3), 40);
        index.touch(k(1), 40); // 1 is now the most recent
        assert_eq!(index.total(), 120);
        assert_eq!(index.pop_victim(100), Some(k(2)));
        assert_eq!(index.pop_victim(100), None);
        assert_eq!(index.pop_victim(50), Some(k(3)));
        assert_eq!(index.pop_victim(50), None);
        assert_eq!(index.len(), 1);
        assert_eq!(index.total(), 40);
    }

    #[test]
    fn resize_and_remove_keep_totals() {
        let mut index = Index::default();
        index.touch(k(1), 10);
        index.touch(k(1), 30);
        assert_eq!(index.total(), 30);
        assert_eq!(index.size_of(&k(1)), Some(30));
        index.remove(&k(1));
        index.remove(&k(1));
        assert_eq!(index.total(), 0);
        assert_eq!(index.pop_victim(0), None);
    }

    #[test]
    fn lru_except_skips_the_kept_key() {
        let mut index = Index::default();
        index.touch(k(1), 10);
        index.touch(k(2), 20);
        index.touch(k(3), 30);
        assert_eq!(index.lru_except(&k(1)), Some(k(2)));
        assert_eq!(index.lru_except(&k(9)), Some(k(1)));
        index.remove(&k(1));
        index.remove(&k(2));
        assert_eq!(index.lru_except(&k(3)), None);
        assert_eq!(index.total(), 30);
        let order: Vec<_> = index.by_use().collect();
        assert_eq!(order, [(k(3), 30)]);
        index.clear();
        assert_eq!((index.len(), index.total()), (0, 0));
    }
}
