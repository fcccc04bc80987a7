//! Rate limits by key: [`Limit`], and the set of them a layer checks all-or-nothing.

use std::cell::Cell;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::error::InvalidPolicy;
use super::headers::PolicyInfo;
use super::key::{Key, KeyExtractor, RequestHead};
use super::metrics;
use super::states::States;
use crate::clock::LimiterClock;
use crate::gcra::{Grant, SlotView};
use crate::keyed::KeyedRateLimiter;
use crate::limiter::RateLimiter;
use crate::quota::Quota;

/// Requests between two slices of idle-key forgetting (a slice of one shard of every limit).
const SWEEP_EVERY: usize = 64;
/// Keys looked at per slice.
const SWEEP_BUDGET: usize = 32;

/// One rate limit: a key and one or more named quotas that must all admit a request.
///
/// ```
/// use std::time::Duration;
/// use tollway_limiter::Quota;
/// use tollway_limiter::server::{Limit, PeerIp};
///
/// // 100 requests per 15 minutes per IP, all at once if need be...
/// let per_ip = Quota::per(100, Duration::from_secs(900)).burst(100);
/// // ...and at most 5 a second, checked together with it.
/// let burst = Quota::per_second(5).burst(5);
/// let limit = Limit::new("ip-15min", PeerIp::new(), per_ip).and("ip-burst", burst);
/// # let _ = limit;
/// ```
#[derive(Clone)]
pub struct Limit {
    key: Arc<dyn KeyExtractor>,
    pub(crate) quotas: Vec<(String, Quota)>,
    /// In a fleet (Redis), what this limit admits through while Redis is unavailable: a local
    /// quota (fail open), or nothing (`None`, fail closed: 503).
    pub(crate) fail_open: Option<Quota>,
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limit")
            .field("quotas", &self.quotas)
            .finish_non_exhaustive()
    }
}

impl Limit {
    /// Requests with the same `key` share `quota`, named `name` in the `RateLimit` headers.
    pub fn new(name: impl Into<String>, key: impl KeyExtractor, quota: Quota) -> Self {
        Self {
            key: Arc::new(key),
            quotas: vec![(name.into(), quota)],
            fail_open: None,
        }
    }

    /// Another quota for the same key; a request is admitted only if every quota admits it,
    /// and then counts against all of them.
    #[must_use]
    pub fn and(mut self, name: impl Into<String>, quota: Quota) -> Self {
        self.quotas.push((name.into(), quota));
        self
    }

    /// In a fleet (a layer kept in Redis with `ServerLimiterBuilder::redis`): while Redis is
    /// unavailable, check this limit in this process alone, each of its policies at `local`
    /// (pick this instance's share of the fleet's limit), instead of refusing. The default is
    /// to fail closed: a request this limit applies to is refused with `503` while Redis is
    /// down. Ignored by a layer kept in memory.
    #[must_use]
    pub fn fail_open_to_local(mut self, local: Quota) -> Self {
        self.fail_open = Some(local);
        self
    }
}

struct Entry<C: LimiterClock> {
    key: Arc<dyn KeyExtractor>,
    keyed: KeyedRateLimiter<Key, C>,
    first_policy: usize,
    /// How many policies (quotas) the limit has.
    policies: usize,
}

/// Every limit of a layer, checked all-or-nothing.
pub(crate) struct Limits<C: LimiterClock> {
    entries: Vec<Entry<C>>,
    pub(crate) policies: Arc<[PolicyInfo]>,
    pub(crate) would_reject: AtomicU64,
    pub(crate) near_limit: AtomicU64,
}

impl<C: LimiterClock> fmt::Debug for Limits<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

/// A refusal: which policy, and when every policy would admit the request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    pub(crate) policy: usize,
    pub(crate) wait: Duration,
}

/// Each limit's key for one request, extracted once.
pub(crate) enum Keys {
    Inline([Option<Key>; 4]),
    Heap(Vec<Option<Key>>),
}

impl Keys {
    pub(crate) fn as_slice(&self) -> &[Option<Key>] {
        match self {
            Self::Inline(keys) => keys,
            Self::Heap(keys) => keys,
        }
    }
}

