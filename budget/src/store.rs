//! Fleet mode: a ledger kept in Redis and shared by every process that uses the same key prefix.
//!
//! Every operation is one Lua script run (`EVALSHA`, loaded again on `NOSCRIPT`), so checks and
//! writes are atomic across the fleet. Time is Redis's own (`TIME`): processes with skewed clocks
//! still agree on windows. A calendar period is computed here from an estimate of Redis's time
//! and checked by the script, which asks for a recomputation when the estimate was off.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;
use tollway_core::ExhaustedReason;

use crate::error::StoreUnavailable;
use crate::ledger::Ledger;
use crate::reservation::Reservation;
use crate::snapshot::{Snapshot, WindowUsage};
use crate::window::{Window, WindowSpec, millis_to_duration};

/// How long a reservation holds credit unless configured: after that the lease expires and its
/// credit counts as spent.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How long one store operation may take unless configured, reconnection included.
pub(crate) const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// Lua numbers are doubles: credits above this cannot be counted exactly, so limits are capped.
const MAX_EXACT: u64 = (1 << 53) - 1;

/// A calendar period may be recomputed this many times per operation (once is the norm, at a
/// period boundary).
const MAX_RETIMES: usize = 3;

const SCRIPT: &str = include_str!("store.lua");

pub(crate) struct RedisStore {
    connection: ConnectionManager,
    script: Script,
    prefix: String,
    reserved_key: String,
    leases_key: String,
    latch_key: String,
    balance_key: String,
    limits: Vec<(u64, Window)>,
    lease_ms: u64,
    /// How long the lease bookkeeping outlives the latest lease: the longest window, or -1 (keep
    /// it until purged) when a lifetime limit exists.
    grace_ms: i64,
    timeout: Duration,
    instance: u64,
    next_id: AtomicU64,
    /// Redis's clock minus ours, in milliseconds, from the last reply.
    skew_ms: AtomicI64,
    background: Arc<Background>,
    last_snapshot: Mutex<Option<Snapshot>>,
}

/// Settles, refunds and latches sent from synchronous code run as tasks; [`Ledger::flush`]
/// waits for them.
#[derive(Debug, Default)]
struct Background {
    pending: AtomicUsize,
    idle: Notify,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("limits", &self.limits)
            .field("lease_ms", &self.lease_ms)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What a reserve call got back from the script.
enum Granted {
    Yes,
    Latched { for_ms: i64 },
    Refused { reason: i64, wait_ms: i64 },
}

impl RedisStore {
    pub(crate) fn new(
        connection: ConnectionManager,
        prefix: &str,
        limits: Vec<(u64, Window)>,
        lease: Duration,
        timeout: Duration,
    ) -> Self {
        // A hash tag keeps every key of one ledger in one Redis Cluster slot.
        let prefix = format!("{{{prefix}}}");
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        let limits: Vec<(u64, Window)> = limits
            .into_iter()
            .map(|(limit, window)| (limit.min(MAX_EXACT), window))
            .collect();
        let grace_ms = grace_ms(&limits);
        Self {
            connection,
            script: Script::new(SCRIPT),
            reserved_key: format!("{prefix}:reserved"),
            leases_key: format!("{prefix}:leases"),
            latch_key: format!("{prefix}:latch"),
            balance_key: format!("{prefix}:balance"),
            prefix,
            limits,
            lease_ms: u64::try_from(lease.as_millis())
                .unwrap_or(MAX_EXACT)
                .clamp(1, MAX_EXACT),
            grace_ms,
            timeout,
            instance: hasher.finish(),
            next_id: AtomicU64::new(1),
            skew_ms: AtomicI64::new(0),
            background: Arc::new(Background::default()),
            last_snapshot: Mutex::new(None),
        }
    }

    pub(crate) fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    fn member(&self, id: u64, cost: u64) -> String {
        format!("{:016x}-{id}:{cost}", self.instance)
    }

    fn estimated_redis_now(&self, local_now: i64) -> i64 {
        local_now + self.skew_ms.load(Ordering::Relaxed)
    }

