//! End-to-end tests of the pipeline demo against the upstream simulator, over real sockets and
//! on real time. Each test starts its own simulator at 50 requests per second and crawls a few
//! users, so it takes well under a few seconds; the simulator's own record is the judge.

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::process::Command;
use std::time::{Duration, Instant};
use tollway_test_support::TempDir;

use tollway_examples::pipeline::{
    self, Config, Mode, NOT_FOUND, Report, StopReason, queue::load_followers,
};
use tollway_examples::upstream::{Upstream, follower_count, pages_for};

const RATE: u32 = 50;
/// Users with several pages each, the duplicate of the example list, and the missing `12345`.
const USERS: [&str; 6] = [
    "1553030189",
    "25044994947",
    "4238157586",
    "25044994947",
    "12345",
    "57606704380",
];

fn unique_existing() -> BTreeSet<&'static str> {
    USERS.iter().copied().filter(|&id| id != "12345").collect()
}

fn total_pages() -> u64 {
    unique_existing()
        .iter()
        .map(|id| u64::from(pages_for(id)))
        .sum()
}

fn total_followers() -> u64 {
    unique_existing()
        .iter()
        .map(|id| follower_count(id, 25) as u64)
        .sum()
}

fn config(sim: &Upstream, dir: &TempDir) -> Config {
    let mut config = Config::new(sim.url(), dir.path());
    config.users = USERS.iter().map(|&id| id.to_owned()).collect();
    config.rate = NonZeroU32::new(RATE).unwrap();
    config.concurrency = 4;
    config.deadline = Some(Duration::from_secs(20));
    config
}

async fn crawl(config: Config) -> Result<Report, pipeline::Stopped> {
    pipeline::crawl(config).await
}

