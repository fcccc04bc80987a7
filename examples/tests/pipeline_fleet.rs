//! End-to-end fleet mode of the pipeline (`--redis URL`): two `pipeline` processes crawl
//! disjoint user lists of one simulator with one API key, at the same time, over real sockets.
//! They share one Redis rate limit and one Redis budget, so the simulator (which runs no
//! tollway code) must never see more than its rate in any second, answer no 429, serve every
//! page, and, under a `--budget N` smaller than the work, charge exactly `N` credits in total.
//! Redis failing (mid-run, or unreachable at start) stops the pipeline closed, with a one-line
//! reason.
//!
//! Redis is `TOLLWAY_REDIS_URL`, or a `redis-server` started here on a free loopback port;
//! without either these tests print a notice and pass, unless `TOLLWAY_REQUIRE_REDIS=1`. Each
//! test uses an API key of its own, so its fleet prefix (derived from the upstream URL and the
//! key) is new even on a shared Redis server.
#![allow(clippy::print_stderr)]

use std::num::NonZeroU32;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tollway_test_support::TempDir;

use tollway_budget::{Ledger, Window};
use tollway_examples::pipeline::{self, Config, Fleet, StopReason, fleet_prefix};
use tollway_examples::upstream::{MISSING_SEED_USER_ID, SEED_USER_IDS, Upstream, pages_for};
use tollway_test_support::{TestCluster, TestRedis, random_prefix};

/// The simulator's rate, which the whole fleet shares.
const RATE: u32 = 20;

/// The example's users, each once, without the missing one, split in two disjoint halves.
fn halves() -> (Vec<&'static str>, Vec<&'static str>) {
    let mut unique: Vec<&str> = Vec::new();
    for &id in &SEED_USER_IDS {
        if id != MISSING_SEED_USER_ID && !unique.contains(&id) {
            unique.push(id);
        }
    }
    let second = unique.split_off(unique.len() / 2);
    (unique, second)
}

fn pages(users: &[&str]) -> u64 {
    users.iter().map(|id| u64::from(pages_for(id))).sum()
}

async fn simulator(key: &str) -> Upstream {
    Upstream::builder()
        .rate(RATE)
        .key(key)
        .credits(1_000_000)
        .fault_every(0)
        .latency(Duration::from_millis(5))
        .spawn()
        .await
        .unwrap()
}

/// The arguments of one fleet process crawling `users`.
fn fleet_args(
    sim: &Upstream,
    key: &str,
    redis: &str,
    users: &[&str],
    dir: &TempDir,
    budget: Option<u64>,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--upstream",
        &sim.url(),
        "--key",
        key,
        "--redis",
        redis,
        "--users",
        &users.join(","),
        "--rate",
        &RATE.to_string(),
        "--concurrency",
        "4",
        "--cache-dir",
        &dir.path().display().to_string(),
        "--report",
        &dir.path()
            .with_extension("report.json")
            .display()
            .to_string(),
        "--deadline",
        "20",
    ]
    .map(str::to_owned)
    .into();
    if let Some(budget) = budget {
        args.extend(["--budget".to_owned(), budget.to_string()]);
    }
    args
}

/// Runs the `pipeline` binary once per argument list, all at the same time.
async fn pipelines(runs: Vec<Vec<String>>) -> Vec<Output> {
    let commands = runs
        .into_iter()
        .map(|args| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_pipeline"));
            command.args(args).env_remove("TOLLWAY_API_KEY");
            command
        })
        .collect();
    tokio::task::spawn_blocking(move || tollway_test_support::run_together(commands))
        .await
        .unwrap()
}

fn report(dir: &TempDir) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(dir.path().with_extension("report.json")).expect("a report"),
    )
    .expect("JSON")
}

