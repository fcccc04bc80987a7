//! The pipeline against a broken or hostile upstream (issue 17), end to end over real sockets:
//! the simulator's hostile modes, the pipeline library and the binary. Every run has a deadline,
//! and each test says how late it may end: a wait that is not capped fails it.

use std::num::NonZeroU32;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollway_test_support::TempDir;

use parking_lot::Mutex;
use tollway_examples::pipeline::{self, Config, Report, StopReason, Stopped};
use tollway_examples::upstream::{Hostile, Upstream, pages_for};

const RATE: u32 = 50;
/// Users with 4 or 5 pages each, 17 in all.
const USERS: [&str; 4] = ["47857986514", "57606704380", "419762293", "11461087642"];

fn total_pages() -> u64 {
    USERS.iter().map(|id| u64::from(pages_for(id))).sum()
}

async fn hostile(mode: Hostile, count: u64) -> Upstream {
    Upstream::builder()
        .rate(RATE)
        .hostile(mode)
        .hostile_count(count)
        .spawn()
        .await
        .unwrap()
}

fn config(sim: &Upstream, dir: &TempDir) -> Config {
    let mut config = Config::new(sim.url(), dir.path());
    config.users = USERS.iter().map(|&id| id.to_owned()).collect();
    config.rate = NonZeroU32::new(RATE).unwrap();
    config.concurrency = 3;
    config.deadline = Some(Duration::from_secs(20));
    config
}

/// Log lines written while `future` runs (the test runs on one thread, so its tasks log here).
async fn logged<F: Future>(future: F) -> (F::Output, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let output = future.await;
    let text = String::from_utf8(buffer.0.lock().clone()).unwrap();
    (output, text)
}

async fn binary(args: Vec<String>) -> (std::process::Output, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(args)
            .env_remove("TOLLWAY_API_KEY")
            .env_remove("RUST_LOG")
            .output()
            .expect("the pipeline binary runs");
        (output, started.elapsed())
    })
    .await
    .unwrap()
}

/// The binary's flags for a crawl of [`USERS`] against `sim`, at the simulator's rate.
fn args(sim: &Upstream, dir: &TempDir, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--upstream",
        &sim.url(),
        "--rate",
        &sim.handle().rate().to_string(),
        "--users",
        &USERS.join(","),
        "--cache-dir",
        &dir.path().display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Finding 1: `500, 500, 429 Retry-After: 99999999999999999999` panicked the run loop
/// ("overflow when adding duration to instant"). Now the wait is capped, logged, and the crawl
/// goes on.
#[tokio::test]
async fn a_retry_after_no_clock_can_add_is_capped_logged_and_survived() {
    let sim = hostile(Hostile::RetryAfterOverflow, 3).await;
    let dir = TempDir::new("overflow");
    let mut config = config(&sim, &dir);
    config.max_wait = Duration::from_millis(300);
    let started = Instant::now();
    let (report, log) = logged(pipeline::crawl(config)).await;
    let report = report.unwrap();
    assert_eq!(report.pages_fetched, total_pages(), "{report:?}");
    assert!(report.dead_letters.is_empty(), "{report:?}");
    assert_eq!(sim.stats().status(429), 1);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let line = log
        .lines()
        .find(|line| line.contains("waiting before trying again"))
        .unwrap_or_else(|| panic!("no wait logged:\n{log}"));
    assert!(
        line.contains("capped=true") && line.contains("asked_s=1.8"),
        "{line}"
    );
}

/// The binary on the same upstream, misbehaving for good: it neither panics (exit 101) nor
/// hangs; it ends at its deadline with the report and a one-line reason, having said what it
/// waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_ends_on_time_with_its_report_against_endless_429s() {
    let sim = hostile(Hostile::RetryAfterOverflow, u64::MAX).await;
    let dir = TempDir::new("overflow-bin");
    let (output, took) = binary(args(&sim, &dir, &["--deadline", "2", "--max-wait", "0.5"])).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("tollway pipeline report"), "{stdout}");
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .starts_with("pipeline: stopped: deadline"),
        "{stderr}"
    );
    assert!(
        stderr.contains("waiting before trying again") && stderr.contains("capped=true"),
        "{stderr}"
    );
    // 2 s, a second of grace, and room to start and stop a process.
    assert!(took < Duration::from_millis(4500), "{took:?}");
}