async fn simulator() -> Upstream {
    Upstream::builder()
        .rate(RATE)
        .latency(Duration::from_millis(5))
        .spawn()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_page_is_fetched_once_and_the_missing_user_fails_for_good() {
    let sim = simulator().await;
    let dir = TempDir::new("all");
    let report = crawl(config(&sim, &dir)).await.unwrap();

    let stats = sim.stats();
    assert_eq!(report.mode, Mode::Pipeline);
    assert_eq!(report.users_requested, 5, "the duplicate is crawled once");
    assert_eq!(report.users_completed, 4);
    assert_eq!(report.users_failed.len(), 1);
    assert_eq!(report.users_failed[0].user_id, "12345");
    assert_eq!(report.users_failed[0].reason, NOT_FOUND);
    assert_eq!(report.pages_fetched, total_pages());
    assert_eq!(report.followers_fetched, total_followers());
    assert_eq!(report.credits_spent, total_pages());
    assert_eq!((report.pages_from_journal, report.cache_hits), (0, 0));
    assert_eq!(report.crawl_credits_spent, total_pages());
    assert!(report.dead_letters.is_empty());
    assert_eq!(report.incomplete(), None);
    assert_eq!(report.status(200), total_pages());
    assert_eq!(report.status(404), 1);
    assert_eq!(report.requests_sent, total_pages() + 1);

    // The simulator's record agrees: nothing paid twice, never throttled.
    assert_eq!(stats.duplicate_page_fetches, 0);
    assert_eq!(stats.credits_charged, total_pages());
    assert_eq!(stats.status(429), 0);
    assert!(stats.max_in_any_1s_window <= u64::from(RATE));
    assert!(stats.max_in_flight <= 4, "{stats:?}");

    // The followers are kept on disk, page after page.
    let followers = load_followers(dir.path()).unwrap();
    for id in unique_existing() {
        assert_eq!(followers[id].len(), follower_count(id, 25), "{id}");
    }
}

#[tokio::test]
async fn a_stopped_run_resumes_without_paying_twice() {
    let sim = simulator().await;
    let dir = TempDir::new("resume");

    // A budget stops the first run part way; pages in flight finish and are kept.
    let mut first = config(&sim, &dir);
    first.budget = Some(4);
    let stopped = crawl(first).await.unwrap_err();
    assert_eq!(
        stopped.reason,
        StopReason::CrawlBudgetSpent {
            budget: 4,
            earlier_runs: 0
        }
    );
    assert_eq!(
        stopped.report.credits_spent, 4,
        "the budget is never overspent"
    );
    assert_eq!(stopped.report.pages_fetched, 4);
    assert_eq!(stopped.report.budget_exhausted, 1);
    assert_eq!(sim.stats().credits_charged, 4);

    let second = crawl(config(&sim, &dir)).await.unwrap();
    assert_eq!(
        (second.pages_from_journal, second.cache_hits),
        (4, 0),
        "the first run's pages come from the journal"
    );
    assert_eq!(second.crawl_credits_spent, total_pages());
    assert_eq!(second.credits_spent, total_pages() - 4);
    assert_eq!(second.pages_fetched, total_pages());
    assert_eq!(second.followers_fetched, total_followers());
    assert_eq!(second.users_completed, 4);

    // The 404 was journaled too: a third run sends nothing at all.
    let requests = sim.stats().requests;
    let third = crawl(config(&sim, &dir)).await.unwrap();
    assert_eq!(third.requests_sent, 0);
    assert_eq!(third.pages_from_journal, total_pages());
    assert_eq!(third.cache_hits, 0);
    assert_eq!(third.users_failed[0].reason, NOT_FOUND);
    assert_eq!(sim.stats().requests, requests);

    let stats = sim.stats();
    assert_eq!(stats.duplicate_page_fetches, 0);
    assert_eq!(stats.credits_charged, total_pages());
}

#[tokio::test]
async fn a_run_killed_mid_flight_resumes_and_loses_nothing() {
    let sim = Upstream::builder()
        .rate(RATE)
        .latency(Duration::from_millis(20))
        .spawn()
        .await
        .unwrap();
    let dir = TempDir::new("kill");

    let first = config(&sim, &dir);
    let progress = first.progress.clone();
    let concurrency = first.concurrency as u64;
    let run = crawl(first);
    let killed = async {
        while progress.snapshot().pages < 3 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    // Dropping the run's future is as abrupt as it gets in process: workers are aborted with
    // requests in flight.
    tokio::select! {
        _ = run => panic!("the run finished before it could be killed"),
        () = killed => {}
    }
    let held = progress.snapshot().pages;
    assert!((3..total_pages()).contains(&held), "{held}");

    let second = crawl(config(&sim, &dir)).await.unwrap();
    assert!(second.pages_from_journal >= 3, "{second:?}");
    assert_eq!(second.pages_fetched, total_pages());
    assert_eq!(second.followers_fetched, total_followers());
    let stats = sim.stats();
    // Only answers that were on the wire at the kill can have been paid without being kept.
    assert!(stats.duplicate_page_fetches <= concurrency, "{stats:?}");
    assert_eq!(
        stats.credits_charged,
        total_pages() + stats.duplicate_page_fetches
    );
}

#[tokio::test]
async fn pages_that_keep_failing_go_to_the_dead_letters_and_are_retried_next_run() {
    // Every admitted request fails.
    let broken = Upstream::builder()
        .rate(RATE)
        .fault_every(1)
        .spawn()
        .await
        .unwrap();
    let dir = TempDir::new("dead");
    let mut failing = config(&broken, &dir);
    failing.users = vec!["1553030189".to_owned(), "4238157586".to_owned()];
    failing.max_tries = 2;
    let report = crawl(failing).await.unwrap();
    assert_eq!(report.dead_letters.len(), 2);
    for letter in &report.dead_letters {
        assert_eq!(letter.tries, 2);
        assert_eq!(letter.page_id, "");
        assert!(letter.error.starts_with("500"), "{letter:?}");
    }
    // Every request sent (the stack's resends included) is counted with its 500; each of the
    // two tries of each page reached the API at least once.
    assert_eq!(report.requests_sent, broken.stats().requests, "{report:?}");
    assert_eq!(report.status(500), report.requests_sent, "{report:?}");
    assert!(report.requests_sent >= 4, "{report:?}");
    assert!(report.retries >= 2, "{report:?}");
    assert_eq!(report.users_completed, 0);
    assert!(
        report.users_failed.is_empty(),
        "a dead letter is not a failed user"
    );
    assert!(report.incomplete().unwrap().contains("dead letters"));

    // The upstream recovers: the next run takes the dead-lettered pages up again.
    let healthy = simulator().await;
    let mut recovered = config(&healthy, &dir);
    recovered.users = vec!["1553030189".to_owned(), "4238157586".to_owned()];
    let report = crawl(recovered).await.unwrap();
    assert!(report.dead_letters.is_empty());
    assert_eq!(report.users_completed, 2);
    assert_eq!(report.incomplete(), None);
}

#[tokio::test]
async fn transient_failures_are_retried_within_the_tries() {
    let sim = Upstream::builder()
        .rate(RATE)
        .fault_every(5)
        .outage(Duration::from_millis(50), Duration::from_millis(300))
        .spawn()
        .await
        .unwrap();
    let dir = TempDir::new("transient");
    let mut config = config(&sim, &dir);
    // Enough tries that no page can run out of them on this upstream.
    config.max_tries = 10;
    let report = crawl(config).await.unwrap();
    assert_eq!(report.pages_fetched, total_pages());
    assert!(report.dead_letters.is_empty(), "{report:?}");
    let stats = sim.stats();
    assert!(stats.status(500) > 0, "{stats:?}");
    // Every attempt is counted, and every failed one was retried (by the stack, or by the run
    // loop after it).
    assert_eq!(report.requests_sent, stats.requests, "{report:?} {stats:?}");
    assert_eq!(report.status(500), stats.status(500));
    assert!(report.retries >= stats.status(500), "{report:?} {stats:?}");
    assert_eq!(stats.duplicate_page_fetches, 0);
}

#[tokio::test]
async fn insufficient_balance_stops_the_run() {
    let sim = Upstream::builder()
        .rate(RATE)
        .credits(3)
        .spawn()
        .await
        .unwrap();
    let dir = TempDir::new("402");
    let stopped = crawl(config(&sim, &dir)).await.unwrap_err();
    assert_eq!(stopped.reason, StopReason::InsufficientBalance);
    assert_eq!(
        stopped.to_string(),
        "stopped: insufficient balance: the API answered 402"
    );
    assert_eq!(stopped.report.credits_spent, 3);
    assert!(stopped.report.status(402) >= 1);
    assert_eq!(stopped.report.retries, 0, "a 402 is never retried");
    assert_eq!(sim.stats().credits_left, 0);
}

#[tokio::test]
async fn a_wrong_key_stops_the_run_without_spending() {
    let sim = simulator().await;
    let dir = TempDir::new("401");
    let mut config = config(&sim, &dir);
    config.key = "wrong".to_owned();
    let stopped = crawl(config).await.unwrap_err();
    assert_eq!(stopped.reason, StopReason::Unauthorized);
    assert_eq!(stopped.report.credits_spent, 0);
    assert_eq!(sim.stats().credits_charged, 0);
    assert!(
        sim.stats().requests <= 4,
        "the workers stop at the first 401"
    );
}

#[tokio::test]
async fn the_deadline_stops_a_run_stuck_behind_an_outage() {
    let sim = Upstream::builder()
        .rate(RATE)
        .outage(Duration::ZERO, Duration::from_secs(30))
        .spawn()
        .await
        .unwrap();
    let dir = TempDir::new("deadline");
    let mut config = config(&sim, &dir);
    config.deadline = Some(Duration::from_millis(500));
    let started = Instant::now();
    let stopped = crawl(config).await.unwrap_err();
    assert_eq!(
        stopped.reason,
        StopReason::Deadline(Duration::from_millis(500))
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The 503s asked for a 30 s wait: longer than the stack waits, so the stack resent none.
    assert!(stopped.report.status(503) >= 1);
    assert_eq!(stopped.report.requests_sent, sim.stats().requests);
    assert!(stopped.report.dead_letters.is_empty());
}

#[tokio::test]
async fn the_naive_client_crawls_the_duplicate_twice_and_gives_up_on_errors() {
    let sim = simulator().await;
    let dir = TempDir::new("naive");
    let report = pipeline::naive::run(config(&sim, &dir)).await.unwrap();
    assert_eq!(report.mode, Mode::Naive);
    assert_eq!(report.users_requested, USERS.len() as u64);
    assert_eq!(report.users_completed, 5);
    assert_eq!(report.users_failed.len(), 1);
    assert_eq!(report.users_failed[0].reason, NOT_FOUND);
    let twice = u64::from(pages_for("25044994947"));
    assert_eq!(report.pages_fetched, total_pages() + twice);
    let stats = sim.stats();
    assert_eq!(
        stats.duplicate_page_fetches, twice,
        "the naive client pays twice"
    );
    assert_eq!(report.credits_spent, stats.credits_charged);

    // With the upstream failing now and then, it loses users where the pipeline retries.
    let flaky = Upstream::builder()
        .rate(RATE)
        .fault_every(4)
        .spawn()
        .await
        .unwrap();
    let report = pipeline::naive::run(config(&flaky, &dir)).await.unwrap();
    assert!(
        report
            .users_failed
            .iter()
            .any(|f| f.reason.starts_with("500")),
        "{report:?}"
    );
    assert!(report.incomplete().is_some());
}

/// The binary, as a user runs it: exit status, table, and the JSON report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reports_and_sets_its_exit_status() {
    let sim = simulator().await;
    let dir = TempDir::new("bin");
    let report_path = dir.path().with_extension("report.json");
    let args = vec![
        "--upstream".to_owned(),
        sim.url(),
        "--rate".to_owned(),
        "auto".to_owned(),
        "--users".to_owned(),
        USERS.join(","),
        "--cache-dir".to_owned(),
        dir.path().display().to_string(),
        "--report".to_owned(),
        report_path.display().to_string(),
        "--deadline".to_owned(),
        "20".to_owned(),
    ];
    let output = pipeline_binary(args.clone()).await;
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("12345: not found"), "{table}");
    assert!(
        table.contains(&format!("credits spent      {}", total_pages())),
        "{table}"
    );

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let keys: BTreeSet<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "users_requested",
        "users_completed",
        "users_failed",
        "pages_fetched",
        "followers_fetched",
        "requests_sent",
        "responses",
        "retries",
        "cache_hits",
        "credits_spent",
        "elapsed_s",
        "breaker_opens",
        "budget_exhausted",
    ] {
        assert!(keys.contains(key), "{key} missing from {json}");
    }
    assert_eq!(json["pages_fetched"], total_pages());
    assert_eq!(json["users_failed"][0]["user_id"], "12345");
    assert_eq!(json["responses"]["404"], 1);
    let _ = std::fs::remove_file(&report_path);

    // A second run with the same cache dir: nothing left to fetch, so it succeeds for free.
    let output = pipeline_binary(args).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(sim.stats().credits_charged, total_pages());

    // An account with no credit: a non-zero status and a one-line reason.
    let broke = Upstream::builder()
        .rate(RATE)
        .credits(0)
        .spawn()
        .await
        .unwrap();
    let other = TempDir::new("bin402");
    let output = pipeline_binary(vec![
        "--upstream".to_owned(),
        broke.url(),
        "--rate".to_owned(),
        "50".to_owned(),
        "--cache-dir".to_owned(),
        other.path().display().to_string(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let last = stderr.lines().last().unwrap();
    assert_eq!(
        last,
        "pipeline: stopped: insufficient balance: the API answered 402"
    );

    // Fleet mode with the in-process simulator (which no other process can share) is a usage
    // error, said on one line. (Fleet mode itself: tests/pipeline_fleet.rs.)
    let output = pipeline_binary(vec!["--redis".to_owned(), "redis://127.0.0.1".to_owned()]).await;
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap().trim_end(),
        "pipeline: --redis needs --upstream: the in-process simulator is this process's alone, there is no fleet to share it with"
    );
}

async fn pipeline_binary(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(args)
            .env_remove("TOLLWAY_API_KEY")
            .output()
            .expect("the pipeline binary runs")
    })
    .await
    .unwrap()
}

