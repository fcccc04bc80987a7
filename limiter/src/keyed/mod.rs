//! [`KeyedRateLimiter`]: one limiter per key (per host, per API key, per user), with a bound on
//! the number of keys and on their memory.
//!
//! A key is a bare atomic TAT per quota, stored in a sharded map and checked with its shard's
//! copy of the quotas: a `check` on 10,000 keys touches the map and nothing else, whatever the
//! number of quotas. A key that needs more (a caller waits on it in
//! [`acquire`](KeyedRateLimiter::acquire), or the limiter adapts to responses) is given a full
//! [`RateLimiter`], which takes over its TATs under the shard's write lock, so waiting,
//! fairness and pauses work per key.
//!
//! The number of keys is bounded: a full shard makes room for a new key by evicting one of a
//! few keys sampled at random (idle ones first, then the least indebted; never one a caller
//! holds, which would split it into two buckets): constant work per new key, whatever the
//! keys' state. See [`shard`] for the details.
//!
//! Lock order: the quota configuration (`config`), then one shard, then a key's limiter's own
//! locks. No path takes them in another order, and none holds a shard lock while waiting for
//! the configuration.

mod decide;
mod shard;

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::DefaultHashBuilder;
use parking_lot::{Mutex, RwLock, RwLockWriteGuard};
use tollway_core::RateLimited;

use crate::builder::RateLimiterBuilder;
use crate::clock::{LimiterClock, QuantaClock};
use crate::error::{ExceedsBurst, NoSuchQuota};
use crate::gcra::{Params, load, rescale, update};
use crate::limiter::RateLimiter;
use crate::queue::Acquire;
use crate::quota::Quota;

use shard::{Entry, Shard};

/// Shards of the key map: at most this many, and fewer for a small key bound, so that every
/// shard holds enough keys that two busy keys rarely evict each other.
const MAX_SHARDS: usize = 32;
const MIN_KEYS_PER_SHARD: usize = 64;

/// A power of two from 1 to [`MAX_SHARDS`].
fn shard_count(max_keys: usize) -> usize {
    (max_keys / MIN_KEYS_PER_SHARD)
        .clamp(1, MAX_SHARDS)
        .next_power_of_two()
}

/// Rate limiters by key; clones share them. Build with
/// [`RateLimiterBuilder::build_keyed`].
///
/// ```
/// use std::num::NonZeroUsize;
/// use tollway_limiter::{Quota, RateLimiter};
///
/// let quota = Quota::per_second(2).burst(1);
/// let hosts = RateLimiter::builder(quota).build_keyed::<String>(NonZeroUsize::new(1_000).unwrap());
/// assert!(hosts.check(&"api.example.com".to_owned()).is_ok());
/// assert!(hosts.check(&"api.example.com".to_owned()).is_err());
/// assert!(hosts.check(&"other.example.com".to_owned()).is_ok(), "another key, another bucket");
/// assert_eq!(hosts.len(), 2);
/// ```
pub struct KeyedRateLimiter<K, C: LimiterClock = QuantaClock> {
    shared: Arc<KeyedShared<K, C>>,
}

struct KeyedShared<K, C: LimiterClock> {
    shards: Box<[RwLock<Shard<K, C>>]>,
    hasher: DefaultHashBuilder,
    /// What full limiters are built from (clock, bounds, adaptation): never changes.
    template: RateLimiterBuilder<C>,
    /// The quotas as last set; serialises quota changes.
    config: Mutex<Vec<Quota>>,
    adaptive: bool,
    clock: C,
    /// Every key counts from this origin, so one clock reading serves them all.
    origin: Instant,
    shard_capacity: usize,
    max_keys: usize,
}

impl<K, C: LimiterClock> Clone for KeyedRateLimiter<K, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, C: LimiterClock> fmt::Debug for KeyedRateLimiter<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("max_keys", &self.shared.max_keys)
            .finish_non_exhaustive()
    }
}