/// Finding 2: a day-long `Retry-After`, a reset in 2286, an HTTP-date in 9999. Each wait is cut
/// to `max_wait` and logged; an upstream that keeps it up is left at the deadline, on time; one
/// that recovers is crawled to the end.
#[tokio::test]
async fn waits_with_no_end_are_capped_and_the_deadline_holds() {
    for mode in [
        Hostile::LongRetryAfter,
        Hostile::FarReset,
        Hostile::Year9999,
    ] {
        let forever = hostile(mode, u64::MAX).await;
        let dir = TempDir::new(&format!("endless-{mode}"));
        let mut config = config(&forever, &dir);
        config.max_wait = Duration::from_millis(200);
        config.deadline = Some(Duration::from_millis(1500));
        let started = Instant::now();
        let (stopped, log) = logged(pipeline::crawl(config)).await;
        let took = started.elapsed();
        let Stopped { reason, report } = stopped.unwrap_err();
        assert_eq!(
            reason,
            StopReason::Deadline(Duration::from_millis(1500)),
            "{mode}"
        );
        assert!(took < Duration::from_millis(2800), "{mode}: {took:?}");
        assert!(report.requests_sent >= 1, "{mode}: {report:?}");
        assert!(log.contains("waiting before trying again"), "{mode}: {log}");

        let recovers = hostile(mode, 2).await;
        let dir = TempDir::new(&format!("recovers-{mode}"));
        let mut config = self::config(&recovers, &dir);
        config.max_wait = Duration::from_millis(200);
        let started = Instant::now();
        let report = pipeline::crawl(config).await.unwrap();
        assert_eq!(report.pages_fetched, total_pages(), "{mode}: {report:?}");
        assert!(started.elapsed() < Duration::from_secs(8), "{mode}");
    }
}

/// Finding 4: a `next_page_id` pointing back to an earlier page looped forever (from the
/// cache, 356,241 journal lines in a minute). Each user's loop is a dead letter with the reason;
/// the next run asks the looping page again (a cache hit: no request, no credit) and, as it
/// still loops, dead-letters it again, adding one line per user to the journal.
#[tokio::test]
async fn cursors_that_loop_are_dead_letters_not_endless_crawls() {
    let sim = hostile(Hostile::CyclicPages, u64::MAX).await;
    let dir = TempDir::new("cycle");
    let report = pipeline::crawl(config(&sim, &dir)).await.unwrap();
    assert_eq!(report.users_completed, 0, "{report:?}");
    assert_eq!(report.dead_letters.len(), USERS.len(), "{report:?}");
    for letter in &report.dead_letters {
        assert!(letter.error.contains("cursors loop"), "{letter:?}");
    }
    assert_eq!(report.pages_fetched, total_pages());
    assert_eq!(
        sim.stats().credits_charged,
        total_pages(),
        "each page paid once"
    );
    let journal = dir.path().join(pipeline::queue::JOURNAL_FILE);
    let lines = |path: &Path| std::fs::read_to_string(path).unwrap().lines().count();
    let first = lines(&journal);
    assert_eq!(first as u64, total_pages() + USERS.len() as u64);

    let requests = sim.stats().requests;
    let again = pipeline::crawl(config(&sim, &dir)).await.unwrap();
    assert_eq!(again.dead_letters.len(), USERS.len());
    assert_eq!(again.pages_from_journal, total_pages());
    assert_eq!(again.cache_hits, USERS.len() as u64);
    assert_eq!(
        sim.stats().requests,
        requests,
        "the looping pages came from the cache"
    );
    assert_eq!(lines(&journal), first + USERS.len());
}

