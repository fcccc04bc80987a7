//! Rate limits by key: [`Limit`], and the set of them a layer checks all-or-nothing.

use std::cell::Cell;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http::HeaderValue;
use tollway_core::HeaderError;
use tollway_core::headers::RateLimitPolicy;

use super::headers::{self, PolicyInfo};
use super::key::{Key, KeyExtractor, RequestHead};
use super::metrics;
use crate::clock::LimiterClock;
use crate::gcra::SlotView;
use crate::keyed::KeyedRateLimiter;
use crate::limiter::RateLimiter;
use crate::quota::Quota;

/// Requests between two slices of idle-key forgetting (one shard of every limit per slice).
const SWEEP_EVERY: usize = 512;

/// One rate limit: a key and one or more named quotas that must all admit a request.
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use tollway_limiter::Quota;
/// use tollway_limiter::server::{Limit, PeerIp};
///
/// // Seed 004, layer 1: 100 requests per 15 minutes per IP, all at once if need be.
/// let hundred = NonZeroU32::new(100).unwrap();
/// let per_ip = Quota::per(Duration::from_secs(900), hundred).unwrap().with_burst(hundred);
/// // Plus a per-second burst limit, checked together with it.
/// let burst = Quota::per_second(NonZeroU32::new(5).unwrap()).with_burst(NonZeroU32::new(5).unwrap());
/// let limit = Limit::new("ip-15min", PeerIp::new(), per_ip).and("ip-burst", burst);
/// # let _ = limit;
/// ```
#[derive(Clone)]
pub struct Limit {
    key: Arc<dyn KeyExtractor>,
    quotas: Vec<(String, Quota)>,
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
        }
    }

    /// Another quota for the same key; a request is admitted only if every quota admits it,
    /// and then counts against all of them.
    #[must_use]
    pub fn and(mut self, name: impl Into<String>, quota: Quota) -> Self {
        self.quotas.push((name.into(), quota));
        self
    }
}

struct Entry<C: LimiterClock> {
    key: Arc<dyn KeyExtractor>,
    keyed: KeyedRateLimiter<Key, C>,
    first_policy: usize,
}

/// Every limit of a layer, checked all-or-nothing.
pub(crate) struct Limits<C: LimiterClock> {
    entries: Vec<Entry<C>>,
    pub(crate) policies: Vec<PolicyInfo>,
    /// `RateLimit-Policy` when every policy applies, formatted once.
    pub(crate) all_policies: HeaderValue,
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

/// The outcome of checking a request, with each applicable policy's state when asked for.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    pub(crate) refused: Option<Refusal>,
    pub(crate) states: Vec<(usize, SlotView)>,
}

impl<C: LimiterClock + Default> Limits<C> {
    pub(crate) fn build(
        limits: Vec<Limit>,
        max_keys: NonZeroUsize,
        clock: &C,
    ) -> Result<Self, HeaderError> {
        let mut entries = Vec::with_capacity(limits.len());
        let mut policies = Vec::new();
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
                // Names go into structured header fields: refuse bad ones now, not per request.
                RateLimitPolicy::new(name.clone(), 0)?;
                policies.push(PolicyInfo::new(name.clone(), *quota));
            }
            entries.push(Entry {
                key: limit.key,
                keyed: builder.build_keyed(max_keys),
                first_policy,
            });
        }
        let all_policies = headers::policy_header(&policies.iter().collect::<Vec<_>>());
        Ok(Self {
            entries,
            policies,
            all_policies,
            would_reject: AtomicU64::new(0),
            near_limit: AtomicU64::new(0),
        })
    }
}

impl<C: LimiterClock> Limits<C> {
    /// Takes one request from every applicable limit, or from none.
    pub(crate) fn check(&self, parts: &RequestHead<'_>, want_state: bool) -> Decision {
        self.housekeeping();
        let mut decision = Decision::default();
        let mut views = Vec::new();
        for (index, entry) in self.entries.iter().enumerate() {
            let Some(key) = entry.key.extract(parts) else {
                continue;
            };
            let scratch = want_state.then_some(&mut views);
            match entry.keyed.check_detailed(&key, 1, scratch) {
                Ok(()) => {
                    if want_state {
                        push_states(&mut decision.states, entry.first_policy, &views);
                    }
                }
                Err(wait) => {
                    self.refund(parts, index);
                    decision.refused = Some(self.refusal(parts, index, wait, &mut decision));
                    return decision;
                }
            }
        }
        decision
    }

    /// Gives back what the limits before `refused_at` took.
    fn refund(&self, parts: &RequestHead<'_>, refused_at: usize) {
        for entry in &self.entries[..refused_at] {
            if let Some(key) = entry.key.extract(parts) {
                entry.keyed.refund_key(&key, 1);
            }
        }
    }