impl<C: LimiterClock + Default> RateLimiterBuilder<C> {
    /// A limiter per key, each with this builder's quotas, bounds, adaptation and clock, and at
    /// most `max_keys` keys remembered at once (rounded up to a multiple of the shard count: up
    /// to 32 shards, each of at least 64 keys where `max_keys` allows).
    pub fn build_keyed<K: Hash + Eq + Clone>(
        self,
        max_keys: NonZeroUsize,
    ) -> KeyedRateLimiter<K, C> {
        let clock = self.clock_or(C::default);
        let origin = clock.origin();
        let shards = shard_count(max_keys.get());
        let shard_capacity = max_keys.get().div_ceil(shards);
        let params: Box<[Params]> = self.quotas.iter().map(|&q| Params::of(q)).collect();
        let hasher = DefaultHashBuilder::default();
        KeyedRateLimiter {
            shared: Arc::new(KeyedShared {
                shards: (0..shards)
                    .map(|i| {
                        let seed = hasher.hash_one(i);
                        RwLock::new(Shard::new(params.clone(), shard_capacity, seed))
                    })
                    .collect(),
                hasher,
                config: Mutex::new(self.quotas.clone()),
                adaptive: self.has_adaptive(),
                template: self,
                clock,
                origin,
                shard_capacity,
                max_keys: max_keys.get(),
            }),
        }
    }
}

impl<K: Hash + Eq + Clone, C: LimiterClock> KeyedRateLimiter<K, C> {
    /// Takes one permit from `key`'s bucket now, or says how long until one is due.
    #[inline]
    pub fn check(&self, key: &K) -> Result<(), RateLimited> {
        match self.try_acquire(key, 1) {
            Ok(_) => {
                crate::metrics::admitted();
                Ok(())
            }
            Err(wait) => Err(RateLimited::new(Duration::from_nanos(wait))),
        }
    }

    /// Takes `cost` permits from `key` under every quota now, or none.
    pub fn check_n(
        &self,
        key: &K,
        cost: NonZeroU32,
    ) -> Result<Result<(), RateLimited>, ExceedsBurst> {
        let burst = self.max_cost();
        if cost.get() > burst {
            return Err(ExceedsBurst::new(cost.get(), burst));
        }
        Ok(self
            .try_acquire(key, cost.get())
            .map(drop)
            .map_err(|wait| RateLimited::new(Duration::from_nanos(wait))))
    }

    /// Waits for a permit from `key`'s limiter (first come first served per key).
    pub fn acquire(&self, key: &K) -> Acquire<C> {
        self.limiter(key).acquire()
    }

    /// `key`'s full limiter, created (taking over the key's state) if it has none yet.
    pub fn limiter(&self, key: &K) -> RateLimiter<C> {
        let hash = self.hash(key);
        if let Some(limiter) = self
            .shard(hash)
            .read()
            .get(hash, key)
            .and_then(|e| e.limiter.clone())
        {
            return limiter;
        }
        let now = self.now();
        let mut shard = self.shard(hash).write();
        let quotas: Vec<Quota> = shard.params.iter().map(Params::quota).collect();
        let entry = shard.get_or_insert(hash, key.clone(), now, |k| self.hash(k));
        if let Some(limiter) = &entry.limiter {
            return limiter.clone();
        }
        // Under the shard's write lock: no check is using the bare TATs now, and the quotas
        // are the ones they were written under.
        let shared = &*self.shared;
        let limiter =
            shared
                .template
                .build_with_origin(shared.clock.clone(), shared.origin, &quotas);
        limiter.shared.gcra.set_tats(entry.tats().map(load));
        entry.limiter = Some(limiter.clone());
        limiter
    }

    /// How many cost-1 requests `key` would be admitted right now, without taking any (a key
    /// never seen has a full bucket). For `RateLimit` / `X-RateLimit-Remaining` headers.
    pub fn available(&self, key: &K) -> u64 {
        let hash = self.hash(key);
        let now = self.now();
        let shard = self.shard(hash).read();
        match shard.get(hash, key) {
            Some(Entry {
                limiter: Some(limiter),
                ..
            }) => limiter.shared.gcra.available(now),
            found => shard
                .params
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let tat = found.and_then(|e| e.tat(i)).map_or(0, load);
                    p.available(tat, now)
                })
                .min()
                .unwrap_or(0),
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.shared.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every key whose bucket is full again and that nobody holds: the state that can
    /// be dropped without changing any answer. A full shard also makes room on its own.
    pub fn forget_idle(&self) {
        let now = self.now();
        for shard in &*self.shared.shards {
            shard.write().retain_busy(now);
        }
    }

