//! One call of the budget script: keys, arguments, Redis's clock, retries when a calendar
//! period was misjudged.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionLike;
use tollway_core::StoreUnavailable;

use crate::window::{DAY_MS, ROLLING_BUCKETS, Window, WindowKind, period_bounds};

/// Lua numbers are doubles: credits above this cannot be counted exactly, so they are capped.
pub(super) const MAX_EXACT: u64 = (1 << 53) - 1;

/// A calendar period may be recomputed this many times per call (once is the norm, at a
/// period boundary).
const MAX_RETIMES: usize = 3;

pub(super) const SCRIPT: &str = include_str!("script.lua");

/// How a window is described to the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WindowSpec {
    /// The calendar period holding the time asked about.
    Calendar { start: i64, end: i64 },
    /// A rolling window kept as buckets of `width`.
    Rolling { length: i64, width: i64 },
    /// Spend counts forever.
    Lifetime,
}

fn spec(window: &Window, now: i64) -> WindowSpec {
    match window.kind {
        WindowKind::Calendar { period, offset } => {
            let (start, end) = period_bounds(period, offset, now);
            WindowSpec::Calendar { start, end }
        }
        WindowKind::Rolling { length_ms } => WindowSpec::Rolling {
            length: length_ms,
            width: (length_ms / ROLLING_BUCKETS).max(1),
        },
        WindowKind::Lifetime => WindowSpec::Lifetime,
    }
}

/// The longest span any window counts spend over, in milliseconds; -1 with a lifetime limit or
/// no limit at all (a synced balance only).
pub(super) fn grace_ms(limits: &[(u64, Window)]) -> i64 {
    let mut longest = -1;
    for (_, window) in limits {
        let span = match spec(window, 0) {
            WindowSpec::Lifetime => return -1,
            WindowSpec::Rolling { length, width } => length + width,
            // Months are at most 31 days; a day or week is exactly its own length.
            WindowSpec::Calendar { start, end } if end - start > 7 * DAY_MS => 31 * DAY_MS,
            WindowSpec::Calendar { start, end } => end - start,
        };
        longest = longest.max(span);
    }
    longest
}

/// When a latch set at `now` would lift by itself (the earliest window rollover), if ever.
pub(super) fn latch_until(limits: &[(u64, Window)], now: i64) -> Option<i64> {
    limits
        .iter()
        .filter_map(|(_, window)| match spec(window, now) {
            WindowSpec::Calendar { end, .. } => Some(end),
            WindowSpec::Rolling { length, .. } => Some(now.saturating_add(length)),
            WindowSpec::Lifetime => None,
        })
        .min()
}

/// The keys and script of one ledger.
#[derive(Debug)]
pub(super) struct Keys {
    pub(super) prefix: String,
    reserved: String,
    leases: String,
    latch: String,
    balance: String,
    pub(super) epoch: String,
    script: Script,
}

/// What this process knows of the fleet's epoch: the value Redis holds for as long as the
/// fleet's state exists.
#[derive(Debug)]
pub(super) struct Epoch {
    /// The epoch last seen (0: none yet).
    pub(super) seen: AtomicU64,
    /// When it was last seen, local milliseconds.
    pub(super) seen_at: AtomicI64,
    /// The one this process creates if the fleet has none yet.
    pub(super) candidate: u64,
    /// How long Redis keeps the epoch after the last call, in milliseconds (-1: forever): as
    /// long as any of the ledger's own keys can live.
    pub(super) ttl_ms: i64,
}

impl Epoch {
    /// The epoch a call must find: the one last seen, unless it may have expired with the rest
    /// of the state since (an idle windowed ledger forgets everything, rightly).
    fn expected(&self, local_now: i64) -> u64 {
        let seen = self.seen.load(Ordering::Relaxed);
        let fresh = self.ttl_ms < 0
            || local_now.saturating_sub(self.seen_at.load(Ordering::Relaxed)) < self.ttl_ms / 2;
        if fresh { seen } else { 0 }
    }
}

