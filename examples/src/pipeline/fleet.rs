//! Fleet mode (`--redis URL[,URL...]`): the pipeline's rate limit and credit budget kept in
//! Redis (one server, or a Redis Cluster given by several node URLs) and shared by every
//! pipeline process that crawls the same upstream with the same key.

use std::fmt;
use std::io;
use std::path::Path;
use std::time::Duration;

use tollway::budget::LedgerBuilder;
use tollway::budget::store::DynStore;
use tollway::limiter::QuantaClock;
use tollway::limiter::fleet::RedisStore;
use tollway::limiter::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use tollway::limiter::redis::cluster::ClusterClient;
use tollway::limiter::redis::cluster_async::ClusterConnection;
use tollway::limiter::redis::{Client, Cmd, Pipeline, RedisError, RedisFuture, Value};
use tollway::{ClientStackLayer, breaker::BreakerHandle, budget::Ledger, cache::CacheLayer};
use tollway_core::StoreUnavailable;

/// The pipeline's layer: its limiter in this process, or in Redis (fleet mode). The two are
/// different types (the in-memory limiter is compiled without fleet mode); this names either,
/// for their handles.
#[derive(Debug, Clone)]
pub enum StackLayer {
    /// The limiter in this process.
    Local(ClientStackLayer<QuantaClock, DynStore>),
    /// The limiter in Redis.
    Fleet(ClientStackLayer<QuantaClock, DynStore, RedisStore>),
}

impl StackLayer {
    /// The breaker's handle.
    pub fn breaker(&self) -> Option<BreakerHandle> {
        match self {
            Self::Local(layer) => layer.breaker(),
            Self::Fleet(layer) => layer.breaker(),
        }
    }

    /// The budget's ledger.
    pub fn ledger(&self) -> Option<&Ledger<DynStore>> {
        match self {
            Self::Local(layer) => layer.ledger(),
            Self::Fleet(layer) => layer.ledger(),
        }
    }

    /// The cache.
    pub fn cache(&self) -> Option<&CacheLayer> {
        match self {
            Self::Local(layer) => layer.cache(),
            Self::Fleet(layer) => layer.cache(),
        }
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &tollway::retry::RetryPolicy {
        match self {
            Self::Local(layer) => layer.retry_policy(),
            Self::Fleet(layer) => layer.retry_policy(),
        }
    }
}

/// The longest the pipeline waits for Redis to accept its first connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a fleet's limiter and ledger live: a connection to Redis and the key prefix the
/// pipeline processes of one fleet share.
///
/// Cheap to clone (the connection is shared). See [`fleet_prefix`] for the prefix.
#[derive(Clone)]
pub struct Fleet {
    connection: RedisConnection,
    prefix: String,
}

/// A connection to one Redis server or to a Redis Cluster, chosen by the URLs given: what
/// `--redis URL[,URL...]` connects to. Both kinds are `ConnectionLike + Clone + Send + Sync`,
/// which is all the limiter's and the ledger's Redis stores ask for.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server (one URL).
    Single(ConnectionManager),
    /// A cluster (several node URLs, comma-separated).
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConnection::Single",
            Self::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The URLs of `--redis`: one server's, or several cluster nodes' (comma-separated).
fn redis_urls(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

impl RedisConnection {
    /// Connects to `urls`: one URL is a server, several (comma-separated) are the nodes of a
    /// cluster, within [`CONNECT_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// [`StoreUnavailable`] when a URL is not a Redis URL or no connection is made in time.
    pub async fn connect(urls: &str) -> Result<Self, StoreUnavailable> {
        let failed = |error: RedisError| StoreUnavailable::new("fleet", "connect", error);
        let too_slow = || {
            StoreUnavailable::new(
                "fleet",
                "connect",
                format!("no connection within {CONNECT_TIMEOUT:?}"),
            )
        };
        let nodes = redis_urls(urls);
        if let [url] = nodes.as_slice() {
            let client = Client::open(*url).map_err(failed)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_number_of_retries(1);
            let connection = tokio::time::timeout(
                CONNECT_TIMEOUT,
                ConnectionManager::new_with_config(client, config),
            )
            .await
            .map_err(|_| too_slow())?
            .map_err(failed)?;
            return Ok(Self::Single(connection));
        }
        let client = ClusterClient::builder(nodes)
            .connection_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(failed)?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_connection())
            .await
            .map_err(|_| too_slow())?
            .map_err(failed)?;
        Ok(Self::Cluster(connection))
    }
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Connects to the Redis server at `redis_url` (or the cluster whose nodes it lists,
    /// comma-separated) for the fleet of processes that crawl `base_url` with `key` (the prefix
    /// is [`fleet_prefix`]`(base_url, key)`).
    ///
    /// # Errors
    ///
    /// [`StoreUnavailable`] when the URL is not a Redis URL or no connection is made within
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(
        redis_url: &str,
        base_url: &str,
        key: &str,
    ) -> Result<Self, StoreUnavailable> {
        Self::connect_with_prefix(redis_url, fleet_prefix(base_url, key)).await
    }

    /// Connects to the Redis server at `redis_url`, with a prefix of the caller's choosing.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with_prefix(
        redis_url: &str,
        prefix: impl Into<String>,
    ) -> Result<Self, StoreUnavailable> {
        let connection = RedisConnection::connect(redis_url).await?;
        Ok(Self {
            connection,
            prefix: prefix.into(),
        })
    }

    /// The fleet's key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix of the limiter's keys.
    pub fn limiter_prefix(&self) -> String {
        format!("{}:limit", self.prefix)
    }

    /// The prefix of the ledger's keys.
    pub fn budget_prefix(&self) -> String {
        format!("{}:budget", self.prefix)
    }

    /// The connection (a clone of the shared one).
    pub fn connection(&self) -> RedisConnection {
        self.connection.clone()
    }
}

/// Where a crawl folder keeps the epoch of the fleet budget it joined, so that a later run of
/// the same crawl refuses a fleet whose state vanished from Redis instead of spending its
/// budget again from zero.
pub const EPOCH_FILE: &str = "fleet.epoch";

impl Fleet {
    /// The fleet's ledger built by `builder`: rejoining the fleet whose epoch `dir` recorded in
    /// an earlier run ([`EPOCH_FILE`]), so that a fleet whose Redis lost its data is refused.
    pub fn budget_ledger(&self, builder: LedgerBuilder, dir: &Path) -> Ledger<DynStore> {
        match read_epoch(dir) {
            Some(epoch) => builder
                .redis_rejoin(self.connection(), self.budget_prefix(), epoch)
                .to_dyn(),
            None => builder
                .redis(self.connection(), self.budget_prefix())
                .to_dyn(),
        }
    }