fn last_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_rate_limit_and_fetch_every_page() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let key = random_prefix();
    let sim = simulator(&key).await;
    let (first, second) = halves();
    let (dir_a, dir_b) = (TempDir::new("rate-a"), TempDir::new("rate-b"));
    let outputs = pipelines(vec![
        fleet_args(&sim, &key, server.url(), &first, &dir_a, None),
        fleet_args(&sim, &key, server.url(), &second, &dir_b, None),
    ])
    .await;
    let stats = sim.stats();
    eprintln!("{stats:?}");
    for output in &outputs {
        assert!(output.status.success(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "fleet mode: rate limit and budget shared in Redis under {}",
                fleet_prefix(&sim.url(), &key)
            )),
            "{stderr}"
        );
    }

    // Every page, once, and the shared limit held: never more than RATE in a second, no 429.
    let total = pages(&first) + pages(&second);
    assert_eq!(stats.credits_charged, total, "{stats:?}");
    assert_eq!(stats.duplicate_page_fetches, 0, "{stats:?}");
    assert_eq!(stats.status(429), 0, "{stats:?}");
    assert!(stats.max_in_any_1s_window <= u64::from(RATE), "{stats:?}");
    for (dir, users) in [(&dir_a, &first), (&dir_b, &second)] {
        let report = report(dir);
        assert_eq!(report["pages_fetched"], pages(users), "{report}");
        assert_eq!(report["users_completed"], users.len(), "{report}");
        assert_eq!(report["credits_spent"], pages(users), "{report}");
        // Sharing the limit, each process took well longer than it would have alone (at
        // RATE - 1 requests per second, which its own limiter would allow).
        let alone = pages(users) as f64 / f64::from(RATE - 1);
        let elapsed = report["elapsed_s"].as_f64().unwrap();
        assert!(
            elapsed > alone * 1.25,
            "{elapsed:.2} s for {} pages: the limit was not shared",
            pages(users)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_budget_and_spend_exactly_it() {
    const BUDGET: u64 = 20;
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let key = random_prefix();
    let sim = simulator(&key).await;
    let (first, second) = halves();
    assert!(pages(&first) > BUDGET && pages(&second) > BUDGET);
    let (dir_a, dir_b) = (TempDir::new("budget-a"), TempDir::new("budget-b"));
    let runs = vec![
        fleet_args(&sim, &key, server.url(), &first, &dir_a, Some(BUDGET)),
        fleet_args(&sim, &key, server.url(), &second, &dir_b, Some(BUDGET)),
    ];
    let outputs = pipelines(runs.clone()).await;
    let stats = sim.stats();
    eprintln!("{stats:?}");

    // Neither process could finish alone within the budget: both stop, for the fleet's budget.
    let reason = format!(
        "pipeline: stopped: budget exhausted: the fleet's {BUDGET} credits are spent (shared in Redis)"
    );
    for output in &outputs {
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert_eq!(last_line(output), reason, "{output:?}");
    }
    assert_eq!(stats.credits_charged, BUDGET, "{stats:?}");
    assert_eq!(stats.status(402), 0, "{stats:?}");
    assert_eq!(stats.status(429), 0, "{stats:?}");
    assert_eq!(stats.duplicate_page_fetches, 0, "{stats:?}");
    let spent: u64 = [&dir_a, &dir_b]
        .map(|dir| report(dir)["credits_spent"].as_u64().unwrap())
        .iter()
        .sum();
    assert_eq!(spent, BUDGET);

    // The ledger in Redis, under the prefix derived from the URL and the key, agrees, and holds
    // no reservation (each process sent its settles before it exited).
    let ledger = Ledger::builder().limit(BUDGET, Window::lifetime()).redis(
        server.connect().await,
        format!("{}:budget", fleet_prefix(&sim.url(), &key)),
    );
    let snapshot = ledger.snapshot_async().await.unwrap();
    assert_eq!(snapshot.windows[0].spent, BUDGET, "{snapshot:?}");
    assert_eq!(snapshot.reserved, 0, "{snapshot:?}");

    // The fleet's budget is a lifetime counter: run again, the fleet has nothing left to spend.
    let again = pipelines(vec![runs[0].clone()]).await;
    assert_eq!(again[0].status.code(), Some(1), "{:?}", again[0]);
    assert_eq!(last_line(&again[0]), reason);
    assert_eq!(sim.stats().credits_charged, BUDGET);

    // A lifetime counter never expires: leave nothing behind on a shared server.
    let mut raw = server.connect().await;
    let keys: Vec<String> = tollway_budget::redis::cmd("KEYS")
        .arg(format!("{{{}:budget}}*", fleet_prefix(&sim.url(), &key)))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let _: u64 = tollway_budget::redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut raw)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_down_mid_run_stops_the_run_closed_with_a_one_line_reason() {
    let Some(server) = TestRedis::own().await else {
        return;
    };
    let key = random_prefix();
    let sim = simulator(&key).await;
    let dir = TempDir::new("down");
    let mut config = Config::new(sim.url(), dir.path());
    config.key.clone_from(&key);
    config.users = SEED_USER_IDS.iter().map(|&id| id.to_owned()).collect();
    config.rate = NonZeroU32::new(RATE).unwrap();
    config.concurrency = 4;
    config.deadline = Some(Duration::from_secs(20));
    let fleet = Fleet::connect(server.url(), &sim.url(), &key)
        .await
        .unwrap();
    assert_eq!(fleet.prefix(), fleet_prefix(&sim.url(), &key));
    config.fleet = Some(fleet);
    let crawl = tokio::spawn(pipeline::crawl(config));

    while sim.stats().status(200) < 10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut raw = server.connect().await;
    let _ = tollway_budget::redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async::<()>(&mut raw)
        .await;
    let down = Instant::now();
    let sent_before = sim.stats().requests;

    let stopped = crawl.await.unwrap().unwrap_err();
    let stopped_after = down.elapsed();
    let why = stopped.reason.to_string();
    assert!(
        matches!(stopped.reason, StopReason::Store(_)),
        "{:?}",
        stopped.reason
    );
    assert!(
        why.starts_with("fleet store unavailable (fail closed): "),
        "{why}"
    );
    assert!(!why.contains('\n'), "{why}");
    // Fail closed: nothing beyond the requests already in flight (4 workers) went out.
    let stats = sim.stats();
    assert!(
        stats.requests <= sent_before + 4,
        "{sent_before}: {stats:?}"
    );
    assert!(stopped.report.pages_fetched >= 10);
    assert!(stopped.report.pages_fetched < pages(&SEED_USER_IDS));
    assert!(
        stopped_after < Duration::from_secs(5),
        "stopped {stopped_after:?} after Redis went down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_402_latch_left_by_an_earlier_run_is_lifted_when_a_run_starts() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let key = random_prefix();
    let sim = simulator(&key).await;
    let fleet = Fleet::connect(server.url(), &sim.url(), &key)
        .await
        .unwrap();
    // An earlier run met a 402: the fleet's ledger (no window) stays latched for good.
    let ledger = Ledger::builder().redis(fleet.connection(), fleet.budget_prefix());
    ledger.latch_async().await.unwrap();
    assert!(ledger.snapshot_async().await.unwrap().latched);

    // The account has credit again: a new run lifts the latch and crawls.
    let dir = TempDir::new("latch");
    let mut config = Config::new(sim.url(), dir.path());
    config.key.clone_from(&key);
    config.users = vec!["1553030189".to_owned()];
    config.rate = NonZeroU32::new(RATE).unwrap();
    config.fleet = Some(fleet);
    let report = pipeline::crawl(config).await.unwrap();
    assert_eq!(report.users_completed, 1);
    assert_eq!(
        sim.stats().credits_charged,
        u64::from(pages_for("1553030189"))
    );
    assert!(!ledger.snapshot_async().await.unwrap().latched);
}

/// No Redis server needed: nothing listens on the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_refuses_to_start_with_a_one_line_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let sim = simulator("sim-key").await;
    let dir = TempDir::new("unreachable");
    let started = Instant::now();
    let outputs = pipelines(vec![fleet_args(
        &sim,
        "sim-key",
        &format!("redis://127.0.0.1:{port}/"),
        &["1553030189"],
        &dir,
        None,
    )])
    .await;
    let output = &outputs[0];
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let line = last_line(output);
    assert!(
        line.starts_with("pipeline: --redis: fleet store unavailable during connect: "),
        "{output:?}"
    );
    assert_eq!(sim.stats().requests, 0);
    assert!(started.elapsed() < Duration::from_secs(10));

    // A URL that is not Redis's is a usage error.
    let args = fleet_args(&sim, "sim-key", "http://127.0.0.1:1/", &["1"], &dir, None);
    let outputs = pipelines(vec![args]).await;
    assert_eq!(outputs[0].status.code(), Some(2), "{:?}", outputs[0]);
    assert!(last_line(&outputs[0]).starts_with("pipeline: --redis: not a Redis URL: "));
}

/// The example's users in three disjoint thirds.
fn thirds() -> [Vec<&'static str>; 3] {
    let (mut first, mut second) = halves();
    first.append(&mut second);
    let mut thirds: [Vec<&str>; 3] = Default::default();
    for (i, id) in first.into_iter().enumerate() {
        thirds[i % 3].push(id);
    }
    thirds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_a_cluster_share_one_rate_and_one_budget_and_a_rerun_is_free() {
    let Some(cluster) = TestCluster::shared_or_own().await else {
        return;
    };
    let urls = cluster.urls_joined();
    let key = random_prefix();
    let sim = simulator(&key).await;
    let thirds = thirds();
    let total: u64 = thirds.iter().map(|users| pages(users)).sum();
    let dirs = [
        TempDir::new("cluster-a"),
        TempDir::new("cluster-b"),
        TempDir::new("cluster-c"),
    ];
    // The budget is exactly the work: every page charged once spends all of it.
    let runs: Vec<Vec<String>> = thirds
        .iter()
        .zip(&dirs)
        .map(|(users, dir)| fleet_args(&sim, &key, &urls, users, dir, Some(total)))
        .collect();
    let outputs = pipelines(runs.clone()).await;
    let stats = sim.stats();
    eprintln!("{stats:?}");
    for output in &outputs {
        assert!(output.status.success(), "{output:?}");
    }
    assert_eq!(stats.credits_charged, total, "{stats:?}");
    assert_eq!(stats.duplicate_page_fetches, 0, "{stats:?}");
    assert_eq!(stats.status(429), 0, "{stats:?}");
    assert!(stats.max_in_any_1s_window <= u64::from(RATE), "{stats:?}");
    let spent: u64 = dirs
        .iter()
        .map(|dir| report(dir)["credits_spent"].as_u64().unwrap())
        .sum();
    assert_eq!(spent, total);

    // The ledger on the cluster agrees, and holds nothing.
    let ledger = Ledger::builder().limit(total, Window::lifetime()).redis(
        cluster.connect().await,
        format!("{}:budget", fleet_prefix(&sim.url(), &key)),
    );
    let snapshot = ledger.snapshot_async().await.unwrap();
    assert_eq!(snapshot.windows[0].spent, total, "{snapshot:?}");
    assert_eq!(snapshot.reserved, 0, "{snapshot:?}");

    // A rerun of the same work is free: every page is known already.
    let again = pipelines(runs).await;
    for output in &again {
        assert!(output.status.success(), "{output:?}");
    }
    assert_eq!(sim.stats().credits_charged, total);
}

/// Redis loses its data between two runs of a crawl (a restart without persistence): the next
/// run refuses to start rather than spend the fleet's lifetime budget again from zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_after_redis_lost_the_fleet_budget_is_refused_not_started_from_zero() {
    // Flushes its server: always its own.
    let Some(server) = TestRedis::own().await else {
        return;
    };
    let key = random_prefix();
    let sim = simulator(&key).await;
    let (first, second) = halves();
    let dir = TempDir::new("vanished");
    let budget = pages(&first) + pages(&second);
    let run = |users: &[&str]| fleet_args(&sim, &key, server.url(), users, &dir, Some(budget));
    let outputs = pipelines(vec![run(&first)]).await;
    assert!(outputs[0].status.success(), "{:?}", outputs[0]);
    let charged = sim.stats().credits_charged;
    assert_eq!(charged, pages(&first));
    assert!(dir.path().join(pipeline::EPOCH_FILE).exists());

    let mut raw = server.connect().await;
    let () = tollway_budget::redis::cmd("FLUSHALL")
        .query_async(&mut raw)
        .await
        .unwrap();
    let outputs = pipelines(vec![run(&second)]).await;
    let output = &outputs[0];
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let line = last_line(output);
    assert!(line.contains("fleet store unavailable"), "{line}");
    assert!(line.contains("vanished"), "{line}");
    assert_eq!(sim.stats().credits_charged, charged, "nothing spent again");
}