/// The error a fleet whose state vanished gets, for every operation, until it is rebuilt.
pub(super) fn vanished(
    op: &'static str,
    prefix: &str,
    expected: u64,
    found: i64,
) -> StoreUnavailable {
    let what = if found == 0 {
        String::from("is gone")
    } else {
        format!("is now {found}")
    };
    StoreUnavailable::new(
        "budget",
        op,
        format!(
            "the fleet's state in Redis vanished (its epoch {expected} under {prefix} {what}): \
             Redis lost its data (restarted without persistence?) or the keys were deleted; \
             refusing rather than counting the budget from zero again"
        ),
    )
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        // A hash tag keeps every key of one ledger in one Redis Cluster slot.
        let prefix = format!("{{{prefix}}}");
        Self {
            reserved: format!("{prefix}:reserved"),
            leases: format!("{prefix}:leases"),
            latch: format!("{prefix}:latch"),
            balance: format!("{prefix}:balance"),
            epoch: format!("{prefix}:epoch"),
            prefix,
            script: Script::new(SCRIPT),
        }
    }
}

/// Runs operation `op` with `args` after the limits, on `connection`, within `timeout`.
/// `local_now` reads this process's clock; `skew` is Redis's clock minus ours, learnt from
/// every reply. Retries when a calendar period was computed for the wrong side of a boundary.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run<C: ConnectionLike + Clone + Send + Sync + 'static>(
    connection: &C,
    keys: &Keys,
    limits: &[(u64, Window)],
    skew: &AtomicI64,
    epoch: &Epoch,
    timeout: Duration,
    local_now: impl Fn() -> i64,
    op: &'static str,
    args: &[String],
) -> Result<Vec<i64>, StoreUnavailable> {
    let failed = |why: String| StoreUnavailable::new("budget", op, why);
    let mut now = local_now() + skew.load(Ordering::Relaxed);
    let expected = epoch.expected(local_now());
    for _ in 0..=MAX_RETIMES {
        let mut invocation = keys.script.prepare_invoke();
        invocation
            .key(&keys.reserved)
            .key(&keys.leases)
            .key(&keys.latch)
            .key(&keys.balance)
            .key(&keys.epoch)
            .arg(op)
            .arg(limits.len())
            .arg(expected)
            .arg(epoch.candidate)
            .arg(epoch.ttl_ms);
        for (i, (limit, window)) in limits.iter().enumerate() {
            let limit = (*limit).min(MAX_EXACT);
            match spec(window, now) {
                WindowSpec::Calendar { start, end } => invocation
                    .key(format!("{}:w{i}:{start}", keys.prefix))
                    .arg("c")
                    .arg(limit)
                    .arg(start)
                    .arg(end),
                WindowSpec::Rolling { length, width } => invocation
                    .key(format!("{}:w{i}:r", keys.prefix))
                    .arg("r")
                    .arg(limit)
                    .arg(length)
                    .arg(width),
                WindowSpec::Lifetime => invocation
                    .key(format!("{}:w{i}:l", keys.prefix))
                    .arg("l")
                    .arg(limit)
                    .arg(0)
                    .arg(0),
            };
        }
        for arg in args {
            invocation.arg(arg);
        }
        let mut connection = connection.clone();
        let sent_at = local_now();
        // A connection reconnecting to a server that is down can take many seconds per
        // command: the budget fails closed within its own timeout instead.
        let reply: Vec<i64> =
            match tokio::time::timeout(timeout, invocation.invoke_async(&mut connection)).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => return Err(failed(e.to_string())),
                Err(_) => return Err(failed(format!("no answer within {timeout:?}"))),
            };
        let (Some(&status), Some(&redis_now), Some(&found)) =
            (reply.first(), reply.get(1), reply.get(2))
        else {
            return Err(failed(String::from(
                "malformed reply from the budget script",
            )));
        };
        let local = sent_at + (local_now() - sent_at) / 2;
        skew.store(redis_now - local, Ordering::Relaxed);
        if status == -2 {
            tracing::error!(prefix = %keys.prefix, expected, found, "fleet budget state vanished");
            return Err(vanished(op, &keys.prefix, expected, found));
        }
        epoch
            .seen
            .store(u64::try_from(found).unwrap_or(0), Ordering::Relaxed);
        epoch.seen_at.store(local_now(), Ordering::Relaxed);
        if status == -1 {
            now = redis_now;
            continue;
        }
        // The epoch is this module's business: callers see `status, now, values...`.
        let mut reply = reply;
        reply.remove(2);
        return Ok(reply);
    }
    Err(failed(String::from(
        "Redis time kept leaving the calendar period",
    )))
}
