//! End-to-end fleet mode: 4 processes × 8 tasks share one Redis budget of `BUDGET` credits in
//! front of the upstream simulator, over real sockets. The simulator, which runs no tollway
//! code, must have charged exactly `BUDGET` credits and answered no 402.
//!
//! The test re-executes its own binary as the workers (`TOLLWAY_FLEET_ROLE=worker`). Redis is
//! `TOLLWAY_REDIS_URL`, or a `redis-server` started here on a free loopback port; without
//! either the test prints a notice and passes, unless `TOLLWAY_REQUIRE_REDIS=1`.
#![allow(clippy::print_stderr)]

use std::time::Duration;

use axum::body::Bytes;
use axum::http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tollway_budget::store::RedisStore;
use tollway_budget::{BudgetLayer, Ledger, Window};
use tollway_core::{BudgetExhausted, ExhaustedReason};
use tollway_examples::upstream::{DEFAULT_KEY, SEED_USER_IDS, Upstream};
use tollway_test_support::TestRedis;
use tower::{Layer, ServiceExt};

const TEST_NAME: &str = "four_processes_share_one_redis_budget_and_spend_exactly_it";
const PROCESSES: usize = 4;
const TASKS: usize = 8;
const BUDGET: u64 = 300;

const ROLE: &str = "TOLLWAY_FLEET_ROLE";
const REDIS: &str = "TOLLWAY_FLEET_REDIS";
const UPSTREAM: &str = "TOLLWAY_FLEET_UPSTREAM";
const PREFIX: &str = "TOLLWAY_FLEET_PREFIX";
const REPORT: &str = "fleet-worker charged=";

async fn ledger(url: &str, prefix: &str) -> Ledger<RedisStore> {
    let connection = tollway_test_support::connect(url).await;
    Ledger::builder()
        .limit(BUDGET, Window::lifetime())
        .limit(BUDGET * 10, Window::day())
        .redis(connection, prefix)
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

/// One worker process: `TASKS` tasks send requests through the shared budget until it refuses
/// them. Reports how many responses it got.
async fn worker() {
    let redis = std::env::var(REDIS).expect("redis url");
    let upstream = std::env::var(UPSTREAM).expect("upstream url");
    let prefix = std::env::var(PREFIX).expect("prefix");
    let ledger = ledger(&redis, &prefix).await;
    tollway_test_support::redis_barrier(&redis, &format!("{prefix}:ready"), PROCESSES as u64).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let service = BudgetLayer::new(ledger.clone()).layer(client);
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let service = service.clone();
        let upstream = upstream.clone();
        tasks.spawn(async move {
            let mut charged = 0u64;
            loop {
                match service.clone().oneshot(followers(&upstream)).await {
                    Ok(response) => {
                        assert_eq!(response.status(), 200, "the simulator refused a request");
                        let _ = response.into_body().collect().await;
                        charged += 1;
                    }
                    Err(err) => {
                        let exhausted = err
                            .downcast_ref::<BudgetExhausted>()
                            .unwrap_or_else(|| panic!("unexpected error: {err}"));
                        assert_eq!(exhausted.reason(), ExhaustedReason::Window);
                        return charged;
                    }
                }
            }
        });
    }
    let charged: u64 = tasks.join_all().await.into_iter().sum();
    // Settles run in background tasks: wait for them before the process exits.
    ledger.flush().await;
    eprintln!("{REPORT}{charged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_share_one_redis_budget_and_spend_exactly_it() {
    if std::env::var(ROLE).is_ok_and(|r| r == "worker") {
        worker().await;
        return;
    }
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let redis = server.url().to_owned();
    let sim = Upstream::builder()
        .rate(100_000)
        .credits(BUDGET * 4)
        .fault_every(0)
        .latency(Duration::from_millis(2))
        .spawn()
        .await
        .unwrap();
    let prefix = format!("tollway-fleet-{}-{}", std::process::id(), sim.addr().port());
    let workers = tollway_test_support::run_workers(TEST_NAME, PROCESSES, |_| {
        vec![
            (ROLE, "worker".to_owned()),
            (REDIS, redis.clone()),
            (UPSTREAM, sim.url()),
            (PREFIX, prefix.clone()),
        ]
    })
    .await;

    let by_worker: Vec<u64> = workers
        .iter()
        .map(|stderr| {
            stderr
                .lines()
                .find_map(|line| line.strip_prefix(REPORT))
                .unwrap_or_else(|| panic!("no report from a worker:\n{stderr}"))
                .trim()
                .parse()
                .expect("a count")
        })
        .collect();
    eprintln!("credits charged by each worker process: {by_worker:?}");
    let charged_by_workers: u64 = by_worker.iter().sum();

    let stats = sim.stats();
    assert_eq!(stats.credits_charged, BUDGET, "{stats:?}");
    assert_eq!(charged_by_workers, BUDGET);
    assert_eq!(stats.status(402), 0, "{stats:?}");
    assert_eq!(
        stats.requests, BUDGET,
        "no request beyond the budget was sent"
    );

    let snapshot = ledger(&redis, &prefix)
        .await
        .snapshot_async()
        .await
        .unwrap();
    assert_eq!(snapshot.windows[0].spent, BUDGET);
    assert_eq!(snapshot.reserved, 0);
}
