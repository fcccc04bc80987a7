//! [`KeyedRateLimiter`]: one limiter per key (per host, per API key, per user), with a bound on
//! the number of keys.
//!
//! A key starts as a bare atomic TAT stored inline in a sharded map, checked with the shared
//! quota's parameters: a `check` on 10,000 keys touches the map and nothing else. A key that
//! needs more (a caller waits on it in [`acquire`](KeyedRateLimiter::acquire), or the limiter
//! has several quotas or adapts to responses) is given a full [`RateLimiter`] built from the
//! builder's template, which takes over its TAT under the shard's write lock, so waiting,
//! fairness and pauses work per key.
//!
//! The number of keys is bounded: when a shard is full, keys whose buckets are full again and
//! that nobody holds are forgotten first (forgetting them changes no answer), then the least
//! indebted one.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{RwLock, RwLockWriteGuard};
use tollway_core::RateLimited;

use crate::clock::{LimiterClock, QuantaClock};
use crate::error::{ExceedsBurst, NoSuchQuota};
use crate::gcra::{Gcra, SlotView, rescale};
use crate::limiter::{RateLimiter, RateLimiterBuilder};
use crate::queue::Acquire;
use crate::quota::Quota;

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

/// A map from hashed key to its entries; the hash is computed once per lookup.
type Shard<K, C> = HashMap<u64, Entry<K, C>, PassThrough>;

/// One key's state: a bare TAT, until a full limiter takes over.
struct KeyState<C: LimiterClock> {
    tat: AtomicU64,
    limiter: OnceLock<RateLimiter<C>>,
}

impl<C: LimiterClock> KeyState<C> {
    fn new() -> Self {
        Self {
            tat: AtomicU64::new(0),
            limiter: OnceLock::new(),
        }
    }

    /// Nothing owed and nobody holding it: forgetting it changes nothing.
    fn is_idle(&self, now: u64) -> bool {
        match self.limiter.get() {
            Some(l) => Arc::strong_count(&l.shared) == 1 && l.shared.gcra.is_full(now),
            None => self.tat.load(Relaxed) <= now,
        }
    }

    /// (held by someone, how far ahead its TAT is): the order in which keys are evicted.
    fn eviction_rank(&self) -> (bool, u64) {
        match self.limiter.get() {
            Some(l) => (Arc::strong_count(&l.shared) > 1, l.shared.gcra.latest_tat()),
            None => (false, self.tat.load(Relaxed)),
        }
    }
}

enum Entry<K, C: LimiterClock> {
    One(K, KeyState<C>),
    Many(Vec<(K, KeyState<C>)>),
}

impl<K: Eq, C: LimiterClock> Entry<K, C> {
    fn get(&self, key: &K) -> Option<&KeyState<C>> {
        match self {
            Self::One(k, state) => (k == key).then_some(state),
            Self::Many(all) => all.iter().find(|(k, _)| k == key).map(|(_, s)| s),
        }
    }

    fn states(&self) -> Box<dyn Iterator<Item = &KeyState<C>> + '_> {
        match self {
            Self::One(_, state) => Box::new(std::iter::once(state)),
            Self::Many(all) => Box::new(all.iter().map(|(_, s)| s)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::One(..) => 1,
            Self::Many(all) => all.len(),
        }
    }

    /// Drops idle states; whether any is left.
    fn retain_busy(&mut self, now: u64) -> bool {
        match self {
            Self::One(_, state) => !state.is_idle(now),
            Self::Many(all) => {
                all.retain(|(_, s)| !s.is_idle(now));
                !all.is_empty()
            }
        }
    }
}

/// Rate limiters by key; clones share them. Build with
/// [`RateLimiterBuilder::build_keyed`].
///
/// ```
/// use std::num::{NonZeroU32, NonZeroUsize};
/// use tollway_limiter::{Quota, RateLimiter};
///
/// let quota = Quota::per_second(NonZeroU32::new(2).unwrap());
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
    hasher: RandomState,
    template: RwLock<RateLimiterBuilder<C>>,
    /// The quota's parameters for keys that are a bare TAT; `None` when every key needs a full
    /// limiter (several quotas, or adaptation).
    plain: Option<Gcra>,
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
    /// most `max_keys` keys remembered at once (rounded up to a multiple of the shard count: up to
    /// 32 shards, each of at least 64 keys where `max_keys` allows).
    pub fn build_keyed<K: Hash + Eq + Clone>(
        self,
        max_keys: NonZeroUsize,
    ) -> KeyedRateLimiter<K, C> {
        let clock = self.clock_or(C::default);
        let origin = clock.origin();
        let plain = self.is_plain().then(|| Gcra::new(&[self.first_quota()]));
        let adaptive = self.has_adaptive();
        let shards = shard_count(max_keys.get());
        KeyedRateLimiter {
            shared: Arc::new(KeyedShared {
                shards: (0..shards)
                    .map(|_| RwLock::new(HashMap::with_hasher(PassThrough)))
                    .collect(),
                hasher: RandomState::new(),
                template: RwLock::new(self),
                plain,
                adaptive,
                clock,
                origin,
                shard_capacity: max_keys.get().div_ceil(shards),
                max_keys: max_keys.get(),
            }),
        }
    }
}