/// A layer that refuses the first `refusals` requests with `refusal`, then passes requests on
/// to the tollway stack.
fn refusing(
    config: &Config,
    refusals: usize,
    refusal: fn() -> tollway_core::BoxError,
) -> impl tower::Service<
    pipeline::ApiRequest,
    Response = http::Response<pipeline::PipelineBody>,
    Error = tollway_core::BoxError,
    Future: Send,
> + Clone
+ Send
+ 'static {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    let inner = pipeline::tollway_stack(config).unwrap().service;
    let calls = Arc::new(AtomicUsize::new(0));
    tower::service_fn(move |request: pipeline::ApiRequest| {
        let refuse = calls.fetch_add(1, Ordering::SeqCst) < refusals;
        let inner = inner.clone();
        async move {
            if refuse {
                return Err(refusal());
            }
            inner.oneshot(request).await
        }
    })
}

#[tokio::test]
async fn a_layers_refusals_are_waited_out_without_using_tries() {
    use tollway_core::{CircuitOpen, RateLimited};

    let sim = simulator().await;
    let dir = TempDir::new("open");
    let mut config = config(&sim, &dir);
    config.max_tries = 1;
    // The breaker is open: every worker's first request is refused within one open period.
    let service = refusing(&config, 4, || {
        Box::new(CircuitOpen::new(Duration::from_millis(250)))
    });
    let report = pipeline::run(config, service).await.unwrap();
    assert_eq!(report.breaker_opens, 1, "{report:?}");
    assert_eq!(report.retries, 0, "a refusal is not a failed attempt");
    assert!(report.dead_letters.is_empty(), "a refusal uses up no try");
    assert_eq!(report.requests_sent, total_pages() + 1);
    assert_eq!(report.pages_fetched, total_pages());

    let other = TempDir::new("limited");
    let mut config = self::config(&sim, &other);
    config.max_tries = 1;
    let service = refusing(&config, 3, || {
        Box::new(RateLimited::new(Duration::from_millis(30)))
    });
    let report = pipeline::run(config, service).await.unwrap();
    assert_eq!(report.pages_fetched, total_pages());
    assert_eq!(report.breaker_opens, 0);
}

