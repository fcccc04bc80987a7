//! A small in-memory tier over the disk store: recently used entries, bounded in bytes.
//!
//! A hit from memory costs a hash lookup and a reference-count increment instead of a file
//! read. It only ever holds entries that are also on disk (every removal and eviction from
//! disk by this process removes them here too), so it changes how fast a hit is, never what is
//! served. Another process's writes, evictions and invalidations reach this tier when this
//! process next reads the folder's journal (at its next write); until then it may keep serving
//! its own copy, which was a valid answer for the same key.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::index::Index;
use crate::entry::StoredResponse;
use crate::key::{CacheKey, KeyMap};

/// Bytes an entry is counted as: body, headers, and a fixed allowance for the bookkeeping.
fn footprint(entry: &StoredResponse) -> u64 {
    let headers: usize = entry
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 32)
        .sum();
    (entry.body.len() + headers + 256) as u64
}

#[derive(Debug, Default)]
struct Hot {
    index: Index,
    entries: KeyMap<Arc<StoredResponse>>,
}

/// The memory tier. A cap of zero turns it off.
///
/// Every change (a write, a removal) bumps a counter while holding the lock. A reader notes
/// the counter before it opens a file and adds what it read only if nothing changed since: a
/// read that began before a removal must not bring the removed entry back.
#[derive(Debug)]
pub(crate) struct MemoryTier {
    cap: u64,
    hot: Mutex<Hot>,
    changes: AtomicU64,
}

impl MemoryTier {
    pub(crate) fn new(cap: u64) -> Self {
        Self {
            cap,
            hot: Mutex::default(),
            changes: AtomicU64::new(0),
        }
    }

    /// The change counter, to note before reading a file (see [`insert_read`](Self::insert_read)).
    pub(crate) fn since(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Holds `entry`, read from disk, unless the tier changed since the reader noted
    /// [`since`](Self::since): the file it read may be gone or replaced.
    pub(crate) fn insert_read(&self, key: CacheKey, entry: Arc<StoredResponse>, since: u64) {
        if self.cap == 0 || footprint(&entry) > self.cap / 8 {
            return;
        }
        let mut hot = self.hot.lock();
        if self.changes.load(Ordering::Acquire) != since {
            return;
        }
        hold(&mut hot, self.cap, key, entry);
    }

    /// The entry for `key`, if held; marks it as just used.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Arc<StoredResponse>> {
        if self.cap == 0 {
            return None;
        }
        let mut hot = self.hot.lock();
        let entry = Arc::clone(hot.entries.get(key)?);
        hot.index.touch(*key, footprint(&entry));
        Some(entry)
    }

    /// Holds `entry` for `key`, dropping the least recently used entries past the cap. An
    /// entry larger than an eighth of the cap is not held: one large body must not flush
    /// everything else.
    /// The writer's insert: the entry now on disk under `key`.
    pub(crate) fn insert(&self, key: CacheKey, entry: Arc<StoredResponse>) {
        if self.cap == 0 {
            return;
        }
        let mut hot = self.hot.lock();
        self.changes.fetch_add(1, Ordering::AcqRel);
        if footprint(&entry) > self.cap / 8 {
            hot.index.remove(&key);
            hot.entries.remove(&key);
            return;
        }
        hold(&mut hot, self.cap, key, entry);
    }

    /// Forgets `key`.
    pub(crate) fn remove(&self, key: &CacheKey) {
        if self.cap == 0 {
            return;
        }
        let mut hot = self.hot.lock();
        self.changes.fetch_add(1, Ordering::AcqRel);
        hot.index.remove(key);
        hot.entries.remove(key);
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        if self.cap == 0 {
            return;
        }
        let mut hot = self.hot.lock();
        self.changes.fetch_add(1, Ordering::AcqRel);
        hot.index.clear();
        hot.entries.clear();
    }
}

/// Holds `entry` (which fits) for `key`, dropping the least recently used entries past `cap`.
fn hold(hot: &mut Hot, cap: u64, key: CacheKey, entry: Arc<StoredResponse>) {
    hot.index.touch(key, footprint(&entry));
    hot.entries.insert(key, entry);
    while let Some(victim) = hot.index.pop_victim(cap) {
        hot.entries.remove(&victim);
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;

    fn entry(len: usize) -> Arc<StoredResponse> {
        let now = SystemTime::now();
        Arc::new(StoredResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![0; len]),
            stored_at: now,
            expires_at: now,
            stale_until: now,
            keep_until: now,
        })
    }

    fn k(n: u8) -> CacheKey {
        CacheKey::from_bytes([n; 32])
    }

    #[test]
    fn bounded_lru_and_large_entries_skipped() {
        let tier = MemoryTier::new(8 * 1256);
        for n in 0..9 {
            tier.insert(k(n), entry(1000));
        }
        assert!(tier.get(&k(0)).is_none(), "least recent went first");
        assert!(tier.get(&k(8)).is_some());
        tier.insert(k(100), entry(5000));
        assert!(tier.get(&k(100)).is_none());
        tier.remove(&k(8));
        assert!(tier.get(&k(8)).is_none());
    }

    #[test]
    fn zero_cap_holds_nothing() {
        let tier = MemoryTier::new(0);
        tier.insert(k(1), entry(0));
        assert!(tier.get(&k(1)).is_none());
    }
}
