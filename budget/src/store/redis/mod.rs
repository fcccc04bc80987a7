//! The Redis store (feature `redis`): one ledger shared by every process that uses the same key
//! prefix.
//!
//! Every operation is one Lua script run (`EVALSHA`, loaded again on `NOSCRIPT`), so checks and
//! writes are atomic across the fleet. Time is Redis's own (`TIME`): processes with skewed clocks
//! still agree on windows. Every key of a ledger shares one hash tag, so one Redis Cluster slot.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use redis::aio::ConnectionLike;
use tokio::sync::Notify;
use tollway_core::{ExhaustedReason, StoreUnavailable};

use self::call::{Epoch, Keys, MAX_EXACT, grace_ms};
use self::inner::Inner;
use super::backend::{Backend, Decision, Finish, Grant};
use super::{Store, StoreConfig};
use crate::ledger::{Ledger, LedgerBuilder, system_millis};
use crate::snapshot::Snapshot;
use crate::window::Window;

mod call;
mod inner;
mod ops;

#[allow(unreachable_pub)]
pub use self::ops::{RedisDone, RedisReserving};

/// A ledger kept in Redis, shared by every process (on any machine) that builds it with the
/// same prefix and limits: [`LedgerBuilder::redis`].
///
/// `C` is any async Redis connection that can be cloned and shared: the `redis` crate's
/// `ConnectionManager` (the default), a cluster connection, a multiplexed connection.
pub struct RedisStore<C = redis::aio::ConnectionManager> {
    inner: Arc<Inner<C>>,
}

