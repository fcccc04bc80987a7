//! Settling one try's outcome: the journal first (so a kill loses nothing paid for), then the
//! next page, a retry after a capped wait, a dead letter, a failed user, or a stop.

use std::time::SystemTime;

use http::StatusCode;
use tokio::time::Instant;
use tollway_core::error::find_cause;
use tollway_core::{
    BoxError, BudgetExhausted, CircuitOpen, Classify, ExhaustedReason, Outcome, OutcomeKind,
    RateLimited, StoreUnavailable,
};

use super::budget::CreditHold;
use super::guard::BodyTooLarge;
use super::http::{FollowersPage, detail};
use super::queue::{DeadLetter, JournalError, PageRecord, Record, UserFailure};
use super::run::NOT_FOUND;
use super::scheduler::{Attempt, Run, State, Task, Traffic};
use super::stop::StopReason;
use super::validate::validate_page;
use super::wait::{backoff, later};

/// What became of a page in the journal.
enum Journaled {
    /// Nothing to write (or nothing to read: the answer was no page).
    NotNeeded { loops: bool },
    /// Written, or not, with the reason.
    Appended {
        loops: bool,
        result: Result<(), JournalError>,
    },
}

/// Runs `write` (a journal write and its fsync) without holding up the runtime's other tasks:
/// on a multi-thread runtime this worker hands them to another first. A current-thread runtime
/// has no other worker to hand them to.
fn off_the_runtime<T>(write: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(write)
        }
        _ => write(),
    }
}

/// How a failed try ends.
struct Failure {
    outcome: Outcome,
    message: String,
    /// Trying again cannot help (an oversized page): straight to the dead letters.
    last: bool,
}

impl Run {
    /// Records an attempt's outcome and releases its credit: charged for the `200`s it met.
    pub(super) fn settle(&self, task: Task, attempt: Attempt, hold: CreditHold) {
        let mut refused_for = None;
        let attempt = match attempt {
            Attempt::Failed {
                outcome,
                error,
                traffic,
            } if outcome.kind() == OutcomeKind::Rejected => {
                if traffic.sent == 0 {
                    return self.rejected(task, &*error, hold);
                }
                // A layer refused a resend (the breaker opened meanwhile, say) after attempts
                // that did reach the API: this try failed as its last answer did.
                refused_for = find_cause::<CircuitOpen>(&*error).map(CircuitOpen::retry_after);
                let (outcome, error): (Outcome, BoxError) = match traffic.statuses.last() {
                    Some(&status) => (
                        self.classifier
                            .classify_response(status, &http::HeaderMap::new()),
                        format!("{status}; then {error}").into(),
                    ),
                    None => (Outcome::new(OutcomeKind::Transport), error),
                };
                Attempt::Failed {
                    outcome,
                    error,
                    traffic,
                }
            }
            attempt => attempt,
        };
        // A page that came back whole goes to the journal first, before the state is locked:
        // its fsync takes milliseconds (tens of them on a busy disk), and the other workers,
        // and the requests they are sending, must not wait for it.
        let fetched = match &attempt {
            Attempt::Answered {
                outcome,
                body: Ok(body),
                ..
            } if outcome.is_success() => Some(validate_page(body)),
            _ => None,
        };
        let journaled = match &fetched {
            Some(Ok(page)) => self.journal_page(&task, page),
            _ => Journaled::NotNeeded { loops: false },
        };
        let mut state = self.state.lock();
        state.in_flight -= 1;
        // The reservation turns into spending under the same lock, so that no worker sees the
        // credit free in between.
        state.reserved = state.reserved.saturating_sub(1);
        let failure = match attempt {
            Attempt::Answered {
                outcome,
                body,
                traffic,
            } => {
                self.account(&mut state, &traffic, hold);
                let status = outcome.status().unwrap_or(StatusCode::OK);
                match body {
                    Ok(_) if outcome.is_success() => match fetched {
                        Some(Ok(page)) => {
                            self.page_fetched(&mut state, task, page, journaled);
                            drop(state);
                            self.changed.notify_waiters();
                            return;
                        }
                        None => unreachable!("a successful answer with a body is validated"),
                        Some(Err(invalid)) => Failure {
                            outcome: Outcome::new(OutcomeKind::ServerError).with_status(status),
                            message: format!("{status}: {invalid}"),
                            last: false,
                        },
                    },
                    Ok(body) => {
                        let why = detail(&body).unwrap_or_default();
                        Failure {
                            outcome,
                            message: format!("{status} {why}").trim_end().to_owned(),
                            last: false,
                        }
                    }
                    Err(error) => self.body_failed(status, &error),
                }
            }
            Attempt::Failed {
                outcome,
                error,
                traffic,
            } => {
                self.account(&mut state, &traffic, hold);
                let last = find_cause::<BodyTooLarge>(&*error).is_some();
                Failure {
                    outcome,
                    message: match traffic.statuses.last() {
                        Some(status) if last => format!("{status}: {error} (--max-body)"),
                        _ => error.to_string(),
                    },
                    last,
                }
            }
        };
        self.failed(state, task, failure, refused_for);
    }