/// Workers that never wait (an upstream that answers at once with a fresh cursor every time, as
/// a cache does) must still let the deadline's timer fire, even on a runtime with one thread.
#[test]
fn workers_that_never_wait_still_let_the_deadline_fire() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(async {
            let dir = TempDir::new("spin");
            let mut config = Config::new("http://127.0.0.1:9", dir.path());
            config.users = vec!["1".to_owned()];
            config.deadline = Some(Duration::from_millis(300));
            let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let endless = tower::service_fn(move |_: pipeline::ApiRequest| {
                let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let page = format!(r#"{{"response": {{"users": []}}, "next_page_id": "p{n}"}}"#);
                async move {
                    Ok::<_, tollway_core::BoxError>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(page),
                    )))
                }
            });
            pipeline::run(config, endless).await
        });
        let _ = done.send(
            result
                .map(|_| ())
                .map_err(|stopped| (stopped.reason, stopped.report.pages_fetched)),
        );
    });
    let result = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("the run starved its own deadline");
    let (reason, pages) = result.unwrap_err();
    assert_eq!(reason, StopReason::Deadline(Duration::from_millis(300)));
    assert!(pages > 0);
}

/// Finding 5: a body trickled one byte at a time hung past the request timeout and the
/// deadline. One timeout covers the whole exchange: each try fails on time (its `200` counted:
/// the upstream charged it), the deadline ends the run on time, and an upstream that stops
/// trickling is crawled to the end.
#[tokio::test]
async fn a_trickled_body_fails_on_time() {
    let sim = hostile(Hostile::Trickle(Duration::from_millis(200)), u64::MAX).await;
    let dir = TempDir::new("trickle");
    let mut config = config(&sim, &dir);
    config.request_timeout = Duration::from_millis(700);
    config.deadline = Some(Duration::from_millis(2500));
    let started = Instant::now();
    let stopped = pipeline::crawl(config).await.unwrap_err();
    assert_eq!(
        stopped.reason,
        StopReason::Deadline(Duration::from_millis(2500))
    );
    assert!(
        started.elapsed() < Duration::from_millis(3800),
        "{:?}",
        started.elapsed()
    );
    assert!(stopped.report.status(200) >= 3, "{:?}", stopped.report);
    assert_eq!(stopped.report.pages_fetched, 0);

    let once = hostile(Hostile::Trickle(Duration::from_millis(200)), 1).await;
    let dir = TempDir::new("trickle-once");
    let mut config = self::config(&once, &dir);
    config.request_timeout = Duration::from_millis(700);
    let report = pipeline::crawl(config).await.unwrap();
    assert_eq!(report.pages_fetched, total_pages(), "{report:?}");
    assert_eq!(
        report.credits_spent,
        total_pages() + 1,
        "the trickled 200 was charged"
    );
    // One exchange timed out, then the page came: well before a try's own outer limit.
    assert!((0.7..2.5).contains(&report.elapsed_s), "{report:?}");
}

/// Finding 6: a 50 MB page was accepted and journaled as one line. A body over the cap is a
/// dead letter at its first try (retrying would pay again for the same page), with a clear
/// reason; the journal never holds it; a page within the cap is crawled as usual.
#[tokio::test]
async fn a_page_over_the_body_cap_is_a_dead_letter_and_never_journaled() {
    const CAP: u64 = 256 * 1024;
    let sim = hostile(Hostile::Oversized(3 * 1024 * 1024), u64::MAX).await;
    let dir = TempDir::new("oversized");
    let mut config = config(&sim, &dir);
    config.max_body = CAP;
    let report = pipeline::crawl(config).await.unwrap();
    assert_eq!(report.dead_letters.len(), USERS.len(), "{report:?}");
    for letter in &report.dead_letters {
        assert_eq!(letter.tries, 1, "{letter:?}");
        assert!(
            letter.error.contains("over the cap of 262144 bytes"),
            "{letter:?}"
        );
    }
    assert_eq!(report.pages_fetched, 0);
    assert_eq!(
        sim.stats().credits_charged,
        USERS.len() as u64,
        "paid once, not retried"
    );
    assert_eq!(report.credits_spent, USERS.len() as u64);
    let journal = std::fs::metadata(dir.path().join(pipeline::queue::JOURNAL_FILE)).unwrap();
    assert!(journal.len() < 4096, "{}", journal.len());

    let within = hostile(Hostile::Oversized(64 * 1024), u64::MAX).await;
    let dir = TempDir::new("oversized-within");
    let mut config = self::config(&within, &dir);
    config.max_body = CAP;
    let report = pipeline::crawl(config).await.unwrap();
    assert_eq!(report.pages_fetched, total_pages(), "{report:?}");
}