    /// Runs `op` with `args` after the limits; retries when a calendar period was misjudged.
    async fn run(
        &self,
        ledger: &Ledger,
        op: &'static str,
        args: &[String],
    ) -> Result<Vec<i64>, StoreUnavailable> {
        let mut now = self.estimated_redis_now(ledger.clock_millis());
        for _ in 0..=MAX_RETIMES {
            let mut invocation = self.script.prepare_invoke();
            invocation
                .key(&self.reserved_key)
                .key(&self.leases_key)
                .key(&self.latch_key)
                .key(&self.balance_key)
                .arg(op)
                .arg(self.limits.len());
            for (i, &(limit, window)) in self.limits.iter().enumerate() {
                match window.spec(now) {
                    WindowSpec::Calendar { start, end } => invocation
                        .key(format!("{}:w{i}:{start}", self.prefix))
                        .arg("c")
                        .arg(limit)
                        .arg(start)
                        .arg(end),
                    WindowSpec::Rolling { length, width } => invocation
                        .key(format!("{}:w{i}:r", self.prefix))
                        .arg("r")
                        .arg(limit)
                        .arg(length)
                        .arg(width),
                    WindowSpec::Lifetime => invocation
                        .key(format!("{}:w{i}:l", self.prefix))
                        .arg("l")
                        .arg(limit)
                        .arg(0)
                        .arg(0),
                };
            }
            for arg in args {
                invocation.arg(arg);
            }
            let mut connection = self.connection.clone();
            let sent_at = ledger.clock_millis();
            // A connection manager reconnecting to a server that is down can take many seconds
            // per command: the budget fails closed within its own timeout instead.
            let reply: Vec<i64> =
                match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                    .await
                {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(e)) => return Err(ledger.store_failed(op, e)),
                    Err(_) => {
                        let message = format!("no answer within {:?}", self.timeout);
                        return Err(ledger.store_failed(op, message));
                    }
                };
            let (Some(&status), Some(&redis_now)) = (reply.first(), reply.get(1)) else {
                return Err(ledger.store_failed(op, "malformed reply from the budget script"));
            };
            let local_now = sent_at + (ledger.clock_millis() - sent_at) / 2;
            self.skew_ms.store(redis_now - local_now, Ordering::Relaxed);
            if status == -1 {
                now = redis_now;
                continue;
            }
            return Ok(reply);
        }
        Err(ledger.store_failed(op, "Redis time kept leaving the calendar period"))
    }

