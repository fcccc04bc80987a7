//! The run loop: workers that take page tasks from the queue, fetch them through the service,
//! and settle each outcome into the journal and the report.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use http_body::Body;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tollway::cache::CacheStatus;
use tollway::retry::Attempts;
use tollway_core::{BoxError, Classify, OutcomeKind};
use tower::{Service, ServiceExt};

use super::budget::CrawlLedger;
use super::config::{Config, DEADLINE_GRACE};
use super::guard::ExchangeTimeout;
use super::http::{ApiRequest, followers_request, read_body};
use super::queue::{Journal, JournalError, Replay, UserFailure, UserState};
use super::report::{Mode, Report};
use super::scheduler::{Attempt, Run, Task, Traffic};
use super::stop::{StopReason, Stopped};
use super::validate::MAX_CURSOR_BYTES;
use super::wait::later;
use super::wire::WireLog;

/// How long a run waits for another run to let go of its folder before it gives up.
pub const LOCK_WAIT: Duration = Duration::from_secs(1);

/// The reason recorded for a user the API does not know (404): a permanent failure.
pub const NOT_FOUND: &str = "not found";

/// Crawls every user of `config` through `service`, resuming from the journal in
/// `config.cache_dir`.
///
/// `service` is cloned once per worker (`config.concurrency` of them): the tollway stack
/// ([`tollway_stack`](super::tollway_stack), or [`crawl`](super::crawl) that builds it) in
/// front of [`base_client`](super::base_client), or any service of this shape. Each request carries a
/// [`WireLog`] that the pipeline's stack fills below every layer, so every attempt is counted
/// with its status; for other services, a response's [`Attempts`] extension (the retry
/// layer's) counts as that many requests, and one the cache's `x-tollway-cache` header marks
/// as a hit costs no request and no credit.
///
/// Every wait is capped at `config.max_wait`, and the deadline ends the run on time: requests
/// in flight get [`DEADLINE_GRACE`] to finish (what they fetch is paid for and kept), then they
/// are abandoned. A try abandoned in flight counts as spent in the crawl's ledger.
///
/// # Errors
///
/// [`Stopped`] when the run had to stop: 401, 402, a budget, the deadline, or the journal.
/// Pages fetched until then are in the journal.
pub async fn run<S, B>(config: Config, service: S) -> Result<Report, Stopped>
where
    S: Service<ApiRequest, Response = Response<B>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let deadline = config.deadline.map(|after| (after, later(started, after)));
    let users = config.unique_users();
    let mut report = Report::new(Mode::Pipeline);
    report.users_requested = users.len() as u64;
    config.progress.set_users(users.len() as u64);
    let stopped = |reason, report| Stopped { reason, report };

    if let Err(why) = check_config(&config) {
        return Err(stopped(StopReason::Config(why), report));
    }
    let (journal, replay) = match open_journal(&config.cache_dir).await {
        Ok(opened) => opened,
        Err(error) => return Err(stopped(StopReason::Journal(error.to_string()), report)),
    };
    // A page takes more room as a journal line than as a body only by its two cursors.
    let journal = journal.with_max_line(journal_line_limit(config.max_body));
    let crawl = if config.fleet.is_some() {
        None
    } else {
        match CrawlLedger::open(&config.cache_dir, config.budget) {
            Ok(ledger) => Some(ledger),
            Err(error) => {
                return Err(stopped(
                    StopReason::Journal(format!("the crawl's ledger: {error}")),
                    report,
                ));
            }
        }
    };
    let mut ready = VecDeque::new();
    let mut chains = HashMap::new();
    for user_id in users {
        let held = replay.user(&user_id);
        report.pages_fetched += held.pages;
        report.followers_fetched += held.followers;
        report.pages_from_journal += held.pages;
        for _ in 0..held.pages {
            config.progress.page();
        }
        match held.state {
            UserState::Done => {
                report.users_completed += 1;
                config.progress.user_done();
                continue;
            }
            UserState::Failed(reason) => {
                report.users_failed.push(UserFailure { user_id, reason });
                config.progress.user_failed();
                continue;
            }
            UserState::Next(cursor) => ready.push_back(Task::first(user_id.clone(), cursor)),
            UserState::Loops(cursor) => ready.push_back(Task {
                held: true,
                ..Task::first(user_id.clone(), cursor)
            }),
        }
        chains.insert(user_id, held.chain.into_iter().collect::<HashSet<_>>());
    }
    tracing::debug!(
        journal = %journal.path().display(),
        pages_held = report.pages_from_journal,
        users_left = ready.len(),
        crawl_spent = crawl.as_ref().map(CrawlLedger::spent_before),
        "pipeline starting"
    );

    let run = Arc::new(Run::new(&config, ready, chains, report, journal, crawl));
    let mut workers = JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        workers.spawn(worker(Arc::clone(&run), service.clone()));
    }
    let deadline_passed = async {
        match deadline {
            Some((_, at)) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = join_all(&mut workers) => {}
        () = deadline_passed => {
            if let Some((after, _)) = deadline {
                run.stop(StopReason::Deadline(after));
            }
            // Let requests in flight finish for a moment: what they fetch is paid for and kept.
            if tokio::time::timeout(DEADLINE_GRACE, join_all(&mut workers)).await.is_err() {
                tracing::warn!(
                    abandoned = workers.len(),
                    "the deadline passed: abandoning requests still in flight"
                );
                workers.abort_all();
                join_all(&mut workers).await;
            }
        }
    }

    let (mut report, stop) = run.finish();
    report.elapsed_s = started.elapsed().as_secs_f64();
    if report.crawl_credits_spent == 0 {
        report.crawl_credits_spent = report.credits_spent;
    }
    match stop {
        Some(reason) => {
            tracing::debug!(%reason, "pipeline stopped");
            Err(Stopped { reason, report })
        }
        None => Ok(report),
    }
}

