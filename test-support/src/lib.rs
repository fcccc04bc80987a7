//! Test helpers shared by the tollway crates. Not published; used as a dev-dependency only.
//!
//! [`metrics::CapturingRecorder`] keeps what layers report through the `metrics` facade, for
//! tests to read.
//!
//! [`TempDir`] and [`run_together`] serve end-to-end tests of binaries.
//!
//! [`TestCluster`] gives one a 3-node Redis Cluster (`TOLLWAY_REDIS_CLUSTER_URLS`, or three
//! servers started here).
//!
//! [`TestRedis`] gives a fleet-mode test a real `redis-server`: the shared one named by
//! `TOLLWAY_REDIS_URL` (which `.ci/run` starts), or one started here on a free loopback port and
//! stopped on drop. Without either, the test prints a notice and passes, unless
//! `TOLLWAY_REQUIRE_REDIS=1`, under which a missing server fails the test.
//!
//! ```no_run
//! # async fn test() {
//! use tollway_test_support::TestRedis;
//!
//! let Some(server) = TestRedis::shared_or_own().await else {
//!     return; // no Redis here: the notice is printed
//! };
//! let connection = server.connect().await;
//! let prefix = tollway_test_support::random_prefix();
//! # drop((connection, prefix));
//! # }
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::aio::ConnectionManager;

mod cluster;
pub mod metrics;
mod process;

pub use cluster::{REDIS_CLUSTER_URLS_VAR, TestCluster, connect_cluster};
pub use process::{TempDir, run_together};

/// The variable naming a shared Redis server (`redis://127.0.0.1:PORT/`).
pub const REDIS_URL_VAR: &str = "TOLLWAY_REDIS_URL";
/// The variable that turns a missing Redis server into a failure (`1`).
pub const REQUIRE_REDIS_VAR: &str = "TOLLWAY_REQUIRE_REDIS";

/// A Redis server for one test.
#[derive(Debug)]
pub struct TestRedis {
    url: String,
    own: Option<OwnServer>,
}

#[derive(Debug)]
struct OwnServer {
    child: Child,
    dir: PathBuf,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestRedis {
    /// The shared server if `TOLLWAY_REDIS_URL` is set, else one of this test's own.
    /// `None` (after a printed notice) when neither can be had.
    pub async fn shared_or_own() -> Option<Self> {
        if let Ok(url) = std::env::var(REDIS_URL_VAR) {
            return Some(Self { url, own: None });
        }
        Self::own().await
    }

    /// A server this test owns, so it may stop it (`SHUTDOWN NOSAVE`) to test failures.
    pub async fn own() -> Option<Self> {
        Self::own_with(&[]).await
    }

    /// [`own`](Self::own), started with extra `redis-server` arguments: e.g.
    /// `["--rename-command", "PEXPIRETIME", ""]` to stand in for a server too old to have a
    /// command.
    pub async fn own_with(args: &[&str]) -> Option<Self> {
        let port = match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(_) => return skip("no free loopback port"),
        };
        let dir =
            std::env::temp_dir().join(format!("tollway-test-redis-{}-{port}", std::process::id()));
        if std::fs::create_dir_all(&dir).is_err() {
            return skip("no temp dir");
        }
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            let _ = std::fs::remove_dir_all(&dir);
            return skip("redis-server could not be started");
        };
        let server = Self {
            url: format!("redis://127.0.0.1:{port}/"),
            own: Some(OwnServer { child, dir }),
        };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        drop(server);
        skip("redis-server did not start listening")
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this test started the server (and so may stop it).
    pub fn is_own(&self) -> bool {
        self.own.is_some()
    }

    /// A connection manager to the server.
    ///
    /// # Panics
    ///
    /// If the server does not answer: a test cannot go on without it.
    pub async fn connect(&self) -> ConnectionManager {
        connect(&self.url).await
    }
}

/// A connection manager to `url`.
///
/// # Panics
///
/// If the URL is invalid or the server does not answer.
pub async fn connect(url: &str) -> ConnectionManager {
    let client = redis::Client::open(url).expect("a valid Redis URL");
    ConnectionManager::new(client)
        .await
        .expect("the Redis server answers")
}

/// Whether a missing Redis server must fail the test (`TOLLWAY_REQUIRE_REDIS=1`).
pub fn redis_required() -> bool {
    std::env::var(REQUIRE_REDIS_VAR).is_ok_and(|v| v == "1")
}

/// A key prefix no other test (or test process) uses.
pub fn random_prefix() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    format!("tollway-test-{:016x}", hasher.finish())
}

fn skip(why: &str) -> Option<TestRedis> {
    skip_with(why)
}

#[allow(clippy::print_stderr)]
fn skip_with<T>(why: &str) -> Option<T> {
    assert!(!redis_required(), "{REQUIRE_REDIS_VAR}=1 but {why}");
    eprintln!("skipping Redis test: {why} (set {REDIS_URL_VAR} or install redis-server)");
    None
}

/// Waits until `parties` callers (in any processes) have reached the barrier named `key` on the
/// Redis server at `url`, so that worker processes really compete.
///
/// # Panics
///
/// If Redis fails, or the others do not arrive within about ten seconds.
pub async fn redis_barrier(url: &str, key: &str, parties: u64) {
    let mut connection = connect(url).await;
    let _: u64 = redis::cmd("INCR")
        .arg(key)
        .query_async(&mut connection)
        .await
        .expect("INCR");
    for _ in 0..2_000 {
        let arrived: u64 = redis::cmd("GET")
            .arg(key)
            .query_async(&mut connection)
            .await
            .expect("GET");
        if arrived >= parties {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("only some of the {parties} parties reached the barrier {key}");
}

/// Runs `count` copies of the current test binary as worker processes, each running only the
/// test `test_name` with the environment `env(worker_index)`, and waits for them all. Returns
/// each worker's stderr, in order. A multi-process test re-executes itself this way and tells
/// the roles apart by an environment variable.
///
/// # Panics
///
/// If a worker cannot be started or exits unsuccessfully (its stderr is in the message).
pub async fn run_workers(
    test_name: &str,
    count: usize,
    env: impl Fn(usize) -> Vec<(&'static str, String)>,
) -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary");
    let children: Vec<Child> = (0..count)
        .map(|worker| {
            Command::new(&exe)
                .args(["--exact", test_name, "--nocapture", "--test-threads", "1"])
                .envs(env(worker))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a worker process")
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| child.wait_with_output().expect("the worker's output"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("waiting for the workers");
    outputs
        .into_iter()
        .map(|output| {
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(output.status.success(), "a worker failed:\n{stderr}");
            stderr
        })
        .collect()
}