#[tokio::test]
async fn a_budget_layers_refusal_stops_the_run() {
    use tollway_core::{BudgetExhausted, ExhaustedReason};

    let sim = simulator().await;
    let dir = TempDir::new("budget-layer");
    let config = config(&sim, &dir);
    let service = refusing(&config, usize::MAX, || {
        Box::new(BudgetExhausted::new(ExhaustedReason::Window, None))
    });
    let stopped = pipeline::run(config, service).await.unwrap_err();
    assert!(
        matches!(stopped.reason, StopReason::BudgetExhausted(ref why) if why.contains("window")),
        "{:?}",
        stopped.reason
    );
    assert!(stopped.report.budget_exhausted >= 1);
    assert_eq!(stopped.report.requests_sent, 0);
    assert_eq!(sim.stats().requests, 0);
}

#[tokio::test]
async fn a_base_url_that_cannot_be_sent_to_is_refused_up_front() {
    let sim = simulator().await;
    let dir = TempDir::new("badurl");
    for url in ["https://api.example.com", "not a url", "127.0.0.1:80"] {
        let mut config = config(&sim, &dir);
        config.base_url = url.to_owned();
        let stopped = crawl(config).await.unwrap_err();
        assert!(
            matches!(stopped.reason, StopReason::Config(ref why) if why.contains("base URL")),
            "{url}: {:?}",
            stopped.reason
        );
    }
    let mut config = config(&sim, &dir);
    config.key = "bad\nkey".to_owned();
    let stopped = crawl(config).await.unwrap_err();
    assert!(matches!(stopped.reason, StopReason::Config(_)));
    assert_eq!(sim.stats().requests, 0);
}