impl<K: Hash + Eq + Clone, C: LimiterClock> KeyedRateLimiter<K, C> {
    /// Takes one permit from `key`'s bucket now, or says how long until one is due.
    #[inline]
    pub fn check(&self, key: &K) -> Result<(), RateLimited> {
        let shared = &*self.shared;
        let hash = shared.hasher.hash_one(key);
        let now = self.now();
        let shard = self.shard(hash).read();
        let outcome = match shard.get(&hash).and_then(|e| e.get(key)) {
            Some(state) => self.try_acquire(state, now),
            None => {
                drop(shard);
                let shard = self.insert(hash, key);
                let state = shard.get(&hash).and_then(|e| e.get(key));
                state.map_or(Ok(()), |s| self.try_acquire(s, now))
            }
        };
        match outcome {
            Ok(()) => {
                crate::metrics::admitted();
                Ok(())
            }
            Err(wait) => Err(RateLimited::new(Duration::from_nanos(wait))),
        }
    }

    /// Takes `cost` permits from `key`'s limiter now, or none.
    pub fn check_n(
        &self,
        key: &K,
        cost: NonZeroU32,
    ) -> Result<Result<(), RateLimited>, ExceedsBurst> {
        self.limiter(key).check_n(cost)
    }

    /// Waits for a permit from `key`'s limiter (first come first served per key).
    pub fn acquire(&self, key: &K) -> Acquire<C> {
        self.limiter(key).acquire()
    }

    /// `key`'s full limiter, created (taking over the key's state) if it has none yet.
    pub fn limiter(&self, key: &K) -> RateLimiter<C> {
        let hash = self.shared.hasher.hash_one(key);
        if let Some(limiter) = self
            .shard(hash)
            .read()
            .get(&hash)
            .and_then(|e| e.get(key))
            .and_then(|s| s.limiter.get())
        {
            return limiter.clone();
        }
        // Built before the shard is locked: `set_quota` locks the template, then shards.
        let fresh = self.build_one();
        let shard = self.insert(hash, key);
        match shard.get(&hash).and_then(|e| e.get(key)) {
            Some(state) => state
                .limiter
                .get_or_init(|| {
                    // Under the shard's write lock: no check is using the bare TAT now.
                    fresh.shared.gcra.first().set_tat(state.tat.load(Relaxed));
                    fresh
                })
                .clone(),
            None => fresh,
        }
    }

    fn build_one(&self) -> RateLimiter<C> {
        self.shared
            .template
            .read()
            .build_with_origin(self.shared.clock.clone(), self.shared.origin)
    }

