//! End-to-end fleet mode: 4 processes × 8 tasks share one Redis rate limit of `RATE` requests
//! per second in front of the upstream simulator, over real sockets, for about three seconds.
//! The simulator, which runs no tollway code, must never have seen more than `RATE` requests
//! in any one-second window, must have answered no 429, and must have served at least two
//! thirds of what the shared quota allows in the run (a floor that a stuck or serialised fleet
//! misses, and a correct one on a loaded two-core machine does not: the exact bound is the
//! one the simulator checks, from above). Two of the workers lease up to 4 requests per round trip (they take
//! larger shares: a lease reserves the next due times of the shared schedule); the simulator
//! must see the same bound.
//!
//! The test re-executes its own binary as the workers (`TOLLWAY_FLEET_ROLE=worker`). Redis is
//! `TOLLWAY_REDIS_URL`, or a `redis-server` started here on a free loopback port; without
//! either the test prints a notice and passes, unless `TOLLWAY_REQUIRE_REDIS=1`.
#![allow(clippy::print_stderr)]

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tollway_examples::upstream::{DEFAULT_KEY, SEED_USER_IDS, Upstream};
use tollway_limiter::fleet::FleetLimiter;
use tollway_limiter::redis::aio::ConnectionManager;
use tollway_limiter::{LimiterLayer, Quota, RateLimiter};
use tollway_test_support::TestRedis;
use tower::{Layer, ServiceExt};

const TEST_NAME: &str = "four_processes_share_one_redis_rate_limit_and_never_exceed_it";
const PROCESSES: usize = 4;
const TASKS: usize = 8;
const RATE: u32 = 20;
const RUN: Duration = Duration::from_secs(3);

const ROLE: &str = "TOLLWAY_FLEET_ROLE";
const REDIS: &str = "TOLLWAY_FLEET_REDIS";
const UPSTREAM: &str = "TOLLWAY_FLEET_UPSTREAM";
const PREFIX: &str = "TOLLWAY_FLEET_PREFIX";
const LEASED: &str = "TOLLWAY_FLEET_LEASED";
const REPORT: &str = "fleet-worker sent=";
const IN_TIME: &str = " in_time=";

/// The fleet's limit: `RATE` per 1.04 s. Redis admits on its own clock, exactly; the 40 ms are
/// room for the spread of delivery times between processes (a request admitted first may reach
/// the server a little after one admitted later), which a fleet must leave. Half the workers
/// lease up to 4 requests per round trip, due within 200 ms.
fn limiter(connection: ConnectionManager, prefix: &str, leased: bool) -> FleetLimiter {
    let quota = Quota::per(RATE, Duration::from_millis(1_040)).burst(1);
    let builder = RateLimiter::builder(quota);
    let builder = if leased {
        builder.lease(NonZeroU32::new(4).unwrap(), Duration::from_millis(200))
    } else {
        builder
    };
    builder.redis(connection, prefix)
}

fn followers(url: &str) -> Request<Empty<Bytes>> {
    Request::get(format!(
        "{url}/v2/user/followers?user_id={}&page_id=",
        SEED_USER_IDS[0]
    ))
    .header("x-access-key", DEFAULT_KEY)
    .body(Empty::new())
    .unwrap()
}

