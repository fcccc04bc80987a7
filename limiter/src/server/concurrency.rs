//! Per-key concurrency: at most `n` requests of one key in progress at once; one more is
//! refused at once (429, or 402 as some paid APIs answer).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use http::StatusCode;
use parking_lot::Mutex;

use super::key::{Key, KeyExtractor, RequestHead};

const SHARDS: usize = 16;

type MaxFn = dyn Fn(&RequestHead<'_>) -> u32 + Send + Sync;

/// A per-key limit on requests in progress.
///
/// ```
/// use http::{HeaderName, StatusCode};
/// use tollway_limiter::server::{ConcurrencyLimit, HeaderKey, KeyExtractor, PeerIp};
///
/// // One search at a time per API key (or per IP without one), 402 beyond it, two for the
/// // "20" tier.
/// let limit = ConcurrencyLimit::new(
///     HeaderKey::new(HeaderName::from_static("x-api-key")).or(PeerIp::new()),
///     1,
/// )
/// .status(StatusCode::PAYMENT_REQUIRED)
/// .max_for(|parts| match parts.headers.get("x-tier").map(|v| v.as_bytes()) {
///     Some(b"20") => 2,
///     _ => 1,
/// });
/// # let _ = limit;
/// ```
#[derive(Clone)]
pub struct ConcurrencyLimit {
    pub(crate) key: Arc<dyn KeyExtractor>,
    pub(crate) max: Arc<MaxFn>,
    pub(crate) status: StatusCode,
}

impl fmt::Debug for ConcurrencyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl ConcurrencyLimit {
    /// At most `max` requests in progress per key (0 counts as 1); refused with 429.
    pub fn new(key: impl KeyExtractor, max: u32) -> Self {
        let max = max.max(1);
        Self {
            key: Arc::new(key),
            max: Arc::new(move |_: &RequestHead<'_>| max),
            status: StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The limit for each request (a tier read from its head) instead of one for all.
    #[must_use]
    pub fn max_for<F>(mut self, max: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> u32 + Send + Sync + 'static,
    {
        self.max = Arc::new(max);
        self
    }

    /// The status of a refusal (default 429; some paid APIs answer 402).
    #[must_use]
    pub const fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

/// Requests in progress per key. A key is remembered only while it has one, so memory is
/// bounded by the requests in progress.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    shards: [Mutex<HashMap<Key, u32>>; SHARDS],
    hasher: RandomState,
}

impl InFlight {
    /// Takes one of `max` places for `key`, or `None` when all are taken.
    pub(crate) fn try_acquire(self: &Arc<Self>, key: Key, max: u32) -> Option<InFlightGuard> {
        let shard = self.shard(&key);
        let mut map = self.shards[shard].lock();
        let count = map.entry(key).or_insert(0);
        if *count >= max {
            if *count == 0 {
                map.remove(&key);
            }
            return None;
        }
        *count += 1;
        drop(map);
        Some(InFlightGuard {
            in_flight: Arc::clone(self),
            key,
            shard,
        })
    }

    /// Keys with a request in progress.
    pub(crate) fn keys(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    fn shard(&self, key: &Key) -> usize {
        (self.hasher.hash_one(key) >> 40) as usize % SHARDS
    }
}

/// One request's place, given back when dropped (the response was produced, or the request
/// was cancelled).
#[derive(Debug)]
pub(crate) struct InFlightGuard {
    in_flight: Arc<InFlight>,
    key: Key,
    shard: usize,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut map = self.in_flight.shards[self.shard].lock();
        if let Some(count) = map.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_forgets_idle_keys() {
        let in_flight = Arc::new(InFlight::default());
        let a = Key::from("a");
        let first = in_flight.try_acquire(a, 2).unwrap();
        let second = in_flight.try_acquire(a, 2).unwrap();
        assert!(in_flight.try_acquire(a, 2).is_none());
        let other = in_flight.try_acquire(Key::from("b"), 2).unwrap();
        assert_eq!(in_flight.keys(), 2);
        drop(first);
        let third = in_flight.try_acquire(a, 2).unwrap();
        drop((second, third, other));
        assert_eq!(in_flight.keys(), 0);
    }
}