    /// A body that could not be read whole: too large (final) or cut short (retried).
    fn body_failed(&self, status: StatusCode, error: &BoxError) -> Failure {
        let outcome = self.classifier.classify_error(&**error).with_status(status);
        match find_cause::<BodyTooLarge>(&**error) {
            Some(too_large) => Failure {
                outcome,
                message: format!("{status}: {too_large} (--max-body)"),
                last: true,
            },
            None => Failure {
                outcome: match outcome.kind() {
                    OutcomeKind::Timeout => outcome,
                    _ => Outcome::new(OutcomeKind::Transport).with_status(status),
                },
                message: format!("{status}: body: {error}"),
                last: false,
            },
        }
    }

    fn failed(
        &self,
        mut state: parking_lot::MutexGuard<'_, super::scheduler::State>,
        mut task: Task,
        failure: Failure,
        refused_for: Option<std::time::Duration>,
    ) {
        let Failure {
            outcome,
            message,
            last,
        } = failure;
        tracing::debug!(user_id = %task.user_id, page_id = %task.page_id, %message, "attempt failed");
        match (outcome.kind(), outcome.status()) {
            (OutcomeKind::ClientError, Some(StatusCode::NOT_FOUND)) if !last => {
                let failure = UserFailure {
                    user_id: task.user_id,
                    reason: NOT_FOUND.to_owned(),
                };
                if let Err(error) = self.append(&[Record::UserFailed(failure.clone())]) {
                    drop(state);
                    return self.stop(StopReason::Journal(error.to_string()));
                }
                state.report.users_failed.push(failure);
                self.progress.user_failed();
            }
            (_, Some(StatusCode::UNAUTHORIZED)) => {
                drop(state);
                return self.stop(StopReason::Unauthorized);
            }
            (OutcomeKind::CreditsExhausted, _) => {
                drop(state);
                return self.stop(StopReason::InsufficientBalance);
            }
            (kind, _) => {
                task.tries += 1;
                if last || !kind.is_retryable() || task.tries >= self.max_tries {
                    let error = self.dead_letter(&mut state, task, message);
                    if let Some(error) = error {
                        drop(state);
                        return self.stop(StopReason::Journal(error.to_string()));
                    }
                } else {
                    // The upstream's hint when it gave one (`asked_s` in the log), else backoff.
                    let hint = outcome.retry_delay(SystemTime::now());
                    let mut wait = hint.unwrap_or_else(|| backoff(task.tries));
                    let mut why = message;
                    if let Some(open_for) = refused_for {
                        let now = Instant::now();
                        if state.breaker_open_until.is_none_or(|until| now >= until) {
                            state.report.breaker_opens += 1;
                        }
                        state.breaker_open_until = Some(later(now, open_for.min(self.max_wait)));
                        if open_for > wait {
                            wait = open_for;
                            why = "the circuit breaker is open".to_owned();
                        }
                    }
                    state.report.retries += 1;
                    self.progress.retry();
                    self.wait_then_retry(&mut state, task, wait, &why);
                }
            }
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Gives a page up for this run, in the journal and the report; the journal's error if it
    /// could not be written.
    fn dead_letter(&self, state: &mut State, task: Task, error: String) -> Option<JournalError> {
        let letter = DeadLetter {
            user_id: task.user_id,
            page_id: task.page_id,
            tries: task.tries.max(1),
            error,
        };
        tracing::warn!(user_id = %letter.user_id, page_id = %letter.page_id, error = %letter.error, "dead letter");
        if let Err(error) = self.append(&[Record::DeadLetter(letter.clone())]) {
            return Some(error);
        }
        state.report.dead_letters.push(letter);
        None
    }

    fn append(&self, records: &[Record]) -> Result<(), JournalError> {
        off_the_runtime(|| self.journal.lock().append(records))
    }

    /// Journals a page that came back whole, unless it is a held page whose cursor still
    /// loops (it is in the journal as it is). Locks the state only to read the user's chain.
    fn journal_page(&self, task: &Task, page: &FollowersPage) -> Journaled {
        let loops = page.next_page_id.as_ref().is_some_and(|next| {
            *next == task.page_id
                || self
                    .state
                    .lock()
                    .chains
                    .get(&task.user_id)
                    .is_some_and(|chain| chain.contains(next))
        });
        if task.held && loops {
            return Journaled::NotNeeded { loops };
        }
        let record = Record::Page(PageRecord {
            user_id: task.user_id.clone(),
            page_id: task.page_id.clone(),
            next_page_id: page.next_page_id.clone(),
            followers: page.response.users.clone(),
        });
        Journaled::Appended {
            loops,
            result: self.append(&[record]),
        }
    }

    /// Counts what a try put on the wire, and settles its credit.
    fn account(&self, state: &mut State, traffic: &Traffic, hold: CreditHold) {
        if traffic.cached {
            state.report.cache_hits += 1;
        }
        state.report.requests_sent += traffic.sent;
        state.report.retries += traffic.resends;
        for status in &traffic.statuses {
            *state
                .report
                .responses
                .entry(status.as_str().to_owned())
                .or_default() += 1;
        }
        let charged = traffic.charged();
        state.report.credits_spent += charged;
        hold.settle(charged);
        for _ in 0..traffic.sent {
            self.progress.request();
        }
        for _ in 0..traffic.resends {
            self.progress.retry();
        }
    }

    /// A page came back whole and was `journaled`: queue the next one, or finish the user, or
    /// (its cursor points back into the user's chain) give it up with the reason.
    fn page_fetched(
        &self,
        state: &mut State,
        task: Task,
        page: FollowersPage,
        journaled: Journaled,
    ) {
        let followers = page.response.users.len() as u64;
        let next = page.next_page_id;
        let loops = match journaled {
            Journaled::NotNeeded { loops }
            | Journaled::Appended {
                loops,
                result: Ok(()),
            } => loops,
            Journaled::Appended {
                result: Err(JournalError::TooLarge { len, max }),
                ..
            } => {
                let message = format!(
                    "200 OK: the page is {len} bytes as a journal line, over the {max} allowed (--max-body)"
                );
                if let Some(error) = self.dead_letter(state, task, message) {
                    self.stop_locked(state, StopReason::Journal(error.to_string()));
                }
                return;
            }
            Journaled::Appended {
                result: Err(error), ..
            } => {
                return self.stop_locked(state, StopReason::Journal(error.to_string()));
            }
        };
        if !task.held {
            state.report.pages_fetched += 1;
            state.report.followers_fetched += followers;
            self.progress.page();
        }
        match next {
            Some(next) if loops => {
                let message = format!(
                    "next_page_id {next:?} points back to an earlier page of this user: the upstream's cursors loop"
                );
                let task = Task {
                    tries: task.tries + 1,
                    ..task
                };
                if let Some(error) = self.dead_letter(state, task, message) {
                    self.stop_locked(state, StopReason::Journal(error.to_string()));
                }
            }
            Some(next) => {
                state
                    .chains
                    .entry(task.user_id.clone())
                    .or_default()
                    .insert(task.page_id);
                state.ready.push_back(Task::first(task.user_id, next));
            }
            None => {
                state.chains.remove(&task.user_id);
                state.report.users_completed += 1;
                self.progress.user_done();
            }
        }
    }

    /// Stops the run while its state is locked by the caller.
    fn stop_locked(&self, state: &mut State, reason: StopReason) {
        if state.stop.is_none() {
            state.stop = Some(reason);
        }
        self.signal_stop();
    }

    /// A tollway layer refused the request before it was sent: no try is used up.
    fn rejected(&self, task: Task, error: &(dyn std::error::Error + 'static), hold: CreditHold) {
        let now = Instant::now();
        let mut state = self.state.lock();
        // Settled under one lock with the task's return to the queue, so that no worker sees
        // an empty queue and nothing in flight in between and takes the run for finished.
        state.in_flight -= 1;
        state.reserved = state.reserved.saturating_sub(1);
        hold.settle(0);
        if let Some(exhausted) = find_cause::<BudgetExhausted>(error) {
            state.report.budget_exhausted += 1;
            drop(state);
            let reason = match (exhausted.reason(), self.fleet_budget) {
                (ExhaustedReason::Upstream402, _) => StopReason::InsufficientBalance,
                (ExhaustedReason::Window, Some(budget)) => StopReason::FleetBudgetSpent { budget },
                _ => StopReason::BudgetExhausted(exhausted.to_string()),
            };
            return self.stop(reason);
        }
        if let Some(unavailable) = find_cause::<StoreUnavailable>(error) {
            drop(state);
            return self.stop(StopReason::Store(super::stack::one_line(unavailable)));
        }
        let (wait, why) = if let Some(open) = find_cause::<CircuitOpen>(error) {
            // One trip per open period: a refusal after the last known period ended is a new one.
            if state.breaker_open_until.is_none_or(|until| now >= until) {
                state.report.breaker_opens += 1;
            }
            let wait = open.retry_after();
            state.breaker_open_until = Some(later(now, wait.min(self.max_wait)));
            (wait, "the circuit breaker is open")
        } else if let Some(limited) = find_cause::<RateLimited>(error) {
            (limited.retry_after(), "the rate limiter has no permit yet")
        } else {
            (backoff(1), "a layer refused the request")
        };
        self.wait_then_retry(&mut state, task, wait, why);
        drop(state);
        self.changed.notify_waiters();
    }
}
