//! Key quotas kept in Redis (feature `redis`): every instance of an API shares each key's
//! quota, and quotas survive a restart.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use tollway_core::TextDigest;

use super::FleetQuota;
use super::builder::KeyQuotaBuilder;
use super::key::QuotaKey;
use crate::ledger::Ledger;
use crate::store::DynStore;

impl KeyQuotaBuilder {
    /// Keeps every key's quota in Redis, under `{prefix:KEY}` keys, shared by every instance
    /// (in any process, on any machine) built with the same prefix: N instances of an API
    /// charge one quota per key, and a restart forgets nothing. The factory's ledger for a key
    /// gives the limits (its windows and reserve); the count is Redis's. Keys are named by a
    /// 128-bit digest of the API key (the same in every process; never the key itself) or by
    /// the client address. Each key's state expires with its windows, so Redis holds only
    /// the keys that spent something in a window still open; this process keeps only
    /// templates (at most [`max_keys`](Self::max_keys), forgetting one loses nothing).
    ///
    /// While Redis cannot be reached a request **fails closed** (`503`, nothing charged), or,
    /// with `fail_open = true`, is charged on the key's ledger in this process (never sent to
    /// Redis later: nothing is counted twice). Admitted responses carry no quota headers in a
    /// fleet (reading them would cost a round trip per request); refusals carry `Retry-After`.
    ///
    /// `connection` is any `redis::aio::ConnectionLike + Clone + Send + Sync` (a
    /// `ConnectionManager`, a cluster's `ClusterConnection`: each key's quota is one slot).
    /// Needs a tokio runtime.
    #[must_use]
    pub fn redis<C>(mut self, connection: C, prefix: impl Into<String>, fail_open: bool) -> Self
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        self.fleet = Some(Box::new(RedisQuota {
            connection,
            prefix: prefix.into(),
            fail_open,
            origin: Instant::now(),
            down_until: AtomicU64::new(0),
        }));
        self
    }
}

struct RedisQuota<C> {
    connection: C,
    prefix: String,
    fail_open: bool,
    origin: Instant,
    /// Milliseconds since `origin` until which the store is taken as down (0: up).
    down_until: AtomicU64,
}

/// After a failure, how long requests are answered without a round trip.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// How long one round trip may take before it counts as a failure.
const TIMEOUT: Duration = Duration::from_millis(500);

/// The name of `key`'s quota in Redis: the same in every process.
fn name(prefix: &str, key: &QuotaKey) -> String {
    let mut name = String::with_capacity(prefix.len() + 40);
    name.push_str(prefix);
    match (key.api_key(), key.client_ip()) {
        (Some(api_key), _) => {
            let _ = write!(name, ":k:{}", TextDigest::of(api_key).hex());
        }
        (None, Some(ip)) => {
            let _ = write!(name, ":ip:{ip}");
        }
        (None, None) => name.push_str(":none"),
    }
    name
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> FleetQuota for RedisQuota<C> {
    fn ledger(&self, key: &QuotaKey, template: &Ledger) -> Ledger<DynStore> {
        let snapshot = template.snapshot();
        let mut builder = Ledger::builder()
            .critical_reserve(snapshot.critical_reserve)
            .store_timeout(TIMEOUT);
        for usage in &snapshot.windows {
            builder = builder.limit(usage.limit, usage.window);
        }
        builder
            .redis(self.connection.clone(), name(&self.prefix, key))
            .to_dyn()
    }

    fn fails_open(&self) -> bool {
        self.fail_open
    }

    fn failed(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX / 2);
        let until = now.saturating_add(u64::try_from(DOWN_FOR.as_millis()).unwrap_or(1_000));
        self.down_until.store(until.max(1), Relaxed);
        tracing::warn!(prefix = %self.prefix, "key quota store unavailable");
    }

    fn is_down(&self) -> bool {
        let until = self.down_until.load(Relaxed);
        until != 0 && u128::from(until) > self.origin.elapsed().as_millis()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_never_hold_the_key() {
        let a = name("q", &QuotaKey::from("sk-live-123"));
        assert_eq!(a, name("q", &QuotaKey::from("sk-live-123")));
        assert!(!a.contains("sk-live"), "{a}");
        assert_eq!(a.len(), "q:k:".len() + 32);
        assert_ne!(a, name("q", &QuotaKey::from("sk-live-124")));
        let ip = name("q", &QuotaKey::client("192.0.2.1".parse().unwrap()));
        assert_eq!(ip, "q:ip:192.0.2.1");
        // A fixed value: other processes and other builds must agree.
        assert_eq!(
            TextDigest::of("abc").hex(),
            "6e9109907b891898a8f964af7a2b9c9c"
        );
    }
}