/// The longest wait seen, and whose.
#[derive(Debug, Clone, Copy)]
struct Longest {
    wait: u64,
    policy: usize,
}

impl Longest {
    fn see(&mut self, policy: usize, wait: u64) {
        if wait > self.wait {
            *self = Self { wait, policy };
        }
    }
}

impl<C: LimiterClock + Default> Limits<C> {
    pub(crate) fn build(
        limits: Vec<Limit>,
        max_keys: NonZeroUsize,
        clock: &C,
    ) -> Result<Self, InvalidPolicy> {
        let mut entries = Vec::with_capacity(limits.len());
        let mut policies: Vec<PolicyInfo> = Vec::new();
        for limit in limits {
            let first_policy = policies.len();
            let mut quotas = limit.quotas.iter();
            let Some((_, first)) = quotas.next() else {
                continue;
            };
            let mut builder = RateLimiter::builder(*first).clock(clock.clone());
            for (_, quota) in quotas {
                builder = builder.quota(*quota);
            }
            for (name, quota) in &limit.quotas {
                // Names go into structured header fields, paired by name: refuse bad or
                // repeated ones now, not per request.
                if policies.iter().any(|p| p.name == *name) {
                    return Err(InvalidPolicy::new(name, "another policy has the same name"));
                }
                policies.push(PolicyInfo::new(name.clone(), *quota)?);
            }
            entries.push(Entry {
                key: limit.key,
                keyed: builder.build_keyed(max_keys),
                first_policy,
                policies: limit.quotas.len(),
            });
        }
        Ok(Self {
            entries,
            policies: policies.into(),
            would_reject: AtomicU64::new(0),
            near_limit: AtomicU64::new(0),
        })
    }
}

impl<C: LimiterClock> Limits<C> {
    /// Takes one request from every applicable limit, or from none; the refusal, if any. Each
    /// key extractor runs once. With one limit, one step decides; with several, every limit
    /// is asked first without taking anything (a request refused by one takes nothing from
    /// the others), then each takes its share, and if one loses a race the others give
    /// theirs back exactly. With `want_state`, `states` receives each applicable policy's
    /// state.
    pub(crate) fn check(
        &self,
        head: &RequestHead<'_>,
        want_state: bool,
        states: &mut States,
    ) -> Option<Refusal> {
        self.housekeeping();
        if let [entry] = self.entries.as_slice() {
            let key = entry.key.extract(head)?;
            return self.take_one(entry, key, want_state, states);
        }
        let keys = self.extract(head);
        self.check_keys(keys.as_slice(), want_state, states)
    }

    /// [`check`](Self::check) with each limit's key already extracted.
    pub(crate) fn check_keys(
        &self,
        keys: &[Option<Key>],
        want_state: bool,
        states: &mut States,
    ) -> Option<Refusal> {
        let mut applicable = keys.iter().zip(&self.entries).filter(|(k, _)| k.is_some());
        let (Some((key, entry)), rest) = (applicable.next(), applicable.next()) else {
            return None;
        };
        match (key, rest) {
            (Some(key), None) => self.take_one(entry, *key, want_state, states),
            _ => self.take_all(keys, want_state, states),
        }
    }

    /// Each limit's key for `head` (`None` where the limit does not apply).
    pub(crate) fn extract(&self, head: &RequestHead<'_>) -> Keys {
        let mut keys = if self.entries.len() <= 4 {
            Keys::Inline([None; 4])
        } else {
            Keys::Heap(vec![None; self.entries.len()])
        };
        let slots: &mut [Option<Key>] = match &mut keys {
            Keys::Inline(keys) => keys,
            Keys::Heap(keys) => keys,
        };
        for (slot, entry) in slots.iter_mut().zip(&self.entries) {
            *slot = entry.key.extract(head);
        }
        keys
    }