    pub(crate) async fn reserve(
        &self,
        ledger: &Ledger,
        cost: u64,
        floor: u64,
    ) -> Result<Result<Reservation, (ExhaustedReason, Option<Duration>)>, StoreUnavailable> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cost = cost.min(MAX_EXACT);
        let args = [
            cost.to_string(),
            floor.min(MAX_EXACT).to_string(),
            self.lease_ms.to_string(),
            self.member(id, cost),
            self.grace_ms.to_string(),
        ];
        let reply = self.run(ledger, "reserve", &args).await?;
        let granted = match reply[0] {
            0 => Granted::Yes,
            1 => Granted::Latched {
                for_ms: reply.get(2).copied().unwrap_or(-1),
            },
            _ => Granted::Refused {
                reason: reply.get(2).copied().unwrap_or(1),
                wait_ms: reply.get(3).copied().unwrap_or(-1),
            },
        };
        Ok(match granted {
            Granted::Yes => Ok(Reservation::new(ledger.clone(), id, cost)),
            Granted::Latched { for_ms } => Err((
                ExhaustedReason::Upstream402,
                (for_ms >= 0).then(|| millis_to_duration(for_ms)),
            )),
            Granted::Refused { reason, wait_ms } => Err((
                match reason {
                    2 => ExhaustedReason::CriticalReserve,
                    3 => ExhaustedReason::Upstream402,
                    _ => ExhaustedReason::Window,
                },
                (wait_ms >= 0).then(|| millis_to_duration(wait_ms)),
            )),
        })
    }

    /// Settles (`charge` is `Some`) or refunds a lease. True if the lease was still live; false
    /// if it had expired and was already counted as spent in full.
    pub(crate) async fn finish(
        &self,
        ledger: &Ledger,
        id: u64,
        cost: u64,
        charge: Option<u64>,
    ) -> Result<bool, StoreUnavailable> {
        let cost = cost.min(MAX_EXACT);
        let args = [
            self.member(id, cost),
            cost.to_string(),
            charge.unwrap_or(0).min(MAX_EXACT).to_string(),
        ];
        let reply = self.run(ledger, "finish", &args).await?;
        let live = reply[0] == 0;
        if !live {
            tracing::warn!(
                id,
                cost,
                ?charge,
                "budget lease had expired: its full cost was already counted as spent"
            );
        }
        Ok(live)
    }

    pub(crate) async fn latch(&self, ledger: &Ledger) -> Result<Option<i64>, StoreUnavailable> {
        let reply = self.run(ledger, "latch", &[]).await?;
        Ok(reply.get(2).copied().filter(|&u| u >= 0))
    }

    pub(crate) async fn reset(&self, ledger: &Ledger) -> Result<(), StoreUnavailable> {
        self.run(ledger, "reset", &[]).await.map(drop)
    }

    pub(crate) async fn sync(&self, ledger: &Ledger, balance: u64) -> Result<(), StoreUnavailable> {
        let args = [balance.min(MAX_EXACT).to_string()];
        self.run(ledger, "sync", &args).await.map(drop)
    }

    pub(crate) async fn snapshot(
        &self,
        ledger: &Ledger,
        critical_reserve: u64,
    ) -> Result<Snapshot, StoreUnavailable> {
        let reply = self.run(ledger, "snapshot", &[]).await?;
        if reply.len() != 5 + 2 * self.limits.len() {
            return Err(ledger.store_failed("snapshot", "malformed reply from the budget script"));
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
        let snapshot = Snapshot {
            windows,
            reserved,
            balance,
            latched,
            latched_for: (latch_ttl >= 0).then(|| millis_to_duration(latch_ttl)),
            remaining: if latched { 0 } else { headroom },
            critical_reserve,
        };
        *self.last_snapshot.lock() = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// The snapshot last fetched by [`snapshot`](Self::snapshot), if any.
    pub(crate) fn last_snapshot(&self) -> Option<Snapshot> {
        self.last_snapshot.lock().clone()
    }

    /// Runs `work` as a task so synchronous callers (a dropped reservation, the response path)
    /// need not wait for Redis. Without a tokio runtime nothing can be sent: a lease then expires
    /// and counts as spent (never undercounted), and a latch or sync is lost (logged).
    pub(crate) fn spawn<T: Send + 'static>(
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
        let background = Arc::clone(&self.background);
        background.pending.fetch_add(1, Ordering::AcqRel);
        Some(runtime.spawn(async move {
            let output = work.await;
            if background.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                background.idle.notify_waiters();
            }
            output
        }))
    }

    /// Waits until every task sent by [`spawn`](Self::spawn) so far has finished.
    pub(crate) async fn flush(&self) {
        loop {
            let mut notified = std::pin::pin!(self.background.idle.notified());
            notified.as_mut().enable();
            if self.background.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The longest span any window counts spend over, in milliseconds; -1 with a lifetime limit or
/// no limit at all (a synced balance only).
fn grace_ms(limits: &[(u64, Window)]) -> i64 {
    const DAY: i64 = 86_400_000;
    let mut longest = -1;
    for (_, window) in limits {
        let span = match window.spec(0) {
            WindowSpec::Lifetime => return -1,
            WindowSpec::Rolling { length, width } => length + width,
            // Months are at most 31 days; a day or week is exactly its own length.
            WindowSpec::Calendar { start, end } if end - start > 7 * DAY => 31 * DAY,
            WindowSpec::Calendar { start, end } => end - start,
        };
        longest = longest.max(span);
    }
    longest
}