/// Item 3, the run loop's side: a `200` the application rejects (not JSON, cut short, the
/// wrong shape) goes to the dead letters with the reason, and the next run asks for it again.
/// (Through a service without a response cache; `a_rejected_page_never_stays_in_the_cache`
/// covers the whole stack.)
#[tokio::test]
async fn a_page_the_application_rejects_is_tried_again_on_the_next_run() {
    use tower::Layer;
    for mode in [
        Hostile::InvalidJson,
        Hostile::TruncatedJson,
        Hostile::WrongShape,
    ] {
        // Each user's first page is spoilt on both tries.
        let sim = hostile(mode, 2 * USERS.len() as u64).await;
        let dir = TempDir::new(&format!("rejected-{mode}"));
        let service = || {
            pipeline::WireLogLayer
                .layer(pipeline::base_client::<http_body_util::Full<bytes::Bytes>>())
        };
        let mut first = config(&sim, &dir);
        first.max_tries = 2;
        let report = pipeline::run(first, service()).await.unwrap();
        assert_eq!(report.dead_letters.len(), USERS.len(), "{mode}: {report:?}");
        for letter in &report.dead_letters {
            assert!(
                letter.error.starts_with("200 OK: malformed page"),
                "{mode}: {letter:?}"
            );
            assert_eq!(letter.tries, 2);
        }
        let second = pipeline::run(config(&sim, &dir), service()).await.unwrap();
        assert!(second.dead_letters.is_empty(), "{mode}: {second:?}");
        assert_eq!(second.pages_fetched, total_pages(), "{mode}");
    }
}

/// Finding 3 through the whole stack: a broken `200` must not stay in the response cache. The
/// cache's validation hook runs `pipeline::accept_response`, so the retry within the same run
/// asks the upstream again instead of being served the cached garbage (without the hook every
/// user dead-letters here, and every later run too).
#[tokio::test]
async fn a_rejected_page_never_stays_in_the_cache() {
    for mode in [
        Hostile::InvalidJson,
        Hostile::TruncatedJson,
        Hostile::WrongShape,
    ] {
        // Each user's first page is spoilt once.
        let sim = hostile(mode, USERS.len() as u64).await;
        let dir = TempDir::new(&format!("rejected-cached-{mode}"));
        let mut config = config(&sim, &dir);
        config.max_tries = 2;
        let report = pipeline::crawl(config).await.unwrap();
        assert!(report.dead_letters.is_empty(), "{mode}: {report:?}");
        assert_eq!(report.pages_fetched, total_pages(), "{mode}");
        let stats = sim.stats();
        assert_eq!(
            stats.by_status.get("200").copied().unwrap_or(0),
            total_pages() + USERS.len() as u64,
            "{mode}: each spoilt page asked for exactly once more: {stats:?}"
        );
        // A second run is served by the journal and the cache: nothing upstream.
        let again = pipeline::crawl(self::config(&sim, &dir)).await.unwrap();
        assert!(again.dead_letters.is_empty(), "{mode}: {again:?}");
        assert_eq!(sim.stats().requests, stats.requests, "{mode}");
    }
}

