//! Server fleets end to end: two `server` example processes started with the same `--redis`
//! (one Redis server, then a 3-node Redis Cluster) behind no balancer but a load generator that
//! alternates between them, from one client, over real sockets. Together they must admit what
//! one instance would (the burst, plus what the rate refills during the run: within 2%), and
//! each must answer its refusals with 429, `Retry-After` and the policy headers.
//!
//! Redis is `TOLLWAY_REDIS_URL` / `TOLLWAY_REDIS_CLUSTER_URLS`, or servers started here on free
//! loopback ports; without them the tests print a notice and pass, unless
//! `TOLLWAY_REQUIRE_REDIS=1`.
#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use axum::body::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tollway_test_support::{TestCluster, TestRedis, random_prefix};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The per-IP limit: 100 at once, then one a second.
const BURST: u64 = 100;
const RATE: u64 = 1;
/// Requests the load generator sends, alternating between the instances.
const SENT: usize = 300;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(redis: &str, prefix: &str) -> Result<Server, BoxError> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--addr", "127.0.0.1:0", "--rate", &RATE.to_string()])
        .args(["--burst", &BURST.to_string(), "--redis", redis])
        .args(["--redis-prefix", prefix])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut server = Server {
        child,
        url: String::new(),
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    server.url = line
        .trim()
        .strip_prefix("server listening on ")
        .ok_or_else(|| format!("unexpected first line {line:?}"))?
        .to_owned();
    Ok(server)
}

async fn two_instances_admit_what_one_would(redis: &str) -> Result<(), BoxError> {
    let prefix = random_prefix();
    let servers = [start(redis, &prefix)?, start(redis, &prefix)?];
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..SENT {
        let url = format!("{}/hello", servers[i % 2].url);
        let client = client.clone();
        tasks.spawn(async move {
            let response = client
                .request(Request::get(url).body(Empty::new())?)
                .await?;
            let (parts, body) = response.into_parts();
            let _ = body.collect().await?;
            Ok::<_, BoxError>((i % 2, parts))
        });
        // A steady load from one client, a few requests at a time.
        if i % 8 == 7 {
            tokio::task::yield_now().await;
        }
    }
    let mut admitted = [0_u64; 2];
    let mut refused = [0_u64; 2];
    while let Some(result) = tasks.join_next().await {
        let (instance, parts) = result??;
        if parts.status == StatusCode::OK {
            admitted[instance] += 1;
            continue;
        }
        assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
        refused[instance] += 1;
        let retry: u64 = parts.headers["retry-after"].to_str()?.parse()?;
        assert!((1..=1).contains(&retry), "{retry}");
        assert_eq!(parts.headers["x-ratelimit-remaining"], "0");
        assert_eq!(
            parts.headers["ratelimit-policy"],
            format!(r#""per-ip";q={BURST};w={}"#, BURST / RATE).as_str()
        );
    }
    let elapsed = started.elapsed();
    let total = admitted[0] + admitted[1];
    eprintln!(
        "{SENT} requests in {elapsed:?}: admitted {admitted:?}, refused {refused:?} by instance"
    );
    // One instance admits the burst and what the rate refills meanwhile: with 2% to spare.
    let one = BURST + RATE * elapsed.as_secs().saturating_add(1);
    assert!(total >= BURST, "{total} < {BURST}");
    assert!(
        total <= one + one / 50,
        "{total} admitted: more than one instance would ({one})"
    );
    assert!(
        refused[0] > 0 && refused[1] > 0,
        "both instances refuse: {refused:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_redis_admit_what_one_would() -> Result<(), BoxError> {
    let Some(server) = TestRedis::shared_or_own().await else {
        return Ok(());
    };
    two_instances_admit_what_one_would(server.url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_a_cluster_admit_what_one_would() -> Result<(), BoxError> {
    let Some(cluster) = TestCluster::shared_or_own().await else {
        return Ok(());
    };
    two_instances_admit_what_one_would(&cluster.urls_joined()).await
}
