//! Server fleets (features `server` and `redis`): a layer's rate limits kept in Redis, so that
//! every instance of an API behind a load balancer shares one limit per client.
//!
//! [`ServerLimiterBuilder::redis`] moves every limit of the layer to Redis: each request is one
//! Lua script run that checks every applicable limit's quotas for its key all-or-nothing on
//! Redis's clock, takes one permit from each if all admit, and answers with each policy's
//! state for the headers. Keys expire when their bucket is full again, so Redis holds only the
//! clients that owe something, and this process holds no per-client state (the layer's key
//! bound does not apply). Every key of one layer carries the hash tag `{prefix}`: a Redis
//! Cluster serves one layer from one slot. Keys are stored as `Key`s are: addresses (IPv6
//! grouped by its prefix) and 128-bit digests of text keys, the same in every process, never the
//! text itself.
//!
//! When Redis cannot be reached, times out or fails, each limit does what it was told:
//! **closed** (the default) refuses the request with `503 Service Unavailable` (the
//! [`StoreUnavailable`] error in the response's extensions, as an `Arc<StoreUnavailable>`); **open**
//! ([`Limit::fail_open_to_local`](super::Limit::fail_open_to_local)) checks the limit in this
//! process at a local quota. For a while after a failure, requests are answered that way at
//! once, without a round trip. Nothing decided locally is sent to Redis later: a request is
//! never counted twice (each check carries a deadline on Redis's clock, after which the script
//! decides nothing; the instance learns how far Redis's clock is from its own from every reply,
//! and asks once more when a reply that came back in time says the deadline had passed).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use redis::Script;
use redis::aio::ConnectionLike;
use tollway_core::StoreUnavailable;

use super::builder::ServerLimiterBuilder;
use super::key::Key;
use super::limits::Refusal;
use super::remote::{Deciding, LocalCheck, RemoteDecision, RemoteLimits, Spec};
use super::states::States;
use crate::clock::{LimiterClock, duration_nanos};
use crate::fleet::client::{Connection, erase};
use crate::gcra::SlotView;

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("fleet.lua")));

/// How long one round trip may take before it counts as a failure.
const TIMEOUT: Duration = Duration::from_millis(500);
/// After a failure, how long requests are answered without a round trip.
const DOWN_FOR: Duration = Duration::from_secs(1);

impl<C: LimiterClock + Default> ServerLimiterBuilder<C> {
    /// Keeps every rate limit of the layer in Redis under keys that start with `{prefix}`,
    /// shared by every instance (in any process, on any machine) built with the same prefix
    /// and the same limits: one limit per client across a fleet of servers. See
    /// [`fleet`](crate::server::fleet) for what happens when Redis fails.
    ///
    /// `connection` is any `redis::aio::ConnectionLike + Clone + Send + Sync` (a
    /// `ConnectionManager`, a cluster's `ClusterConnection`). Needs a tokio runtime.
    #[must_use]
    pub fn redis<Conn>(mut self, connection: Conn, prefix: impl AsRef<str>) -> Self
    where
        Conn: ConnectionLike + Clone + Send + Sync + 'static,
    {
        let connection: Arc<dyn Connection> = Arc::from(erase(connection));
        let prefix = format!("{{{}}}", prefix.as_ref());
        self.remote = Some(Box::new(move |specs, fallback| {
            Arc::new(RedisLimits {
                connection,
                prefix,
                specs,
                fallback,
                origin: Instant::now(),
                down_until: AtomicU64::new(0),
                last_error: Mutex::new(String::new()),
                skew_us: AtomicI64::new(0),
            })
        }));
        self
    }
}

/// The layer's limits in Redis, and the local limits of those that fail open.
struct RedisLimits {
    connection: Arc<dyn Connection>,
    prefix: String,
    specs: Vec<Spec>,
    fallback: Box<dyn LocalCheck>,
    origin: Instant,
    /// Nanoseconds since `origin` until which the store is taken as down (0: up).
    down_until: AtomicU64,
    last_error: Mutex<String>,
    /// Redis's clock minus ours, in microseconds, from the last reply.
    skew_us: AtomicI64,
}

/// This machine's wall clock, in microseconds since the Unix epoch.
fn local_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2))
}

/// A key as Redis names it: the same in every process.
fn key_name(key: &Key) -> String {
    match key {
        Key::Global => String::from("g"),
        Key::Ip(ip) => format!("ip:{ip}"),
        Key::Text(digest) => format!("t:{}", digest.hex()),
    }
}

impl RedisLimits {
    /// The last instant (Redis time) at which the script may still decide a request sent at
    /// `sent` (our time): after it, this instance has answered without Redis.
    fn deadline(&self, sent: i64) -> u64 {
        let deadline = sent
            .saturating_add(self.skew_us.load(Relaxed))
            .saturating_add(timeout_micros());
        u64::try_from(deadline).unwrap_or(0)
    }

    fn known_down(&self) -> Option<StoreUnavailable> {
        let until = self.down_until.load(Relaxed);
        if until == 0 || duration_nanos(self.origin.elapsed()) >= until {
            return None;
        }
        let last = self.last_error.lock().clone();
        Some(StoreUnavailable::new(
            "server rate limiter",
            "check (store down)",
            last,
        ))
    }