impl<C> fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.keys.prefix)
            .field("limits", &self.inner.limits)
            .field("lease_ms", &self.inner.lease_ms)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl<C> Clone for RedisStore<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl LedgerBuilder {
    /// A ledger kept in Redis, shared by every process (on any machine) that builds it with the
    /// same `prefix` and the same limits: fleet mode.
    ///
    /// `connection` is any `redis::aio::ConnectionLike + Clone + Send + Sync`: a
    /// `ConnectionManager`, or a cluster connection (every key of the ledger carries the hash
    /// tag `{prefix}`, so one slot). Reserve, settle and refund are atomic Lua scripts timed by
    /// Redis's clock; reservations are [leases](Self::lease); the 402 latch is one key every
    /// process sees (and, the moment a 402 is seen, a local latch refuses this process's next
    /// request without a round trip). Needs Redis 5.0 or later and a tokio runtime.
    ///
    /// **A fleet whose state vanished is refused.** The ledger's keys include an epoch, written
    /// when the fleet's state is created. A process that saw it and then finds it gone (Redis
    /// restarted without persistence: a lifetime budget would start again from zero) or
    /// replaced fails every operation with [`StoreUnavailable`]; see
    /// [`redis_rejoin`](Self::redis_rejoin) for processes that restart. Run Redis with AOF
    /// (`appendonly yes`, `appendfsync everysec` or `always`) for fleet budgets.
    ///
    /// When Redis cannot be reached the ledger **fails closed**: nothing is reserved and the
    /// service returns [`StoreUnavailable`] within [`store_timeout`](Self::store_timeout). A
    /// [`balance`](Self::balance) given to the builder is sent to Redis in the background.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tollway_budget::redis::{Client, aio::ConnectionManager};
    /// use tollway_budget::{BudgetLayer, Ledger, Priority, Window};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let connection = ConnectionManager::new(Client::open("redis://127.0.0.1:6379/")?).await?;
    /// let ledger = Ledger::builder()
    ///     .limit(5_000, Window::day())
    ///     .critical_reserve(500)
    ///     .lease(Duration::from_secs(30))
    ///     .redis(connection, "billing:acme"); // every process with this prefix shares it
    /// let layer = BudgetLayer::new(ledger.clone()); // wraps a client as usual
    ///
    /// let reservation = ledger.reserve_async(1, Priority::Normal).await?;
    /// reservation.settle_async(1).await?;
    /// assert_eq!(ledger.snapshot_async().await?.reserved, 0);
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    pub fn redis<C>(self, connection: C, prefix: impl AsRef<str>) -> Ledger<RedisStore<C>>
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        self.redis_store(connection, prefix.as_ref(), None)
    }

    /// [`redis`](Self::redis), for a process that rejoins a fleet it knows exists: the fleet
    /// whose epoch was `epoch` ([`Snapshot::epoch`] as an earlier run read it). If Redis no
    /// longer holds that epoch (its data was lost) every operation fails with
    /// [`StoreUnavailable`] instead of counting the budget from zero again.
    ///
    /// A process that stays up needs no such help: it checks the epoch it first saw on every
    /// call. This is for a process that restarts (keep the epoch beside its other state).
    pub fn redis_rejoin<C>(
        self,
        connection: C,
        prefix: impl AsRef<str>,
        epoch: u64,
    ) -> Ledger<RedisStore<C>>
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        self.redis_store(connection, prefix.as_ref(), Some(epoch))
    }

    fn redis_store<C>(
        self,
        connection: C,
        prefix: &str,
        epoch: Option<u64>,
    ) -> Ledger<RedisStore<C>>
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        let config = self.store_config();
        let store = RedisStore::new(connection, prefix, &config, epoch);
        if let Some(balance) = config.balance {
            let now = self.now();
            drop(store.sync_balance(balance, now));
        }
        self.finish(store)
    }
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> RedisStore<C> {
    fn new(connection: C, prefix: &str, config: &StoreConfig, epoch: Option<u64>) -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        let limits: Vec<(u64, Window)> = config
            .limits
            .iter()
            .map(|&(limit, window)| (limit.min(MAX_EXACT), window))
            .collect();
        let grace = grace_ms(&limits);
        let lease_ms = u64::try_from(config.lease.as_millis())
            .unwrap_or(MAX_EXACT)
            .clamp(1, MAX_EXACT);
        let instance = hasher.finish();
        let epoch = Epoch {
            seen: AtomicU64::new(epoch.unwrap_or(0)),
            // A given epoch is expected from the first call on.
            seen_at: AtomicI64::new(system_millis(config.clock.system_now())),
            // Lua numbers are doubles: an epoch stays an exact integer below 2^53.
            candidate: (instance & MAX_EXACT).max(1),
            ttl_ms: if grace < 0 {
                -1
            } else {
                grace.saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX / 4))
            },
        };
        Self {
            inner: Arc::new(Inner {
                connection,
                keys: Keys::new(prefix),
                epoch,
                grace_ms: grace,
                limits,
                lease_ms,
                timeout: config.timeout,
                clock: config.clock.clone(),
                instance,
                next_id: AtomicU64::new(1),
                skew: AtomicI64::new(0),
                local_latch: Mutex::new(None),
                latch_tag: AtomicU64::new(0),
                pending: AtomicUsize::new(0),
                idle: Notify::new(),
                name: Arc::clone(&config.name),
            }),
        }
    }
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> Store for RedisStore<C> {}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> Backend for RedisStore<C> {
    type Reserving = RedisReserving;
    type Pending = RedisDone;
    type Snapshotting = Pin<Box<dyn Future<Output = Result<Snapshot, StoreUnavailable>> + Send>>;

    fn reserve(&self, cost: u64, floor: u64, now: i64) -> RedisReserving {
        if let Some(retry) = self.inner.locally_latched(now) {
            return RedisReserving::decided(Decision::Refused(ExhaustedReason::Upstream402, retry));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let cost = cost.min(MAX_EXACT);
        let (reserving, handoff) = RedisReserving::waiting();
        let inner = Arc::clone(&self.inner);
        let spawned = self.spawn("reserve", async move {
            let decision = inner.reserve(id, cost, floor).await;
            // The caller gave up while Redis granted it: refund it here.
            if let Some(Decision::Granted(grant)) = handoff.deliver(decision) {
                let _ = inner.finish(grant, Finish::refund()).await;
            }
        });
        if spawned.is_none() {
            return RedisReserving::failed(no_runtime("reserve"));
        }
        reserving
    }

    fn cancel(&self, reserving: RedisReserving, _now: i64) {
        if let Some(grant) = reserving.cancel() {
            drop(self.finish(grant, Finish::refund(), 0));
        }
    }

    fn finish(&self, grant: Grant, finish: Finish, _now: i64) -> RedisDone {
        // Latch here first: the very next request of this process must not be sent.
        let tag = finish.latch.then(|| self.inner.latch_locally());
        let inner = Arc::clone(&self.inner);
        RedisDone::spawned(self.spawn("finish", async move {
            inner.finish(grant, finish).await?;
            if let Some(tag) = tag {
                inner.confirm_latch(tag);
            }
            Ok(())
        }))
    }

    fn latch(&self, _now: i64) -> RedisDone {
        let tag = self.inner.latch_locally();
        let inner = Arc::clone(&self.inner);
        RedisDone::spawned(self.spawn("latch", async move {
            let reply = inner.run("latch", &[]).await?;
            inner.confirm_latch(tag);
            tracing::warn!(until_ms = ?reply.get(2).filter(|&&u| u >= 0), "budget latched in Redis");
            Ok(())
        }))
    }

    fn reset(&self, _now: i64) -> RedisDone {
        self.inner.lift_locally();
        let inner = Arc::clone(&self.inner);
        RedisDone::spawned(self.spawn(
            "reset",
            async move { inner.run("reset", &[]).await.map(drop) },
        ))
    }

    fn sync_balance(&self, balance: u64, _now: i64) -> RedisDone {
        if balance > 0 {
            self.inner.lift_locally();
        }
        let inner = Arc::clone(&self.inner);
        let args = [balance.min(MAX_EXACT).to_string()];
        RedisDone::spawned(self.spawn(
            "sync",
            async move { inner.run("sync", &args).await.map(drop) },
        ))
    }

    fn snapshot(&self, _now: i64) -> Self::Snapshotting {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.snapshot().await })
    }

    fn flush(&self) -> RedisDone {
        let inner = Arc::clone(&self.inner);
        RedisDone::waiting(async move {
            loop {
                let mut notified = std::pin::pin!(inner.idle.notified());
                notified.as_mut().enable();
                if inner.pending.load(Ordering::Acquire) == 0 {
                    return Ok(());
                }
                notified.await;
            }
        })
    }

    fn lease(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.inner.lease_ms))
    }

    fn is_shared(&self) -> bool {
        true
    }
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> RedisStore<C> {
    /// Runs `work` as a task counted by [`flush`](Backend::flush). Without a tokio runtime
    /// nothing can be sent: a lease then expires and counts as spent (never undercounted).
    fn spawn<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<T>> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                operation = what,
                "budget store: no tokio runtime to send this on; a lease will expire and count as spent"
            );
            return None;
        };
        let inner = Arc::clone(&self.inner);
        inner.pending.fetch_add(1, Ordering::AcqRel);
        Some(runtime.spawn(async move {
            let output = work.await;
            if inner.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                inner.idle.notify_waiters();
            }
            output
        }))
    }
}

pub(super) fn no_runtime(operation: &'static str) -> StoreUnavailable {
    StoreUnavailable::new("budget", operation, "a Redis ledger needs a tokio runtime")
}