    /// Records the fleet budget's `epoch` in `dir` for later runs.
    ///
    /// # Errors
    ///
    /// The file cannot be written.
    pub fn remember_epoch(dir: &Path, epoch: Option<u64>) -> io::Result<()> {
        match epoch {
            Some(epoch) if read_epoch(dir) != Some(epoch) => tollway_core::durable::write_atomic(
                dir.join(EPOCH_FILE),
                format!("{epoch}\n").as_bytes(),
            ),
            _ => Ok(()),
        }
    }
}

fn read_epoch(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(EPOCH_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Checks that `urls` is one Redis URL or several, comma-separated, without connecting.
///
/// # Errors
///
/// Why it is not.
pub fn check_redis_url(urls: &str) -> Result<(), String> {
    let nodes = redis_urls(urls);
    if nodes.is_empty() {
        return Err(String::from("no URL"));
    }
    for url in nodes {
        Client::open(url).map_err(|e| format!("{url}: {e}"))?;
    }
    Ok(())
}

/// The key prefix of the fleet crawling `base_url` with `key`:
/// `tollway-pipeline:<host_port>:<digest of the key>`.
///
/// Every process that crawls the same API with the same key gets the same prefix, so they
/// share one rate limit and one budget, whatever machine they run on; another key (another
/// account, with its own rate) gets another. The key itself never reaches Redis, only a stable
/// 64-bit FNV-1a digest of it (the same in every build, unlike `std`'s hasher). Only
/// `[A-Za-z0-9.-]` survive from the URL, so the prefix never holds the braces of a Redis hash
/// tag.
pub fn fleet_prefix(base_url: &str, key: &str) -> String {
    let host: String = base_url
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("tollway-pipeline:{host}:{:016x}", fnv1a(key.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_prefix_per_api_and_key_and_the_key_stays_secret() {
        let a = fleet_prefix("http://API.example:8080/", "secret-key");
        assert_eq!(a, fleet_prefix("http://api.example:8080", "secret-key"));
        assert!(a.starts_with("tollway-pipeline:api.example_8080:"), "{a}");
        assert!(!a.contains("secret"), "{a}");
        assert_ne!(a, fleet_prefix("http://api.example:8080", "other-key"));
        assert_ne!(a, fleet_prefix("http://api.example:8081", "secret-key"));
        let odd = fleet_prefix("http://h{x}:1", "k");
        assert!(!odd.contains('{') && !odd.contains('}'), "{odd}");
        // Stable across builds: the digest is FNV-1a, not std's hasher.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn redis_urls_are_checked_without_connecting() {
        assert!(check_redis_url("redis://127.0.0.1:1/").is_ok());
        assert!(check_redis_url("http://127.0.0.1/").is_err());
        assert!(check_redis_url("not a url").is_err());
        assert!(check_redis_url("redis://127.0.0.1:1/, redis://127.0.0.1:2/").is_ok());
        assert!(check_redis_url("redis://127.0.0.1:1/,http://x/").is_err());
        assert!(check_redis_url(" , ").is_err());
    }
}