/// One worker process: `TASKS` tasks send requests through the shared limit for `RUN`.
/// Reports how many answers it got, and how many of them within `RUN` (callers still queued
/// at the deadline are served after it).
async fn worker() {
    let redis = std::env::var(REDIS).expect("redis url");
    let upstream = std::env::var(UPSTREAM).expect("upstream url");
    let prefix = std::env::var(PREFIX).expect("prefix");
    let leased = std::env::var(LEASED).is_ok_and(|v| v == "1");
    let limiter = limiter(tollway_test_support::connect(&redis).await, &prefix, leased);
    tollway_test_support::redis_barrier(&redis, &format!("{prefix}:ready"), PROCESSES as u64).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let service = LimiterLayer::from_limiter(limiter).layer(client);
    let deadline = Instant::now() + RUN;
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let service = service.clone();
        let upstream = upstream.clone();
        tasks.spawn(async move {
            let (mut sent, mut in_time) = (0u64, 0u64);
            while Instant::now() < deadline {
                let response = service
                    .clone()
                    .oneshot(followers(&upstream))
                    .await
                    .expect("no bound on waiting: every request goes through");
                assert_eq!(response.status(), 200, "the simulator refused a request");
                let _ = response.into_body().collect().await;
                sent += 1;
                in_time += u64::from(Instant::now() <= deadline);
            }
            (sent, in_time)
        });
    }
    let counts = tasks.join_all().await;
    let sent: u64 = counts.iter().map(|c| c.0).sum();
    let in_time: u64 = counts.iter().map(|c| c.1).sum();
    eprintln!("{REPORT}{sent}{IN_TIME}{in_time}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_share_one_redis_rate_limit_and_never_exceed_it() {
    if std::env::var(ROLE).is_ok_and(|r| r == "worker") {
        worker().await;
        return;
    }
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let redis = server.url().to_owned();
    let sim = Upstream::builder()
        .rate(RATE)
        .credits(1_000_000)
        .fault_every(0)
        .latency(Duration::from_millis(2))
        .spawn()
        .await
        .unwrap();
    let prefix = format!(
        "tollway-fleet-limiter-{}-{}",
        std::process::id(),
        sim.addr().port()
    );
    let workers = tollway_test_support::run_workers(TEST_NAME, PROCESSES, |worker| {
        vec![
            (ROLE, "worker".to_owned()),
            (REDIS, redis.clone()),
            (UPSTREAM, sim.url()),
            (PREFIX, prefix.clone()),
            (LEASED, if worker % 2 == 0 { "1" } else { "0" }.to_owned()),
        ]
    })
    .await;

    let by_worker: Vec<(u64, u64)> = workers
        .iter()
        .map(|stderr| {
            let report = stderr
                .lines()
                .find_map(|line| line.strip_prefix(REPORT))
                .unwrap_or_else(|| panic!("no report from a worker:\n{stderr}"));
            let (sent, in_time) = report.split_once(IN_TIME).expect("two counts");
            let count = |n: &str| n.trim().parse::<u64>().expect("a count");
            (count(sent), count(in_time))
        })
        .collect();
    let stats = sim.stats();
    eprintln!("(sent, sent within {RUN:?}) by each worker process: {by_worker:?}; {stats:?}");
    let sent: u64 = by_worker.iter().map(|w| w.0).sum();
    let in_time: u64 = by_worker.iter().map(|w| w.1).sum();

    assert_eq!(stats.status(429), 0, "{stats:?}");
    assert!(stats.max_in_any_1s_window <= u64::from(RATE), "{stats:?}");
    assert!(
        stats.max_in_any_1s_window_all_keys <= u64::from(RATE),
        "{stats:?}"
    );
    assert_eq!(stats.status(200), sent, "{stats:?}");
    // Throughput: the quota allows its burst (1) and one request per interval over the run;
    // four processes sharing it must get two thirds of that. Under load a leased permit that
    // a slow wake-up misses by more than its 5 ms grace is dropped (never sent late, which
    // would bunch requests), and each costs an interval: 90% was missed on a loaded CI
    // machine ("52 requests in 3s, fewer than 54") by a correct fleet, so the floor leaves
    // room for that while still catching a fleet that serialises or stalls.
    let interval = Duration::from_millis(1_040) / RATE;
    let allowed = 1 + (RUN.as_nanos() / interval.as_nanos()) as u64;
    let floor = allowed * 2 / 3;
    assert!(
        in_time >= floor,
        "{in_time} requests in {RUN:?}, fewer than {floor} (the quota allows {allowed})"
    );
}
