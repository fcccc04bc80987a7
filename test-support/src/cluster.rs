//! [`TestCluster`]: a 3-node Redis Cluster for fleet-mode tests.
//!
//! The nodes named by `TOLLWAY_REDIS_CLUSTER_URLS` (comma-separated, which `.ci/run` starts), or
//! three `redis-server --cluster-enabled yes` started here on free loopback ports (data and bus
//! ports both picked free), joined with `redis-cli --cluster create ... --cluster-replicas 0`,
//! and stopped on drop. Without either, the test prints a notice and passes, unless
//! `TOLLWAY_REQUIRE_REDIS=1`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use crate::skip_with;

/// The variable naming a shared cluster's nodes (`redis://127.0.0.1:P1/,redis://...`).
pub const REDIS_CLUSTER_URLS_VAR: &str = "TOLLWAY_REDIS_CLUSTER_URLS";

/// The nodes of one cluster.
const NODES: usize = 3;

/// A Redis Cluster for one test (or one test binary).
#[derive(Debug)]
pub struct TestCluster {
    urls: Vec<String>,
    own: Vec<Node>,
    dir: Option<PathBuf>,
}

#[derive(Debug)]
struct Node {
    child: Child,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.own {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn free_port() -> Option<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()
        .map(|a| a.port())
}

impl TestCluster {
    /// The shared cluster if `TOLLWAY_REDIS_CLUSTER_URLS` is set, else one of this test's own.
    /// `None` (after a printed notice) when neither can be had.
    pub async fn shared_or_own() -> Option<Self> {
        if let Ok(urls) = std::env::var(REDIS_CLUSTER_URLS_VAR) {
            let urls: Vec<String> = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
            if !urls.is_empty() {
                return Some(Self {
                    urls,
                    own: Vec::new(),
                    dir: None,
                });
            }
        }
        Self::own().await
    }

    /// A cluster this test owns.
    pub async fn own() -> Option<Self> {
        let dir = std::env::temp_dir().join(format!(
            "tollway-test-cluster-{}-{}",
            std::process::id(),
            free_port().unwrap_or(0)
        ));
        if std::fs::create_dir_all(&dir).is_err() {
            return skip_with("no temp dir");
        }
        let mut cluster = Self {
            urls: Vec::new(),
            own: Vec::new(),
            dir: Some(dir.clone()),
        };
        let mut ports = Vec::new();
        for _ in 0..NODES {
            let (Some(port), Some(bus)) = (free_port(), free_port()) else {
                return skip_with("no free loopback port");
            };
            let node_dir = dir.join(port.to_string());
            if std::fs::create_dir_all(&node_dir).is_err() {
                return skip_with("no temp dir");
            }
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let Ok(child) = child else {
                return skip_with("redis-server could not be started");
            };
            cluster.own.push(Node { child });
            cluster.urls.push(format!("redis://127.0.0.1:{port}/"));
            ports.push(port);
        }
        for &port in &ports {
            if !listening(port).await {
                return skip_with("a cluster node did not start listening");
            }
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !created.is_ok_and(|s| s.success()) {
            return skip_with("redis-cli --cluster create failed");
        }
        if !cluster.wait_ok().await {
            return skip_with("the cluster did not reach cluster_state:ok");
        }
        Some(cluster)
    }

    /// Waits until every node says `cluster_state:ok` (slots assigned and agreed).
    async fn wait_ok(&self) -> bool {
        for _ in 0..400 {
            let mut all = true;
            for url in &self.urls {
                let info = async {
                    let client = redis::Client::open(url.as_str()).ok()?;
                    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async::<String>(&mut connection)
                        .await
                        .ok()
                };
                if !info.await.is_some_and(|i| i.contains("cluster_state:ok")) {
                    all = false;
                    break;
                }
            }
            if all {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The nodes' URLs, comma-separated (what `--redis` takes).
    pub fn urls_joined(&self) -> String {
        self.urls.join(",")
    }

    /// A cluster connection.
    ///
    /// # Panics
    ///
    /// If the cluster does not answer.
    pub async fn connect(&self) -> ClusterConnection {
        connect_cluster(&self.urls).await
    }

    /// Runs `SCRIPT FLUSH` on every node: what a failover to a node that never loaded the
    /// scripts looks like to a client (its next `EVALSHA` gets `NOSCRIPT`).
    ///
    /// # Panics
    ///
    /// If a node does not answer.
    pub async fn flush_scripts(&self) {
        for url in &self.urls {
            let client = redis::Client::open(url.as_str()).expect("a node URL");
            let mut connection = client
                .get_multiplexed_async_connection()
                .await
                .expect("the node answers");
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut connection)
                .await
                .expect("SCRIPT FLUSH");
        }
    }
}

async fn listening(port: u16) -> bool {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// A cluster connection to the cluster whose nodes include `urls`.
///
/// # Panics
///
/// If the cluster does not answer.
pub async fn connect_cluster(urls: &[String]) -> ClusterConnection {
    ClusterClient::new(urls.iter().map(String::as_str).collect::<Vec<_>>())
        .expect("valid cluster URLs")
        .get_async_connection()
        .await
        .expect("the cluster answers")
}