    /// How many cost-1 requests `key` would be admitted right now, without taking any (a key
    /// never seen has a full bucket). For `RateLimit` / `X-RateLimit-Remaining` headers.
    pub fn available(&self, key: &K) -> u64 {
        let hash = self.shared.hasher.hash_one(key);
        let now = self.now();
        let shard = self.shard(hash).read();
        let state = shard.get(&hash).and_then(|e| e.get(key));
        match (
            state.and_then(|s| s.limiter.get()),
            state,
            &self.shared.plain,
        ) {
            (Some(limiter), _, _) => limiter.shared.gcra.available(now),
            (None, Some(state), Some(plain)) => plain.available_on(&state.tat, now),
            (None, None, Some(plain)) => plain.available_on(&AtomicU64::new(0), now),
            (None, _, None) => self.build_one().available(),
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|s| s.read().values().map(Entry::len).sum::<usize>())
            .sum()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every key whose bucket is full again and that nobody holds: the state that can
    /// be dropped without changing any answer. Runs on its own when a shard is full.
    pub fn forget_idle(&self) {
        let now = self.now();
        for shard in &*self.shared.shards {
            shard.write().retain(|_, entry| entry.retain_busy(now));
        }
    }

    /// Replaces quota `index` for every key, present and future, keeping each key's debt.
    pub fn set_quota(&self, index: usize, quota: Quota) -> Result<(), NoSuchQuota> {
        let shared = &*self.shared;
        let mut template = shared.template.write();
        template.replace_quota(index, quota)?;
        let now = self.now();
        let old_interval = shared.plain.as_ref().map(|p| p.first().interval_nanos());
        if let Some(plain) = &shared.plain {
            plain.set_quota(0, quota, now);
        }
        for shard in &*shared.shards {
            for entry in shard.read().values() {
                for state in entry.states() {
                    match (state.limiter.get(), old_interval) {
                        (Some(limiter), _) => limiter.set_quota(index, quota)?,
                        (None, Some(old)) => {
                            rescale(&state.tat, old, quota.interval_nanos(), now);
                        }
                        (None, None) => {}
                    }
                }
            }
        }
        drop(template);
        Ok(())
    }

    pub(crate) fn is_adaptive(&self) -> bool {
        self.shared.adaptive
    }
}

/// What the server side needs: a check that reports every quota's state, a view that takes
/// nothing, a refund, and incremental forgetting.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
impl<K: Hash + Eq + Clone, C: LimiterClock> KeyedRateLimiter<K, C> {
    /// Takes `cost` from `key` under every quota, or nothing; on refusal, the wait in
    /// nanoseconds. With `views`, fills it with each quota's state after the decision.
    #[inline]
    pub(crate) fn check_detailed(
        &self,
        key: &K,
        cost: u32,
        views: Option<&mut Vec<SlotView>>,
    ) -> Result<(), u64> {
        let shared = &*self.shared;
        let hash = shared.hasher.hash_one(key);
        let now = self.now();
        let run = |state: &KeyState<C>, views: Option<&mut Vec<SlotView>>| {
            let outcome = self.try_acquire_n(state, now, cost);
            if let Some(views) = views {
                self.view_state(state, now, views);
            }
            outcome
        };
        let shard = self.shard(hash).read();
        if let Some(state) = shard.get(&hash).and_then(|e| e.get(key)) {
            return run(state, views);
        }
        drop(shard);
        let shard = self.insert(hash, key);
        match shard.get(&hash).and_then(|e| e.get(key)) {
            Some(state) => run(state, views),
            None => Ok(()),
        }
    }

    /// Fills `views` with `key`'s state, taking nothing (a key never seen is full).
    pub(crate) fn view(&self, key: &K, views: &mut Vec<SlotView>) {
        let hash = self.shared.hasher.hash_one(key);
        let now = self.now();
        let shard = self.shard(hash).read();
        match shard.get(&hash).and_then(|e| e.get(key)) {
            Some(state) => self.view_state(state, now, views),
            None => {
                drop(shard);
                views.clear();
                match &self.shared.plain {
                    Some(plain) => views.push(plain.first().view_on(&AtomicU64::new(0), now)),
                    None => views.extend(self.build_one().shared.gcra.views(now)),
                }
            }
        }
    }

    /// Gives `cost` back to `key` (a request admitted here but refused by another limit).
    pub(crate) fn refund_key(&self, key: &K, cost: u32) {
        let hash = self.shared.hasher.hash_one(key);
        let shard = self.shard(hash).read();
        let Some(state) = shard.get(&hash).and_then(|e| e.get(key)) else {
            return;
        };
        match (state.limiter.get(), &self.shared.plain) {
            (Some(limiter), _) => limiter.shared.gcra.refund(cost),
            (None, Some(plain)) => plain.first().take_back_on(&state.tat, u64::from(cost)),
            (None, None) => {}
        }
    }

    /// Forgets the idle keys of one shard (`index` modulo the shard count), without waiting
    /// for its lock: a slice of [`forget_idle`](Self::forget_idle) cheap enough for the
    /// request path.
    pub(crate) fn forget_idle_in(&self, index: usize) {
        if let Some(mut shard) = self.shared.shards[index % self.shared.shards.len()].try_write() {
            let now = self.now();
            shard.retain(|_, entry| entry.retain_busy(now));
        }
    }

    /// The number of entries the maps can hold without growing (what their memory is sized
    /// for).
    pub(crate) fn map_capacity(&self) -> usize {
        self.shared.shards.iter().map(|s| s.read().capacity()).sum()
    }