    #[inline]
    fn take_one(
        &self,
        entry: &Entry<C>,
        key: Key,
        want_state: bool,
        states: &mut States,
    ) -> Option<Refusal> {
        let first = entry.first_policy;
        let mut longest = Longest {
            wait: 0,
            policy: first,
        };
        let outcome = if want_state {
            entry
                .keyed
                .try_acquire_with(&key, 1, |quota: usize, view: SlotView| {
                    longest.see(first + quota, view.wait);
                    states.push((first + quota, view));
                })
        } else {
            entry.keyed.try_acquire(&key, 1)
        };
        let wait = outcome.err()?;
        if !want_state && entry.policies > 1 {
            // Which policy refused: ask again, taking nothing (refusals only).
            entry
                .keyed
                .peek_with(&key, 1, |quota, view| longest.see(first + quota, view.wait));
        }
        longest.see(longest.policy, wait);
        Some(refusal(longest))
    }

    fn take_all(
        &self,
        keys: &[Option<Key>],
        want_state: bool,
        states: &mut States,
    ) -> Option<Refusal> {
        let mut longest = Longest { wait: 0, policy: 0 };
        self.peek_all(keys, want_state, &mut longest, states);
        if longest.wait > 0 {
            return Some(refusal(longest));
        }
        states.clear();
        let mut taken: Vec<(usize, Grant)> = Vec::new();
        for (index, entry) in self.entries.iter().enumerate() {
            let Some(key) = keys[index] else {
                continue;
            };
            let first = entry.first_policy;
            let outcome = entry
                .keyed
                .try_acquire_with(&key, 1, |quota: usize, view: SlotView| {
                    if want_state {
                        states.push((first + quota, view));
                    }
                });
            match outcome {
                Ok(grant) => taken.push((index, grant)),
                Err(_) => {
                    // Lost a race since the peek: give back exactly what was taken.
                    for (index, grant) in taken.iter().rev() {
                        if let Some(key) = keys[*index] {
                            self.entries[*index].keyed.undo(&key, grant);
                        }
                    }
                    states.clear();
                    self.peek_all(keys, want_state, &mut longest, states);
                    longest.see(first, 1);
                    return Some(refusal(longest));
                }
            }
        }
        None
    }

    /// Every applicable policy's state and wait, taking nothing.
    fn peek_all(
        &self,
        keys: &[Option<Key>],
        want_state: bool,
        longest: &mut Longest,
        states: &mut States,
    ) {
        for (entry, key) in self.entries.iter().zip(keys) {
            let Some(key) = key else {
                continue;
            };
            let first = entry.first_policy;
            entry.keyed.peek_with(key, 1, |quota, view| {
                longest.see(first + quota, view.wait);
                if want_state {
                    states.push((first + quota, view));
                }
            });
        }
    }

    /// Keys remembered across every limit.
    pub(crate) fn tracked_keys(&self) -> usize {
        self.entries.iter().map(|e| e.keyed.len()).sum()
    }

    /// The bound on remembered keys across every limit.
    pub(crate) fn key_bound(&self) -> usize {
        self.entries.iter().map(|e| e.keyed.key_bound()).sum()
    }

    /// The most heap memory the limits' key maps ever hold, in bytes.
    pub(crate) fn memory_bound(&self) -> usize {
        self.entries.iter().map(|e| e.keyed.memory_bound()).sum()
    }

    /// The heap memory the limits' key maps hold now, in bytes.
    pub(crate) fn memory_used(&self) -> usize {
        self.entries.iter().map(|e| e.keyed.memory_used()).sum()
    }

    /// Forgets idle keys a slice of one shard at a time, every few requests, and reports the
    /// gauge: the request path does it, so no background task is needed, and no request does
    /// more than a bounded slice.
    fn housekeeping(&self) {
        // A counter per thread: a shared one would be a contended cache line on every request.
        thread_local! {
            static CALLS: Cell<usize> = const { Cell::new(0) };
        }
        let calls = CALLS.with(|c| {
            let n = c.get();
            c.set(n.wrapping_add(1));
            n
        });
        if !calls.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        let slice = calls / SWEEP_EVERY;
        for entry in &self.entries {
            entry.keyed.forget_idle_in(slice, SWEEP_BUDGET);
        }
        if metrics::ENABLED && slice.is_multiple_of(64) {
            metrics::tracked_keys(self.tracked_keys());
        }
    }
}

fn refusal(longest: Longest) -> Refusal {
    Refusal {
        policy: longest.policy,
        wait: Duration::from_nanos(longest.wait.max(1)),
    }
}

#[cfg(test)]
mod tests;
