//! What a Redis ledger shares with its tasks: the connection, the keys, the local latch, and the
//! operations as script calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::ConnectionLike;
use tokio::sync::Notify;
use tollway_core::{ExhaustedReason, SharedClock, StoreUnavailable};

use super::call::{self, Epoch, Keys, MAX_EXACT, latch_until};
use crate::ledger::system_millis;
use crate::snapshot::{Snapshot, WindowUsage};
use crate::store::backend::{Decision, Finish, Grant};
use crate::window::{Window, millis_to_duration};

pub(super) struct Inner<C> {
    pub(super) connection: C,
    pub(super) keys: Keys,
    pub(super) limits: Vec<(u64, Window)>,
    pub(super) lease_ms: u64,
    /// How long the lease bookkeeping outlives the latest lease (-1: until purged).
    pub(super) grace_ms: i64,
    pub(super) timeout: Duration,
    pub(super) clock: SharedClock,
    pub(super) instance: u64,
    pub(super) next_id: AtomicU64,
    /// Redis's clock minus ours, in milliseconds, from the last reply.
    pub(super) skew: AtomicI64,
    pub(super) epoch: Epoch,
    /// A 402 seen here that Redis may not know yet: refuse at once until this local time
    /// (`i64::MAX`: until lifted), tagged so that only its own script clears it.
    pub(super) local_latch: Mutex<Option<(u64, i64)>>,
    pub(super) latch_tag: AtomicU64,
    pub(super) pending: AtomicUsize,
    pub(super) idle: Notify,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(super) name: Arc<str>,
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> Inner<C> {
    pub(super) fn local_now(&self) -> i64 {
        system_millis(self.clock.system_now())
    }

    pub(super) fn member(&self, id: u64, cost: u64) -> String {
        format!("{:016x}-{id}:{cost}", self.instance)
    }

    /// Runs `op` and counts and logs a failure (the caller fails closed).
    pub(super) async fn run(
        &self,
        op: &'static str,
        args: &[String],
    ) -> Result<Vec<i64>, StoreUnavailable> {
        let result = call::run(
            &self.connection,
            &self.keys,
            &self.limits,
            &self.skew,
            &self.epoch,
            self.timeout,
            || self.local_now(),
            op,
            args,
        )
        .await;
        if let Err(error) = &result {
            tracing::error!(ledger = %self.name, %error, "budget store unavailable");
            #[cfg(feature = "metrics")]
            metrics::counter!(
                "tollway_budget_store_errors_total",
                "ledger" => metrics::SharedString::from(Arc::clone(&self.name)),
                "operation" => op,
            )
            .increment(1);
        }
        result
    }

    /// Latches here, at once: this process sends nothing until Redis has the latch too.
    pub(super) fn latch_locally(&self) -> u64 {
        let tag = self.latch_tag.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.local_now();
        let until = latch_until(&self.limits, now).unwrap_or(i64::MAX);
        *self.local_latch.lock() = Some((tag, until));
        tag
    }

    /// Redis has the latch `tag` set (or a later state): it decides from now on.
    pub(super) fn confirm_latch(&self, tag: u64) {
        let mut local = self.local_latch.lock();
        if local.is_some_and(|(t, _)| t == tag) {
            *local = None;
        }
    }

    pub(super) fn lift_locally(&self) {
        *self.local_latch.lock() = None;
    }

    /// The local latch's remaining time, if it holds.
    pub(super) fn locally_latched(&self, now: i64) -> Option<Option<Duration>> {
        let (_, until) = (*self.local_latch.lock())?;
        (now < until).then(|| (until != i64::MAX).then(|| millis_to_duration(until - now)))
    }

    pub(super) async fn reserve(
        &self,
        id: u64,
        cost: u64,
        floor: u64,
    ) -> Result<Decision, StoreUnavailable> {
        let args = [
            cost.to_string(),
            floor.min(MAX_EXACT).to_string(),
            self.lease_ms.to_string(),
            self.member(id, cost),
            self.grace_ms.to_string(),
        ];
        let reply = self.run("reserve", &args).await?;
        let at = |i: usize, default: i64| reply.get(i).copied().unwrap_or(default);
        Ok(match reply[0] {
            0 => Decision::Granted(Grant::new(id, cost, u64::try_from(at(2, 0)).unwrap_or(0))),
            1 => Decision::Refused(
                ExhaustedReason::Upstream402,
                (at(2, -1) >= 0).then(|| millis_to_duration(at(2, -1))),
            ),
            _ => Decision::Refused(
                match at(2, 1) {
                    2 => ExhaustedReason::CriticalReserve,
                    3 => ExhaustedReason::Upstream402,
                    _ => ExhaustedReason::Window,
                },
                (at(3, -1) >= 0).then(|| millis_to_duration(at(3, -1))),
            ),
        })
    }

    pub(super) async fn finish(
        &self,
        grant: Grant,
        finish: Finish,
    ) -> Result<(), StoreUnavailable> {
        let cost = grant.cost().min(MAX_EXACT);
        let args = [
            self.member(grant.id(), grant.cost()),
            cost.to_string(),
            finish.charge.unwrap_or(0).min(MAX_EXACT).to_string(),
            finish
                .balance
                .map_or_else(|| String::from("-1"), |b| b.min(MAX_EXACT).to_string()),
            grant.stamp().to_string(),
            String::from(if finish.latch { "1" } else { "0" }),
        ];
        let reply = self.run("finish", &args).await?;
        if reply[0] == 3 {
            tracing::warn!(
                id = grant.id(),
                cost,
                charge = ?finish.charge,
                "budget lease had expired: its full cost was already counted as spent"
            );
            #[cfg(feature = "metrics")]
            metrics::counter!(
                "tollway_budget_expired_leases_total",
                "ledger" => metrics::SharedString::from(Arc::clone(&self.name)),
            )
            .increment(1);
        }
        Ok(())
    }

    pub(super) async fn snapshot(&self) -> Result<Snapshot, StoreUnavailable> {
        let reply = self.run("snapshot", &[]).await?;
        if reply.len() != 5 + 2 * self.limits.len() {
            return Err(StoreUnavailable::new(
                "budget",
                "snapshot",
                "malformed reply from the budget script",
            ));
        }
        let to_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        let reserved = to_u64(reply[2]);
        let balance = (reply[3] >= 0).then(|| to_u64(reply[3]));
        let latch_ttl = reply[4];
        let latched = latch_ttl != -2;
        let windows: Vec<WindowUsage> = self
            .limits
            .iter()
            .enumerate()
            .map(|(i, &(limit, window))| {
                let spent = to_u64(reply[5 + 2 * i]);
                let resets = reply[6 + 2 * i];
                WindowUsage {
                    window,
                    limit,
                    spent,
                    remaining: limit.saturating_sub(spent).saturating_sub(reserved),
                    resets_in: (resets >= 0).then(|| millis_to_duration(resets)),
                }
            })
            .collect();
        let headroom = windows
            .iter()
            .map(|w| w.remaining)
            .chain(balance.map(|b| b.saturating_sub(reserved)))
            .min()
            .unwrap_or(u64::MAX);
        Ok(Snapshot {
            windows,
            reserved,
            balance,
            latched,
            latched_for: (latch_ttl >= 0).then(|| millis_to_duration(latch_ttl)),
            remaining: if latched { 0 } else { headroom },
            critical_reserve: 0,
            epoch: Some(self.epoch.seen.load(Ordering::Relaxed)).filter(|&e| e != 0),
        })
    }
}