/// Finding 7: `--budget` was per run, so 60 restarts of a crashing crawl spent 893 credits of a
/// budget of 30. The crawl's budget lives in its folder: each restart continues it (here each
/// run is cut short by a budget of its own, as a crash would cut it).
#[tokio::test]
async fn the_crawls_budget_holds_across_restarts() {
    let sim = Upstream::builder().rate(RATE).spawn().await.unwrap();
    let dir = TempDir::new("crawl-budget");
    let crawl = |earlier_runs| StopReason::CrawlBudgetSpent {
        budget: 8,
        earlier_runs,
    };
    let run = StopReason::BudgetSpent { budget: 3 };
    for (reason, spent, crawl_spent) in [
        (run.clone(), 3, 3),
        (run, 3, 6),
        (crawl(6), 2, 8),
        (crawl(8), 0, 8),
    ] {
        let mut config = config(&sim, &dir);
        // More workers than credits: reservations, not luck, keep the counts exact.
        config.concurrency = 16;
        config.budget = Some(8);
        config.budget_per_run = Some(3);
        let stopped = pipeline::crawl(config).await.unwrap_err();
        assert_eq!(stopped.reason, reason);
        assert_eq!(stopped.report.credits_spent, spent, "{:?}", stopped.report);
        assert_eq!(stopped.report.crawl_credits_spent, crawl_spent);
    }
    assert_eq!(sim.stats().credits_charged, 8);

    // The old meaning, for whoever wants it: each run may spend its own.
    let other = TempDir::new("per-run-budget");
    for _ in 0..2 {
        let mut config = config(&sim, &other);
        config.budget_per_run = Some(3);
        let stopped = pipeline::crawl(config).await.unwrap_err();
        assert_eq!(stopped.reason, StopReason::BudgetSpent { budget: 3 });
    }
    assert_eq!(sim.stats().credits_charged, 8 + 6);
}

/// The crawl's budget under `kill -9`: the binary killed at random moments, then run to the
/// end. However the kills fall, the upstream never charges more than the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crawls_budget_holds_across_kill_9() {
    const BUDGET: u64 = 9;
    let sim = Upstream::builder()
        .rate(RATE)
        .latency(Duration::from_millis(20))
        .spawn()
        .await
        .unwrap();
    let dir = TempDir::new("budget-kill");
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..30 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let after = Duration::from_millis(30 + seed % 250);
        let args = args(&sim, &dir, &["--budget", &BUDGET.to_string()]);
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline"))
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(after);
            let _ = child.kill();
            child.wait().unwrap();
        })
        .await
        .unwrap();
        assert!(sim.stats().credits_charged <= BUDGET, "{:?}", sim.stats());
    }
    let (output, _) = binary(args(&sim, &dir, &["--budget", &BUDGET.to_string()])).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("stopped: budget exhausted: the crawl's 9 credits are spent"),
        "{stderr}"
    );
    let stats = sim.stats();
    assert!(stats.credits_charged <= BUDGET, "{stats:?}");
    assert!(stats.credits_charged >= 1, "{stats:?}");
}

/// Finding 8: "N page(s) came from the journal" also counted cache hits. With the journal gone
/// and the response cache kept, every page comes from the cache and none from the journal, and
/// the binary says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_tells_the_journal_from_the_cache() {
    let sim = Upstream::builder().rate(RATE).spawn().await.unwrap();
    let dir = TempDir::new("sources");
    let (output, _) = binary(args(&sim, &dir, &[])).await;
    assert!(output.status.success(), "{output:?}");
    let (output, _) = binary(args(&sim, &dir, &[])).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "pipeline: {} page(s) came from the journal",
            total_pages()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("response cache"), "{stderr}");

    std::fs::remove_file(dir.path().join(pipeline::queue::JOURNAL_FILE)).unwrap();
    let report_path = dir.path().join("report.json");
    let (output, _) = binary(args(
        &sim,
        &dir,
        &["--report", &report_path.display().to_string()],
    ))
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("came from the journal"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "pipeline: {} answer(s) came from the response cache",
            total_pages()
        )),
        "{stderr}"
    );
    let report: Report = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(
        (report.pages_from_journal, report.cache_hits),
        (0, total_pages())
    );
    assert_eq!(report.credits_spent, 0);
    assert_eq!(sim.stats().credits_charged, total_pages());
}

