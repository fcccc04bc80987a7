//! The Redis side of fleet mode: the GCRA script and the one round trip that runs it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::Script;
use redis::aio::ConnectionManager;

use super::error::StoreUnavailable;
use crate::clock::duration_nanos;
use crate::quota::Quota;

const SCRIPT: &str = include_str!("gcra.lua");

/// What Redis decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Every quota admitted it; the permits are taken. With a lease, the further requests
    /// granted, each due this long after Redis decided.
    Admitted(Vec<Duration>),
    /// Refused; every quota would admit it after this long.
    Wait(Duration),
}

/// One limiter's keys in Redis, the connection, and what it remembers of recent failures.
pub(crate) struct Store {
    connection: ConnectionManager,
    script: Script,
    /// `{prefix}`: a hash tag keeps every key of one limiter in one Redis Cluster slot.
    prefix: String,
    timeout: Duration,
    /// After a failure, how long round trips are not tried (each would wait for the timeout).
    down_for: Duration,
    origin: Instant,
    /// Nanoseconds since `origin` until which the store is taken as down (0: up).
    down_until: AtomicU64,
    last_error: Mutex<String>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("down_for", &self.down_for)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub(crate) fn new(
        connection: ConnectionManager,
        prefix: &str,
        timeout: Duration,
        down_for: Duration,
    ) -> Self {
        Self {
            connection,
            script: Script::new(SCRIPT),
            prefix: format!("{{{prefix}}}"),
            timeout,
            down_for,
            origin: Instant::now(),
            down_until: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
        }
    }

    /// The key holding quota `index`'s theoretical arrival time.
    pub(crate) fn key(&self, index: usize) -> String {
        format!("{}:{index}", self.prefix)
    }

    /// Takes `cost` permits from every quota in Redis, or none (one `EVALSHA`, loaded again
    /// if Redis answers `NOSCRIPT`). If admitted, also takes up to `requests - 1` further
    /// requests' worth, each at its own due time within `horizon`.
    pub(crate) async fn acquire(
        &self,
        cost: u32,
        quotas: &[Quota],
        requests: u32,
        horizon: Duration,
    ) -> Result<Decision, StoreUnavailable> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .arg(cost)
            .arg(requests.max(1))
            .arg(u64::try_from(horizon.as_micros()).unwrap_or(u64::MAX / 2));
        for (index, quota) in quotas.iter().enumerate() {
            invocation
                .key(self.key(index))
                // Rounded up: never faster than the quota.
                .arg(quota.interval_nanos().div_ceil(1_000).max(1))
                .arg(quota.burst());
        }
        let mut connection = self.connection.clone();
        // A connection manager reconnecting to a server that is down may take long per
        // command: the limiter decides within its own timeout instead.
        let reply: Vec<i64> = match tokio::time::timeout(
            self.timeout,
            invocation.invoke_async(&mut connection),
        )
        .await
        {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(self.failed(e)),
            Err(_) => return Err(self.failed(format!("no answer within {:?}", self.timeout))),
        };
        match reply.as_slice() {
            [1, _, _, leased @ ..] => {
                self.down_until.store(0, Relaxed);
                let due = |&offset: &i64| Duration::from_micros(u64::try_from(offset).unwrap_or(0));
                Ok(Decision::Admitted(leased.iter().map(due).collect()))
            }
            [0, wait, ..] => {
                self.down_until.store(0, Relaxed);
                let micros = u64::try_from(*wait).unwrap_or(1).max(1);
                Ok(Decision::Wait(Duration::from_micros(micros)))
            }
            _ => Err(self.failed("malformed reply from the limiter script")),
        }
    }

    fn failed(&self, error: impl fmt::Display) -> StoreUnavailable {
        let message = error.to_string();
        let now = duration_nanos(self.origin.elapsed());
        self.down_until.store(
            now.saturating_add(duration_nanos(self.down_for)).max(1),
            Relaxed,
        );
        tracing::warn!(
            prefix = %self.prefix,
            error = %message,
            "rate limiter store unavailable"
        );
        *self.last_error.lock() = message.clone();
        StoreUnavailable::new(super::error::LAYER, "acquire", message)
    }

    /// The error to answer with, without a round trip, while the store is taken as down.
    pub(crate) fn known_down(&self) -> Option<StoreUnavailable> {
        let until = self.down_until.load(Relaxed);
        if until == 0 || duration_nanos(self.origin.elapsed()) >= until {
            return None;
        }
        let last = self.last_error.lock().clone();
        Some(StoreUnavailable::new(
            super::error::LAYER,
            "acquire (store down)",
            last,
        ))
    }

    /// How long a caller refused because the store is down should wait before trying again.
    pub(crate) fn down_for(&self) -> Duration {
        self.down_for
    }
}