    /// The bound on remembered keys: `max_keys` rounded up to a multiple of the shard count.
    pub(crate) fn key_bound(&self) -> usize {
        self.shared.shard_capacity * self.shared.shards.len()
    }

    fn view_state(&self, state: &KeyState<C>, now: u64, views: &mut Vec<SlotView>) {
        views.clear();
        match (state.limiter.get(), &self.shared.plain) {
            (Some(limiter), _) => views.extend(limiter.shared.gcra.views(now)),
            (None, Some(plain)) => views.push(plain.first().view_on(&state.tat, now)),
            (None, None) => {}
        }
    }

    #[inline]
    fn try_acquire_n(&self, state: &KeyState<C>, now: u64, cost: u32) -> Result<(), u64> {
        match (state.limiter.get(), &self.shared.plain) {
            (None, Some(plain)) => plain
                .first()
                .try_commit_on(&state.tat, now, u64::from(cost))
                .map(drop),
            (Some(limiter), _) => limiter.shared.try_acquire_at(now, cost),
            (None, None) => Err(u64::MAX),
        }
    }

    fn now(&self) -> u64 {
        self.shared.clock.nanos_since(self.shared.origin)
    }

    #[inline]
    fn try_acquire(&self, state: &KeyState<C>, now: u64) -> Result<(), u64> {
        match (state.limiter.get(), &self.shared.plain) {
            (None, Some(plain)) => plain.first().try_commit_on(&state.tat, now, 1).map(drop),
            _ => match state.limiter.get() {
                Some(limiter) => limiter.shared.try_acquire_at(now, 1),
                // Not plain and no limiter yet: give it one.
                None => Err(u64::MAX),
            },
        }
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard<K, C>> {
        // Middle bits: the map uses the low bits for its index and the top ones for its tags.
        &self.shared.shards[(hash >> 32) as usize & (self.shared.shards.len() - 1)]
    }

    /// Makes sure `key` is in its shard (a full limiter too, unless the limiter is plain);
    /// returns the shard, write-locked.
    #[cold]
    fn insert(&self, hash: u64, key: &K) -> RwLockWriteGuard<'_, Shard<K, C>> {
        let fresh = self.shared.plain.is_none().then(|| self.build_one());
        let mut shard = self.shard(hash).write();
        if shard.get(&hash).and_then(|e| e.get(key)).is_none() {
            // Distinct hashes, not keys: O(1) on every new key (counting the keys walked the
            // whole shard); 64-bit hash collisions are too rare to matter to the bound.
            if shard.len() >= self.shared.shard_capacity {
                evict(&mut shard, self.now());
            }
            let state = KeyState::new();
            if let Some(limiter) = fresh {
                let _ = state.limiter.set(limiter);
            }
            match shard.remove(&hash) {
                None => {
                    shard.insert(hash, Entry::One(key.clone(), state));
                }
                Some(Entry::One(k, s)) => {
                    shard.insert(hash, Entry::Many(vec![(k, s), (key.clone(), state)]));
                }
                Some(Entry::Many(mut all)) => {
                    all.push((key.clone(), state));
                    shard.insert(hash, Entry::Many(all));
                }
            }
        }
        shard
    }
}

/// Makes room for one key: forgets idle keys; if none, the least indebted unheld one (or,
/// if every key is held, the least indebted one: its holders keep their limiter).
fn evict<K: Eq, C: LimiterClock>(shard: &mut Shard<K, C>, now: u64) {
    let before: usize = shard.values().map(Entry::len).sum();
    shard.retain(|_, entry| entry.retain_busy(now));
    if shard.values().map(Entry::len).sum::<usize>() < before {
        return;
    }
    let victim = shard
        .iter()
        .flat_map(|(&hash, entry)| {
            entry
                .states()
                .enumerate()
                .map(move |(i, s)| (hash, i, s.eviction_rank()))
                .collect::<Vec<_>>()
        })
        .min_by_key(|&(_, _, rank)| rank)
        .map(|(hash, i, _)| (hash, i));
    if let Some((hash, index)) = victim {
        match shard.get_mut(&hash) {
            Some(Entry::Many(all)) if all.len() > 1 => {
                all.remove(index);
            }
            _ => {
                shard.remove(&hash);
            }
        }
    }
}

/// A hasher for keys that are already hashes.
#[derive(Debug, Clone, Copy, Default)]
struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;

    fn build_hasher(&self) -> Self::Hasher {
        PassThroughHasher(0)
    }
}

#[derive(Debug)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