    /// The refusing policy and the longest wait of any policy, with every policy's state.
    fn refusal(
        &self,
        parts: &RequestHead<'_>,
        refused_at: usize,
        wait: u64,
        decision: &mut Decision,
    ) -> Refusal {
        decision.states.clear();
        let mut views = Vec::new();
        let mut longest = (wait, self.entries[refused_at].first_policy);
        for entry in &self.entries {
            let Some(key) = entry.key.extract(parts) else {
                continue;
            };
            entry.keyed.view(&key, &mut views);
            for (offset, view) in views.iter().enumerate() {
                if view.wait > longest.0 {
                    longest = (view.wait, entry.first_policy + offset);
                }
            }
            push_states(&mut decision.states, entry.first_policy, &views);
        }
        Refusal {
            policy: longest.1,
            wait: Duration::from_nanos(longest.0.max(1)),
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

    /// Entries the limits' maps are sized for.
    pub(crate) fn map_capacity(&self) -> usize {
        self.entries.iter().map(|e| e.keyed.map_capacity()).sum()
    }

    /// Forgets idle keys one shard at a time, every few requests, and reports the gauge: the
    /// request path does it, so no background task is needed.
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
            entry.keyed.forget_idle_in(slice);
        }
        if metrics::ENABLED && slice.is_multiple_of(32) {
            metrics::tracked_keys(self.tracked_keys());
        }
    }
}

fn push_states(states: &mut Vec<(usize, SlotView)>, first_policy: usize, views: &[SlotView]) {
    states.extend(
        views
            .iter()
            .enumerate()
            .map(|(offset, view)| (first_policy + offset, *view)),
    );
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::num::NonZeroU32;

    use tollway_core::FakeClock;

    use super::super::key::Global;
    use super::*;

    fn ip(i: u32) -> Key {
        Key::Ip(IpAddr::V4(Ipv4Addr::from_bits(i)))
    }

    fn limits(clock: &FakeClock, max_keys: usize) -> Limits<FakeClock> {
        let quota = Quota::per_second(NonZeroU32::new(1_000).unwrap());
        Limits::build(
            vec![Limit::new("ip", Global, quota)],
            NonZeroUsize::new(max_keys).unwrap(),
            clock,
        )
        .unwrap()
    }

    /// A flood of 1,000,000 distinct client addresses, one request each, 1 µs apart (a
    /// million requests a second), against a limit of 1,000/s per address that remembers at
    /// most 10,000 keys. Each key's bucket is full again 1 ms after its request, and the
    /// request path forgets such keys a shard at a time. The store never holds more than the
    /// bound (10,016: 10,000 rounded up to 32 shards of 313). Its maps never grow past 32
    /// tables of 1,024 buckets (896 slots each): a table grows only when it is more than half
    /// full counting deleted slots, and 313 keys are less than half of 896. That is 28,672
    /// slots of about 65 bytes, under 2 MB, whatever the number of distinct keys.
    #[test]
    fn a_million_distinct_keys_stay_within_the_bound() {
        let clock = FakeClock::new();
        let limits = limits(&clock, 10_000);
        let keyed = &limits.entries[0].keyed;
        let bound = keyed.key_bound();
        assert_eq!(bound, 10_016);
        let mut most = 0;
        for i in 0..1_000_000 {
            limits.housekeeping();
            assert_eq!(keyed.check_detailed(&ip(i), 1, None), Ok(()));
            clock.advance(Duration::from_micros(1));
            if i % 10_000 == 0 {
                most = most.max(limits.tracked_keys());
            }
        }
        assert!(most <= bound, "{most} keys held");
        assert!(limits.tracked_keys() <= bound);
        assert!(
            limits.map_capacity() <= 32 * 896,
            "{}",
            limits.map_capacity()
        );
        // Keys are still limited: the latest one has no permit left.
        assert!(keyed.check_detailed(&ip(999_999), 1, None).is_err());
        // Once every bucket is full again, request-path sweeps forget everything.
        clock.advance(Duration::from_millis(2));
        for _ in 0..SWEEP_EVERY * 32 {
            limits.housekeeping();
        }
        assert_eq!(limits.tracked_keys(), 0);
    }

    /// When no key is idle (time stands still), the least indebted keys are evicted: the
    /// bound still holds.
    #[test]
    fn the_bound_holds_when_nothing_is_idle() {
        let clock = FakeClock::new();
        let limits = limits(&clock, 1_000);
        let keyed = &limits.entries[0].keyed;
        for i in 0..100_000 {
            assert_eq!(keyed.check_detailed(&ip(i), 1, None), Ok(()));
        }
        assert!(limits.tracked_keys() <= keyed.key_bound());
        assert!(
            limits.tracked_keys() >= 900,
            "evicts one key at a time, not whole shards"
        );
    }
}
