//! The run loop: workers that take page tasks from the queue, fetch them through the service,
//! and settle each outcome into the journal and the report.

use std::collections::VecDeque;
use std::sync::Arc;

use http::Response;
use http_body::Body;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tollway::cache::CacheStatus;
use tollway::retry::Attempts;
use tollway_core::{BoxError, Classify, OutcomeKind};
use tower::{Service, ServiceExt};

use super::config::Config;
use super::http::{ApiRequest, followers_request, read_body};
use super::queue::{Journal, UserFailure, UserState};
use super::report::{Mode, Report};
use super::scheduler::{Attempt, Run, Task, Traffic};
use super::stop::{StopReason, Stopped};
use super::wire::WireLog;

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
/// # Errors
///
/// [`Stopped`] when the run had to stop: 401, 402, the budget, the deadline, or the journal.
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
    let users = config.unique_users();
    let mut report = Report::new(Mode::Pipeline);
    report.users_requested = users.len() as u64;
    config.progress.set_users(users.len() as u64);

    if let Err(why) = check_config(&config) {
        return Err(Stopped {
            reason: StopReason::Config(why),
            report,
        });
    }
    let (journal, replay) = match Journal::open(&config.cache_dir) {
        Ok(opened) => opened,
        Err(error) => {
            return Err(Stopped {
                reason: StopReason::Journal(error.to_string()),
                report,
            });
        }
    };
    let mut ready = VecDeque::new();
    for user_id in users {
        let (state, pages, followers) = replay.user(&user_id);
        report.pages_fetched += pages;
        report.followers_fetched += followers;
        report.cache_hits += pages;
        for _ in 0..pages {
            config.progress.page();
        }
        match state {
            UserState::Done => {
                report.users_completed += 1;
                config.progress.user_done();
            }
            UserState::Failed(reason) => {
                report.users_failed.push(UserFailure { user_id, reason });
                config.progress.user_failed();
            }
            UserState::Next(cursor) => ready.push_back(Task::first(user_id, cursor)),
        }
    }
    tracing::info!(
        journal = %journal.path().display(),
        pages_held = report.cache_hits,
        users_left = ready.len(),
        "pipeline starting"
    );

    let run = Arc::new(Run::new(&config, ready, report, journal));

    let mut workers = JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        workers.spawn(worker(Arc::clone(&run), service.clone()));
    }
    let deadline = async {
        match config.deadline {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = join_all(&mut workers) => {}
        () = deadline => {
            if let Some(after) = config.deadline {
                run.stop(StopReason::Deadline(after));
            }
            // Let requests in flight finish: what they fetch is paid for and kept.
            join_all(&mut workers).await;
        }
    }

    let (mut report, stop) = run.finish();
    report.elapsed_s = started.elapsed().as_secs_f64();
    match stop {
        Some(reason) => {
            tracing::warn!(%reason, "pipeline stopped");
            Err(Stopped { reason, report })
        }
        None => Ok(report),
    }
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
    while let Some(task) = run.next_task().await {
        if let Some(at) = task.not_before {
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = run.wait_stopped() => {
                    run.release();
                    return;
                }
            }
        }
        if !run.reserve_credit().await {
            run.release();
            return;
        }
        let ready = tokio::select! {
            ready = service.ready() => ready,
            () = run.wait_stopped() => {
                run.refund_credit();
                run.release();
                return;
            }
        };
        let mut request = followers_request(&run.base_url, &run.key, &task.user_id, &task.page_id);
        let wire = WireLog::new();
        request.extensions_mut().insert(wire.clone());
        let attempt = match ready {
            Ok(service) => match service.call(request).await {
                Ok(response) => {
                    let outcome = run.classifier.classify(&response);
                    let traffic = traffic(&wire, Some(&response), false);
                    let body = read_body(response.into_body()).await;
                    Attempt::Answered {
                        outcome,
                        body,
                        traffic,
                    }
                }
                Err(error) => {
                    let outcome = run.classifier.classify_error(&*error);
                    let traffic =
                        traffic::<B>(&wire, None, outcome.kind() == OutcomeKind::Rejected);
                    Attempt::Failed {
                        outcome,
                        error,
                        traffic,
                    }
                }
            },
            Err(error) => {
                let outcome = run.classifier.classify_error(&*error);
                let traffic = traffic::<B>(&wire, None, outcome.kind() == OutcomeKind::Rejected);
                Attempt::Failed {
                    outcome,
                    error,
                    traffic,
                }
            }
        };
        run.settle(task, attempt);
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
