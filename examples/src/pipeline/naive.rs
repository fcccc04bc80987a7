//! `--naive`: the example client of the API document, ported faithfully, for comparison.
//!
//! One task per user id as given (the duplicate is crawled twice), all started at once; a
//! semaphore of `rate` permits around each request; `sleep(1 / rate)` after each request, as the
//! document recommends, while the permit is held; on 429, wait 2 s (still holding the permit) and
//! send again; on any other failure (402, 404, 500, 503, a broken connection, a body without
//! `response.users`) give up on the user and keep what it had. No journal, no retry budget, no
//! dead letters: what it gives up on is simply lost.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::config::Config;
use super::http::{base_client, detail, followers_request, read_body};
use super::queue::UserFailure;
use super::report::{Mode, Report};
use super::run::NOT_FOUND;
use super::stop::{StopReason, Stopped};

/// How long the example client waits after a 429.
pub const WAIT_ON_429: Duration = Duration::from_secs(2);

/// Runs the example client over `config.users` against `config.base_url`.
///
/// Uses `rate`, `users`, `key`, `base_url`, `deadline` and `progress` from `config`; the journal,
/// the budget, `concurrency` and `max_tries` are the pipeline's and play no part here.
///
/// # Errors
///
/// [`Stopped`] with [`StopReason::Deadline`] if `config.deadline` passes first. A 402 does not
/// stop it: like the original, it gives up on each user in turn.
pub async fn run(config: Config) -> Result<Report, Stopped> {
    let started = Instant::now();
    let report = Arc::new(Mutex::new(Report::new(Mode::Naive)));
    report.lock().users_requested = config.users.len() as u64;
    config.progress.set_users(config.users.len() as u64);
    let semaphore = Arc::new(Semaphore::new(config.rate.get() as usize));
    let pause = Duration::from_secs_f64(1.0 / f64::from(config.rate.get()));
    let config = Arc::new(config);

    let mut tasks = JoinSet::new();
    for user_id in config.users.clone() {
        tasks.spawn(get_followers(
            Arc::clone(&config),
            Arc::clone(&semaphore),
            Arc::clone(&report),
            user_id,
            pause,
        ));
    }
    let all = async { while tasks.join_next().await.is_some() {} };
    let finished = match config.deadline {
        Some(after) => tokio::time::timeout(after, all).await.is_ok(),
        None => {
            all.await;
            true
        }
    };
    let mut report = report.lock().clone();
    report.elapsed_s = started.elapsed().as_secs_f64();
    match (finished, config.deadline) {
        (false, Some(after)) => Err(Stopped {
            reason: StopReason::Deadline(after),
            report,
        }),
        _ => Ok(report),
    }
}

/// The example's `get_followers(user_id)`.
async fn get_followers(
    config: Arc<Config>,
    semaphore: Arc<Semaphore>,
    report: Arc<Mutex<Report>>,
    user_id: String,
    pause: Duration,
) {
    let mut client = base_client();
    let mut page_id = String::new();
    loop {
        let Ok(_permit) = semaphore.acquire().await else {
            return;
        };
        let request = followers_request(&config.base_url, &config.key, &user_id, &page_id);
        let result = match client.ready().await {
            Ok(client) => client.call(request).await,
            Err(error) => Err(error),
        };
        config.progress.request();
        let step = match result {
            Err(error) => Err(error.to_string()),
            Ok(response) => {
                let status = response.status();
                {
                    let mut report = report.lock();
                    report.requests_sent += 1;
                    *report
                        .responses
                        .entry(status.as_str().to_owned())
                        .or_default() += 1;
                    if status == StatusCode::OK {
                        report.credits_spent += 1;
                    }
                }
                let body = read_body(response.into_body(), config.max_body).await;
                page(status, body.ok().as_deref())
            }
        };
        tokio::time::sleep(pause).await;
        match step {
            Ok(Step::RateLimited) => {
                tracing::info!(%user_id, "Rate limit exceeded, waiting");
                report.lock().retries += 1;
                config.progress.retry();
                tokio::time::sleep(WAIT_ON_429).await;
            }
            Ok(Step::Page { followers, next }) => {
                let mut report = report.lock();
                report.pages_fetched += 1;
                report.followers_fetched += followers;
                config.progress.page();
                match next {
                    Some(next) => page_id = next,
                    None => {
                        report.users_completed += 1;
                        config.progress.user_done();
                        return;
                    }
                }
            }
            Err(reason) => {
                tracing::info!(%user_id, %reason, "Error in response");
                report
                    .lock()
                    .users_failed
                    .push(UserFailure { user_id, reason });
                config.progress.user_failed();
                return;
            }
        }
    }
}

enum Step {
    RateLimited,
    Page {
        followers: u64,
        next: Option<String>,
    },
}

/// What the example's loop body makes of a response: `Err` is its `except` branch.
fn page(status: StatusCode, body: Option<&[u8]>) -> Result<Step, String> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Ok(Step::RateLimited);
    }
    if status == StatusCode::PAYMENT_REQUIRED {
        return Err("insufficient balance".to_owned());
    }
    let body = body.ok_or_else(|| format!("{status}: the body could not be read"))?;
    let parsed = serde_json::from_slice::<super::http::FollowersPage>(body);
    match parsed {
        // The original reads `res["response"]["users"]` whatever the status.
        Ok(page) => Ok(Step::Page {
            followers: page.response.users.len() as u64,
            next: page.next_page_id.filter(|id| !id.is_empty()),
        }),
        Err(_) if status == StatusCode::NOT_FOUND => Err(NOT_FOUND.to_owned()),
        Err(_) => Err(format!(
            "{status} {}",
            detail(body).unwrap_or_else(|| "(no followers in the body)".to_owned())
        )
        .trim_end()
        .to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_body_gives_up_on_everything_but_429() {
        assert!(matches!(
            page(StatusCode::TOO_MANY_REQUESTS, None),
            Ok(Step::RateLimited)
        ));
        assert_eq!(
            page(
                StatusCode::NOT_FOUND,
                Some(br#"{"detail":"User not found"}"#)
            )
            .err(),
            Some(NOT_FOUND.to_owned())
        );
        assert_eq!(
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(br#"{"detail":"boom"}"#)
            )
            .err(),
            Some("500 Internal Server Error boom".to_owned())
        );
        assert!(page(StatusCode::PAYMENT_REQUIRED, None).is_err());
        let ok = page(
            StatusCode::OK,
            Some(br#"{"response":{"users":[1,2]},"next_page_id":"x"}"#),
        );
        assert!(matches!(ok, Ok(Step::Page { followers: 2, next: Some(ref n) }) if n == "x"));
    }
}