/// Issue 9's end-to-end test. On the same flaky simulator (10 req/s, a 500 every 9th request)
/// and six users with four or five pages each, the pipeline fetches every page, pays for none
/// twice, is never throttled, and crawls more pages per second than the example client, which
/// bursts into 429s (and sleeps 2 s on each) and gives up on a user at its first 500: only the
/// pages of the users it completed count for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_beats_the_naive_client_on_the_same_upstream() {
    const RATE: u32 = 10;
    const USERS: [&str; 6] = [
        "47857986514",
        "57606704380",
        "419762293",
        "11461087642",
        "420842043",
        "1220781192",
    ];
    let flaky = || {
        Upstream::builder()
            .rate(RATE)
            .fault_every(9)
            .latency(Duration::from_millis(10))
            .spawn()
    };
    let all_pages: u64 = USERS.iter().map(|id| u64::from(pages_for(id))).sum();
    let users: Vec<String> = USERS.iter().map(|&id| id.to_owned()).collect();

    // Both clients run at once, each on its own simulator with the same settings.
    let sim = flaky().await.unwrap();
    let naive_sim = flaky().await.unwrap();
    let dir = TempDir::new("vs-naive");
    let naive_dir = TempDir::new("naive-vs");
    let mut config = config(&sim, &dir);
    config.users.clone_from(&users);
    config.rate = NonZeroU32::new(RATE).unwrap();
    config.concurrency = 6;
    let mut naive_config = self::config(&naive_sim, &naive_dir);
    naive_config.users = users;
    naive_config.rate = NonZeroU32::new(RATE).unwrap();
    let (ours, naive) = tokio::join!(crawl(config), pipeline::naive::run(naive_config));
    let (ours, naive) = (ours.unwrap(), naive.unwrap());

    let stats = sim.stats();
    assert_eq!(ours.pages_fetched, all_pages, "{ours:?}");
    assert_eq!(ours.users_completed, USERS.len() as u64);
    assert_eq!(ours.incomplete(), None, "{ours:?}");
    assert_eq!(stats.duplicate_page_fetches, 0, "no page paid twice");
    assert_eq!(stats.credits_charged, all_pages);
    assert_eq!(stats.status(429), 0, "never throttled: {stats:?}");
    assert!(stats.status(500) > 0, "the upstream did fail: {stats:?}");
    assert!(stats.max_in_any_1s_window <= u64::from(RATE), "{stats:?}");
    assert_eq!(ours.requests_sent, stats.requests);

    assert!(
        naive_sim.stats().status(429) > 0,
        "the naive client bursts into the limit"
    );
    let completed_pages: u64 = USERS
        .iter()
        .filter(|&&id| !naive.users_failed.iter().any(|f| f.user_id == id))
        .map(|id| u64::from(pages_for(id)))
        .sum();
    let our_rate = ours.pages_fetched as f64 / ours.elapsed_s;
    let naive_rate = completed_pages as f64 / naive.elapsed_s;
    assert!(
        our_rate > naive_rate,
        "pipeline {our_rate:.1} pages/s vs naive {naive_rate:.1} pages/s\n{ours:?}\n{naive:?}"
    );
}

/// The hyper example: the stack on a plain hyper-util client, against an external upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hyper_example_crawls_a_user_and_hits_the_cache() {
    let sim = simulator().await;
    let url = sim.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_hyper_client"))
            .args(["--upstream", &url, "--rate", "50", "--user", "47857986514"])
            .output()
            .expect("the hyper_client binary runs")
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let pages = u64::from(pages_for("47857986514"));
    assert_eq!(
        stdout.matches("cache: miss").count() as u64,
        pages,
        "{stdout}"
    );
    assert_eq!(stdout.matches("cache: hit").count(), 1, "{stdout}");
    assert!(
        stdout.contains(&format!("credits spent: {pages}")),
        "{stdout}"
    );
    assert_eq!(sim.stats().credits_charged, pages);
}