    fn failed(&self, message: String) -> StoreUnavailable {
        let now = duration_nanos(self.origin.elapsed());
        self.down_until
            .store(now.saturating_add(duration_nanos(DOWN_FOR)).max(1), Relaxed);
        tracing::warn!(prefix = %self.prefix, error = %message, "server rate limiter store unavailable");
        *self.last_error.lock() = message.clone();
        StoreUnavailable::new("server rate limiter", "check", message)
    }

    /// The answer while the store is down: 503 if a closed limit applies, else the local
    /// limits.
    fn without_store(
        &self,
        keys: &[Option<Key>],
        want_state: bool,
        error: StoreUnavailable,
    ) -> RemoteDecision {
        let closed = keys
            .iter()
            .zip(&self.specs)
            .any(|(key, spec)| key.is_some() && !spec.fails_open);
        if closed {
            return RemoteDecision::Unavailable(error);
        }
        let mut states = States::default();
        let refusal = self.fallback.check_keys(keys, want_state, &mut states);
        RemoteDecision::Decided(refusal, states)
    }
}

impl RemoteLimits for RedisLimits {
    fn decide(self: Arc<Self>, keys: Vec<Option<Key>>, want_state: bool) -> Deciding {
        if let Some(error) = self.known_down() {
            let decision = self.without_store(&keys, want_state, error);
            return Box::pin(std::future::ready(decision));
        }
        let mut names = Vec::new();
        // The first argument is the deadline, set per round trip (see `deadline`).
        let mut args = vec![0];
        let mut policies = Vec::new();
        for (key, spec) in keys.iter().zip(&self.specs) {
            let Some(key) = key else { continue };
            let name = key_name(key);
            for (i, &(interval, burst)) in spec.quotas.iter().enumerate() {
                let policy = spec.first_policy + i;
                names.push(format!("{}:{policy}:{name}", self.prefix));
                args.extend([interval, burst]);
                policies.push(policy);
            }
        }
        if names.is_empty() {
            return Box::pin(std::future::ready(RemoteDecision::Decided(
                None,
                States::default(),
            )));
        }
        let this = self;
        Box::pin(async move {
            let mut asked_again = false;
            loop {
                let sent = local_micros();
                args[0] = this.deadline(sent);
                let reply = this.connection.eval(&SCRIPT, &names, args.clone());
                let reply = match tokio::time::timeout(TIMEOUT, reply).await {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(e)) => {
                        let error = this.failed(e.to_string());
                        return this.without_store(&keys, want_state, error);
                    }
                    Err(_) => {
                        let error = this.failed(format!("no answer within {TIMEOUT:?}"));
                        return this.without_store(&keys, want_state, error);
                    }
                };
                let received = local_micros();
                if let Some(&redis_now) = reply.get(2) {
                    let local = sent + (received - sent) / 2;
                    this.skew_us.store(redis_now - local, Relaxed);
                }
                if reply.first() == Some(&-1) {
                    // Back within the timeout, yet past the deadline on Redis's clock: the
                    // clocks differ by more than this instance knew (its first request, a
                    // failover to another machine), and nothing was decided. Ask again, once,
                    // with the difference just learned.
                    if !asked_again && received.saturating_sub(sent) < timeout_micros() {
                        asked_again = true;
                        continue;
                    }
                    let error = this.failed(String::from(
                        "Redis ran the check after this instance stopped waiting for it",
                    ));
                    return this.without_store(&keys, want_state, error);
                }
                this.down_until.store(0, Relaxed);
                return decode(&reply, &policies, want_state).unwrap_or_else(|| {
                    let error = this.failed(String::from(
                        "malformed reply from the server limiter script",
                    ));
                    this.without_store(&keys, want_state, error)
                });
            }
        })
    }
}

fn timeout_micros() -> i64 {
    i64::try_from(TIMEOUT.as_micros()).unwrap_or(i64::MAX / 4)
}

/// Reads the script's reply: `{ admitted, wait, now, then per key: available, full_in, wait }`
/// (microseconds), the keys in `policies`' order.
fn decode(reply: &[i64], policies: &[usize], want_state: bool) -> Option<RemoteDecision> {
    let (&[admitted, wait, _], rest) = reply.split_first_chunk::<3>()?;
    if rest.len() != 3 * policies.len() {
        return None;
    }
    let nanos = |micros: i64| u64::try_from(micros).unwrap_or(0).saturating_mul(1_000);
    let mut states = States::default();
    let mut longest = (0, policies[0]);
    for (&policy, view) in policies.iter().zip(rest.chunks_exact(3)) {
        let view = SlotView {
            available: u64::try_from(view[0]).unwrap_or(0),
            full_in: nanos(view[1]),
            wait: nanos(view[2]),
        };
        if view.wait > longest.0 {
            longest = (view.wait, policy);
        }
        if want_state {
            states.push((policy, view));
        }
    }
    let refusal = (admitted != 1).then(|| Refusal {
        policy: longest.1,
        wait: Duration::from_nanos(nanos(wait).max(longest.0).max(1)),
    });
    Some(RemoteDecision::Decided(refusal, states))
}