/// Opens the journal, waiting up to [`LOCK_WAIT`] for its lock: a run dropped in this process
/// a moment ago lets go of it only as its aborted tasks end.
async fn open_journal(dir: &Path) -> Result<(Journal, Replay), JournalError> {
    let give_up = later(Instant::now(), LOCK_WAIT);
    loop {
        match Journal::open(dir) {
            Err(JournalError::Locked { .. }) if Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            opened => return opened,
        }
    }
}

/// The longest journal line a page may take: the body cap, plus room for the two cursors, the
/// user id and the line's keys.
fn journal_line_limit(max_body: u64) -> usize {
    let slack = 2 * MAX_CURSOR_BYTES + 4096;
    usize::try_from(max_body)
        .unwrap_or(usize::MAX)
        .saturating_add(slack)
}

/// Refuses a base URL or key that no request could carry, before anything is sent.
fn check_config(config: &Config) -> Result<(), String> {
    let uri: http::Uri = config
        .base_url
        .parse()
        .map_err(|e| format!("base URL `{}`: {e}", config.base_url))?;
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) || uri.authority().is_none() {
        return Err(format!(
            "base URL `{}`: expected http://HOST[:PORT] (the base client speaks plain HTTP/1)",
            config.base_url
        ));
    }
    http::HeaderValue::from_str(&config.key)
        .map_err(|_| "the access key is not a valid header value".to_owned())?;
    Ok(())
}

async fn join_all(workers: &mut JoinSet<()>) {
    while let Some(joined) = workers.join_next().await {
        if let Err(error) = joined
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

async fn worker<S, B>(run: Arc<Run>, mut service: S)
where
    S: Service<ApiRequest, Response = Response<B>, Error = BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    loop {
        // Answers from the cache come back at once: without a yield, workers that never wait
        // could keep the runtime's threads from its timers (the deadline's among them).
        tokio::task::yield_now().await;
        let Some(task) = run.next_task().await else {
            return;
        };
        if let Some(at) = task.not_before {
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = run.wait_stopped() => {
                    run.release();
                    return;
                }
            }
        }
        let Some(hold) = run.reserve_credit().await else {
            run.release();
            return;
        };
        let ready = tokio::select! {
            ready = service.ready() => ready,
            () = run.wait_stopped() => {
                run.refund_credit(hold);
                run.release();
                return;
            }
        };
        let mut request = followers_request(&run.base_url, &run.key, &task.user_id, &task.page_id);
        let wire = WireLog::new();
        request.extensions_mut().insert(wire.clone());
        let attempt = match ready {
            Ok(service) => {
                // The stack bounds each exchange itself; this bounds any service, the stack's
                // resends and waits included.
                let exchange = async {
                    let response = service.call(request).await?;
                    let outcome = run.classifier.classify(&response);
                    let traffic = traffic(&wire, Some(&response), false);
                    let body = read_body(response.into_body(), run.max_body).await;
                    Ok::<_, BoxError>(Attempt::Answered {
                        outcome,
                        body,
                        traffic,
                    })
                };
                match tokio::time::timeout(run.try_timeout, exchange).await {
                    Ok(Ok(attempt)) => attempt,
                    Ok(Err(error)) => failed::<B>(&run, &wire, error),
                    Err(_) => {
                        failed::<B>(&run, &wire, Box::new(ExchangeTimeout::new(run.try_timeout)))
                    }
                }
            }
            Err(error) => failed::<B>(&run, &wire, error),
        };
        run.settle(task, attempt, hold);
    }
}

fn failed<B>(run: &Run, wire: &WireLog, error: BoxError) -> Attempt {
    let outcome = run.classifier.classify_error(&*error);
    let traffic = traffic::<B>(wire, None, outcome.kind() == OutcomeKind::Rejected);
    Attempt::Failed {
        outcome,
        error,
        traffic,
    }
}

/// What a try put on the wire: the [`WireLog`] when the service keeps one (the pipeline's
/// stack does, below every layer); otherwise what the response says (the retry layer's
/// [`Attempts`], the cache's `x-tollway-cache`), and one request for an error that is not a
/// layer's refusal.
fn traffic<B>(wire: &WireLog, response: Option<&Response<B>>, refused: bool) -> Traffic {
    let cached = response.is_some_and(|response| {
        matches!(
            CacheStatus::from_headers(response.headers()),
            Some(CacheStatus::Hit | CacheStatus::Stale | CacheStatus::Coalesced)
        )
    });
    let entries = wire.entries();
    if !entries.is_empty() {
        return Traffic {
            sent: entries.len() as u64,
            statuses: entries.iter().flatten().copied().collect(),
            resends: entries.len() as u64 - 1,
            cached,
        };
    }
    match response {
        Some(_) if cached => Traffic {
            cached,
            ..Traffic::default()
        },
        Some(response) => {
            let resends = response
                .extensions()
                .get::<Attempts>()
                .map_or(0, |attempts| u64::from(attempts.resends()));
            Traffic {
                sent: 1 + resends,
                statuses: vec![response.status()],
                resends,
                cached,
            }
        }
        None if refused => Traffic::default(),
        None => Traffic {
            sent: 1,
            ..Traffic::default()
        },
    }
}