/// One crawl per folder: a second run is refused while the first holds it, and a holder killed
/// with `kill -9` lets go (the kernel drops its lock) so the next run resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_in_use_is_refused_and_a_killed_holder_lets_go() {
    let sim = Upstream::builder()
        .rate(3)
        .latency(Duration::from_millis(100))
        .spawn()
        .await
        .unwrap();
    let dir = TempDir::new("lock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(args(&sim, &dir, &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let holder = Instant::now();
    while sim.stats().requests == 0 {
        assert!(
            holder.elapsed() < Duration::from_secs(10),
            "the holder never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = pipeline::crawl(config(&sim, &dir)).await.unwrap_err();
    assert!(
        matches!(stopped.reason, StopReason::Journal(ref why) if why.contains("another pipeline is using this folder")),
        "{:?}",
        stopped.reason
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let mut config = config(&sim, &dir);
    config.rate = NonZeroU32::new(3).unwrap();
    let report = pipeline::crawl(config).await.unwrap();
    assert_eq!(report.pages_fetched, total_pages());
}

/// Off a terminal the binary prints plain progress lines (no carriage returns, no escape
/// codes), every `--progress-every` while something changes, and one at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_plain_progress_lines_off_a_terminal() {
    let sim = Upstream::builder()
        .rate(10)
        .latency(Duration::from_millis(20))
        .spawn()
        .await
        .unwrap();
    let dir = TempDir::new("plain");
    let (output, _) = binary(args(&sim, &dir, &["--progress-every", "0.2"])).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("pipeline: users "))
        .collect();
    assert!(lines.len() >= 3, "{stderr}");
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "{stderr:?}"
    );
    let users = USERS.len();
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!(
            "pipeline: users {users}/{users} (0 failed) | pages {}",
            total_pages()
        )),
        "{last}"
    );
    assert!(last.contains("pages/s"), "{last}");
}

/// An upstream that accepts the connection and trickles its status line and headers a byte at a
/// time, forever (the body never starts). The exchange's one timeout covers the headers too:
/// every try fails on time, and the deadline ends the run on time with its report.
#[tokio::test]
async fn headers_trickled_forever_fail_on_time_and_the_deadline_holds() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let server = {
        let accepted = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = b"HTTP/1.1 200 OK\r\n".iter().copied().chain(
                        std::iter::repeat_n(b"X-Slow: 1\r\n".iter().copied(), usize::MAX).flatten(),
                    );
                    loop {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        // Whatever the client sent is read and ignored.
                        let mut sink = [0u8; 4096];
                        let _ = stream.try_read(&mut sink);
                        if stream.writable().await.is_err() {
                            return;
                        }
                        let byte = [head.next().unwrap_or(b' ')];
                        match stream.try_write(&byte) {
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => return,
                        }
                    }
                });
            }
        })
    };
    let dir = TempDir::new("trickled-headers");
    let mut config = Config::new(url, dir.path());
    config.users = vec![USERS[0].to_owned()];
    config.rate = NonZeroU32::new(RATE).unwrap();
    config.request_timeout = Duration::from_millis(600);
    config.deadline = Some(Duration::from_millis(2500));
    let started = Instant::now();
    let stopped = pipeline::crawl(config).await.unwrap_err();
    let elapsed = started.elapsed();
    server.abort();
    assert_eq!(
        stopped.reason,
        StopReason::Deadline(Duration::from_millis(2500))
    );
    // The deadline, the grace for what is in flight, and a margin for a busy machine.
    assert!(elapsed < Duration::from_millis(4500), "{elapsed:?}");
    assert_eq!(stopped.report.pages_fetched, 0);
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "a try timed out and another was made"
    );
}
