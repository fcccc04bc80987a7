//! The Redis side of fleet mode: the GCRA script, the connection it runs on (any async
//! connection, a cluster's included), and what the store remembers of recent failures.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};

use super::error::{LAYER, StoreUnavailable};
use crate::clock::duration_nanos;
use crate::quota::Quota;

/// The script: an admission (op 1) or a pause shared with the fleet (op 2).
static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("gcra.lua")));

const ACQUIRE: u64 = 1;
const PAUSE: u64 = 2;

type Reply = Pin<Box<dyn Future<Output = RedisResult<Vec<i64>>> + Send>>;

/// Any async Redis connection that can be cloned and shared, behind one type: a script runs
/// on a clone of it (`EVALSHA`, and `SCRIPT LOAD` then again on `NOSCRIPT`, as after a
/// failover to a node that never ran it).
pub(crate) trait Connection: Send + Sync + 'static {
    fn eval(&self, script: &'static Script, keys: &[String], args: Vec<u64>) -> Reply;
}

/// `connection`, behind [`Connection`].
pub(crate) fn erase<Conn: ConnectionLike + Clone + Send + Sync + 'static>(
    connection: Conn,
) -> Box<dyn Connection> {
    Box::new(Erased(connection))
}

struct Erased<Conn>(Conn);

impl<Conn: ConnectionLike + Clone + Send + Sync + 'static> Connection for Erased<Conn> {
    fn eval(&self, script: &'static Script, keys: &[String], args: Vec<u64>) -> Reply {
        let mut connection = self.0.clone();
        let keys = keys.to_vec();
        Box::pin(async move {
            let mut invocation = script.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            for arg in args {
                invocation.arg(arg);
            }
            invocation.invoke_async(&mut connection).await
        })
    }
}

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
pub(crate) struct Client {
    connection: Box<dyn Connection>,
    /// `{prefix}`: a hash tag keeps every key of one limiter in one Redis Cluster slot, so one
    /// script may read and write them all.
    prefix: String,
    /// Quota `i`'s key is `keys[i]`.
    keys: Vec<String>,
    timeout: Duration,
    /// After a failure, how long round trips are not tried (each would wait for the timeout).
    down_for: Duration,
    origin: Instant,
    /// Nanoseconds since `origin` until which the store is taken as down (0: up).
    down_until: AtomicU64,
    last_error: Mutex<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("down_for", &self.down_for)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn new<Conn: ConnectionLike + Clone + Send + Sync + 'static>(
        connection: Conn,
        prefix: &str,
        quotas: usize,
        timeout: Duration,
        down_for: Duration,
    ) -> Self {
        let prefix = format!("{{{prefix}}}");
        Self {
            connection: erase(connection),
            keys: (0..quotas).map(|i| format!("{prefix}:{i}")).collect(),
            prefix,
            timeout,
            down_for,
            origin: Instant::now(),
            down_until: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
        }
    }

    fn args(op: u64, cost: u32, requests: u32, horizon: u64, quotas: &[Quota]) -> Vec<u64> {
        let mut args = Vec::with_capacity(4 + 2 * quotas.len());
        args.extend([op, u64::from(cost), u64::from(requests.max(1)), horizon]);
        for quota in quotas {
            // Rounded up: never faster than the quota.
            args.push(quota.interval_nanos().div_ceil(1_000).max(1));
            args.push(u64::from(quota.burst()));
        }
        args
    }

    /// Runs the script within the timeout; a failure marks the store down.
    async fn run(&self, args: Vec<u64>, what: &'static str) -> Result<Vec<i64>, StoreUnavailable> {
        // A connection reconnecting to a server that is down may take long per command: the
        // limiter decides within its own timeout instead.
        match tokio::time::timeout(
            self.timeout,
            self.connection.eval(&SCRIPT, &self.keys, args),
        )
        .await
        {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(self.failed(e, what)),
            Err(_) => Err(self.failed(format!("no answer within {:?}", self.timeout), what)),
        }
    }

    /// Takes `cost` permits from every quota in Redis, or none. If admitted, also takes up to
    /// `requests - 1` further requests' worth, each at its own due time within `horizon`.
    pub(crate) async fn acquire(
        &self,
        cost: u32,
        quotas: &[Quota],
        requests: u32,
        horizon: Duration,
    ) -> Result<Decision, StoreUnavailable> {
        let horizon = script_micros(horizon);
        let reply = self
            .run(
                Self::args(ACQUIRE, cost, requests, horizon, quotas),
                "acquire",
            )
            .await?;
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
            _ => Err(self.failed("malformed reply from the limiter script", "acquire")),
        }
    }

    /// Empties every quota's bucket in Redis until `pause` from now (Redis's clock), so that
    /// every process of the fleet waits it out: a 429's `Retry-After` seen by one.
    pub(crate) async fn pause(
        &self,
        pause: Duration,
        quotas: &[Quota],
    ) -> Result<(), StoreUnavailable> {
        let micros = script_micros(pause);
        self.run(Self::args(PAUSE, 1, 1, micros, quotas), "pause")
            .await
            .map(drop)
    }

    fn failed(&self, error: impl fmt::Display, what: &'static str) -> StoreUnavailable {
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
        StoreUnavailable::new(LAYER, what, message)
    }

    /// The error to answer with, without a round trip, while the store is taken as down.
    pub(crate) fn known_down(&self) -> Option<StoreUnavailable> {
        let until = self.down_until.load(Relaxed);
        if until == 0 || duration_nanos(self.origin.elapsed()) >= until {
            return None;
        }
        let last = self.last_error.lock().clone();
        Some(StoreUnavailable::new(LAYER, "acquire (store down)", last))
    }

    /// How long a caller refused because the store is down should wait before trying again.
    pub(crate) fn down_for(&self) -> Duration {
        self.down_for
    }
}

/// The longest span the script is given, in microseconds: 2^52 (about 142 years). The script
/// computes in doubles, exact below 2^53; a span near 2^63 (a pause of `Duration::MAX`) would
/// round across the integer range and come back as a negative wait.
const MAX_SCRIPT_MICROS: u64 = 1 << 52;

fn script_micros(span: Duration) -> u64 {
    u64::try_from(span.as_micros())
        .map_or(MAX_SCRIPT_MICROS, |micros| micros.min(MAX_SCRIPT_MICROS))
}