    /// Replaces quota `index` for every key, present and future, keeping each key's debt.
    pub fn set_quota(&self, index: usize, quota: Quota) -> Result<(), NoSuchQuota> {
        let shared = &*self.shared;
        let mut config = shared.config.lock();
        let len = config.len();
        let slot = config.get_mut(index).ok_or(NoSuchQuota::new(index, len))?;
        *slot = quota;
        let new = Params::of(quota);
        for shard in &*shared.shards {
            let mut shard = shard.write();
            let now = self.now();
            let old = std::mem::replace(&mut shard.params[index], new);
            for entry in shard.entries_mut() {
                match &entry.limiter {
                    Some(limiter) => limiter.set_quota(index, quota)?,
                    None => {
                        if let Some(tat) = entry.tat(index) {
                            update(tat, |t| rescale(t, old, new, now));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The most keys ever remembered: `max_keys` rounded up to a multiple of the shard count
    /// (keys a caller holds, waiting on them or with a response on its way back, are never
    /// forgotten and may come on top while held).
    pub fn key_bound(&self) -> usize {
        self.shared.shard_capacity * self.shared.shards.len()
    }

    /// The most heap memory the key map ever holds, in bytes, however many distinct keys
    /// arrive and however long they are (keys are stored as they are: use fixed-size keys,
    /// such as a digest, for keys an attacker chooses). Full limiters of keys someone waits on
    /// (or of an adaptive limiter's keys) come on top, a few hundred bytes each, and so do the
    /// entries of held keys beyond the key bound (see [`key_bound`](Self::key_bound)).
    pub fn memory_bound(&self) -> usize {
        let quotas = self.shared.config.lock().len();
        self.shared.shards.len() * Shard::<K, C>::heap_bound(self.shared.shard_capacity, quotas)
    }

    /// The heap memory the key map holds now, in bytes (see [`memory_bound`](Self::memory_bound)).
    pub fn memory_used(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|s| s.read().heap_bytes())
            .sum()
    }

    pub(crate) fn is_adaptive(&self) -> bool {
        self.shared.adaptive
    }

    /// The most one request may cost: the smallest burst.
    fn max_cost(&self) -> u32 {
        let shard = self.shared.shards[0].read();
        shard.params.iter().map(Params::burst).min().unwrap_or(1)
    }

    fn hash(&self, key: &K) -> u64 {
        self.shared.hasher.hash_one(key)
    }

    fn now(&self) -> u64 {
        self.shared.clock.nanos_since(self.shared.origin)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard<K, C>> {
        // Middle bits: the table uses the low bits for its index and the top ones for its tags.
        &self.shared.shards[(hash >> 32) as usize & (self.shared.shards.len() - 1)]
    }

    /// Makes sure `key` is in its shard (with a full limiter if the limiter adapts); returns
    /// the shard, write-locked.
    #[cold]
    fn insert(&self, hash: u64, key: &K, now: u64) -> RwLockWriteGuard<'_, Shard<K, C>> {
        let mut shard = self.shard(hash).write();
        let adaptive = self.shared.adaptive;
        let quotas: Option<Vec<Quota>> =
            adaptive.then(|| shard.params.iter().map(Params::quota).collect());
        let entry = shard.get_or_insert(hash, key.clone(), now, |k| self.hash(k));
        if let (None, Some(quotas)) = (&entry.limiter, quotas) {
            let shared = &*self.shared;
            entry.limiter = Some(shared.template.build_with_origin(
                shared.clock.clone(),
                shared.origin,
                &quotas,
            ));
        }
        shard
    }
}

#[cfg(all(test, not(tollway_loom)))]
mod tests;
