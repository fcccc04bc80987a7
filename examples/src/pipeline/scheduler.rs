//! The state the workers of a run share: the queue of page tasks, the credit reservations, the
//! report, and the settling of each attempt's outcome into the journal.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tollway_core::error::find_cause;
use tollway_core::{
    BoxError, BudgetExhausted, CircuitOpen, Classifier, Classify, ExhaustedReason, Outcome,
    OutcomeKind, RateLimited, StoreUnavailable,
};

use super::config::Config;
use super::http::{FollowersPage, detail};
use super::queue::{DeadLetter, Journal, PageRecord, Record, UserFailure};
use super::report::Report;
use super::run::NOT_FOUND;
use super::stop::StopReason;

/// The first retry waits this long when the upstream gave no hint; each further one doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two tries without a hint.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One page to fetch.
#[derive(Debug)]
pub(super) struct Task {
    pub(super) user_id: String,
    pub(super) page_id: String,
    /// Failed attempts so far.
    tries: u32,
    /// Not to be sent before this (a retry's wait).
    pub(super) not_before: Option<Instant>,
}

impl Task {
    pub(super) fn first(user_id: String, page_id: String) -> Self {
        Self {
            user_id,
            page_id,
            tries: 0,
            not_before: None,
        }
    }
}

#[derive(Debug)]
pub(super) struct State {
    ready: VecDeque<Task>,
    /// Tasks held by workers.
    in_flight: usize,
    /// Credits reserved by requests in flight (for the budget).
    reserved: u64,
    stop: Option<StopReason>,
    report: Report,
    /// When the breaker last seen open lets a probe through.
    breaker_open_until: Option<Instant>,
}

/// What one try of a page came back with.
pub(super) enum Attempt {
    /// A response, its body read.
    Answered {
        outcome: Outcome,
        body: Result<bytes::Bytes, BoxError>,
        traffic: Traffic,
    },
    /// An error from the service.
    Failed {
        outcome: Outcome,
        error: BoxError,
        traffic: Traffic,
    },
}

/// What one try of a page put on the wire: the stack may send several attempts for it.
#[derive(Debug, Default)]
pub(super) struct Traffic {
    /// Requests sent.
    pub(super) sent: u64,
    /// Their answers' statuses (transport errors have none).
    pub(super) statuses: Vec<StatusCode>,
    /// Requests sent again by the stack after a failed attempt.
    pub(super) resends: u64,
    /// The answer came from the cache: it cost no credit.
    pub(super) cached: bool,
}

#[derive(Debug)]
pub(super) struct Run {
    pub(super) base_url: String,
    pub(super) key: String,
    max_tries: u32,
    /// This process's budget, counted here (the ledger in the stack counts it too).
    budget: Option<u64>,
    /// The fleet's budget, counted by the ledger in Redis alone.
    fleet_budget: Option<u64>,
    progress: super::progress::Progress,
    state: Mutex<State>,
    changed: Notify,
    stopped: watch::Sender<bool>,
    journal: Mutex<Journal>,
    pub(super) classifier: Classifier,
}

impl Run {
    /// The shared state of a run starting with `ready` and `report` (what the journal held).
    pub(super) fn new(
        config: &Config,
        ready: VecDeque<Task>,
        report: Report,
        journal: Journal,
    ) -> Self {
        Self {
            base_url: config.base_url.clone(),
            key: config.key.clone(),
            max_tries: config.max_tries.max(1),
            // In fleet mode the budget is the fleet's: only the ledger in Redis can count it.
            budget: config.budget.filter(|_| config.fleet.is_none()),
            fleet_budget: config.budget.filter(|_| config.fleet.is_some()),
            progress: config.progress.clone(),
            state: Mutex::new(State {
                ready,
                in_flight: 0,
                reserved: 0,
                stop: None,
                report,
                breaker_open_until: None,
            }),
            changed: Notify::new(),
            stopped: watch::Sender::new(false),
            journal: Mutex::new(journal),
            classifier: Classifier::default(),
        }
    }

    /// The report so far, and why the run stopped, if it did.
    pub(super) fn finish(&self) -> (Report, Option<StopReason>) {
        let mut state = self.state.lock();
        (state.report.clone(), state.stop.take())
    }

    /// The next task, or `None` when the run is stopped or every task is settled.
    pub(super) async fn next_task(&self) -> Option<Task> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock();
                if state.stop.is_some() {
                    return None;
                }
                if let Some(task) = take_soonest(&mut state.ready) {
                    state.in_flight += 1;
                    return Some(task);
                }
                if state.in_flight == 0 {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// A worker gives up the task it holds (the run is stopping).
    pub(super) fn release(&self) {
        self.state.lock().in_flight -= 1;
        self.changed.notify_waiters();
    }

    pub(super) async fn wait_stopped(&self) {
        let mut stopped = self.stopped.subscribe();
        let _ = stopped.wait_for(|&stopped| stopped).await;
    }

    pub(super) fn stop(&self, reason: StopReason) {
        {
            let mut state = self.state.lock();
            if state.stop.is_none() {
                state.stop = Some(reason);
            }
        }
        self.stopped.send_replace(true);
        self.changed.notify_waiters();
    }

    /// Reserves the credit a request may cost before it is sent, so that concurrent requests
    /// cannot overspend the budget. Waits while requests in flight may still give credit back;
    /// `false` when the run stops.
    pub(super) async fn reserve_credit(&self) -> bool {
        let Some(budget) = self.budget else {
            return self.state.lock().stop.is_none();
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock();
                if state.stop.is_some() {
                    return false;
                }
                if state.report.credits_spent + state.reserved < budget {
                    state.reserved += 1;
                    return true;
                }
                if state.reserved == 0 {
                    state.report.budget_exhausted += 1;
                    drop(state);
                    self.stop(StopReason::BudgetSpent { budget });
                    return false;
                }
            }
            notified.await;
        }
    }

    pub(super) fn refund_credit(&self) {
        if self.budget.is_some() {
            let mut state = self.state.lock();
            state.reserved = state.reserved.saturating_sub(1);
        }
    }

    /// Records an attempt's outcome: the journal first (so a kill loses nothing paid for), then
    /// the next task, a retry, a dead letter, a failed user, or a stop.
    pub(super) fn settle(&self, mut task: Task, attempt: Attempt) {
        let mut refused_for = None;
        let attempt = match attempt {
            Attempt::Failed {
                outcome,
                error,
                traffic,
            } if outcome.kind() == OutcomeKind::Rejected => {
                if traffic.sent == 0 {
                    return self.rejected(task, &*error);
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
        let mut state = self.state.lock();
        state.in_flight -= 1;
        // The reservation turns into spending (a 200) under the same lock, so that no worker
        // sees the credit free in between.
        if self.budget.is_some() {
            state.reserved = state.reserved.saturating_sub(1);
        }
        let now = Instant::now();
        let (outcome, failure) = match attempt {
            Attempt::Answered {
                outcome,
                body,
                traffic,
            } => {
                let status = outcome.status().unwrap_or(StatusCode::OK);
                self.account(&mut state, &traffic);
                match body {
                    Ok(body) if outcome.is_success() => {
                        match serde_json::from_slice::<FollowersPage>(&body) {
                            Ok(page) => {
                                self.page_fetched(&mut state, task, page);
                                drop(state);
                                self.changed.notify_waiters();
                                return;
                            }
                            Err(error) => (
                                Outcome::new(OutcomeKind::ServerError).with_status(status),
                                format!("{status}: malformed page: {error}"),
                            ),
                        }
                    }
                    Ok(body) => {
                        let why = detail(&body).unwrap_or_default();
                        (outcome, format!("{status} {why}").trim_end().to_owned())
                    }
                    Err(error) => (
                        Outcome::new(OutcomeKind::Transport).with_status(status),
                        format!("{status}: body: {error}"),
                    ),
                }
            }
            Attempt::Failed {
                outcome,
                error,
                traffic,
            } => {
                self.account(&mut state, &traffic);
                (outcome, error.to_string())
            }
        };
        tracing::debug!(user_id = %task.user_id, page_id = %task.page_id, %failure, "attempt failed");

        match (outcome.kind(), outcome.status()) {
            (OutcomeKind::ClientError, Some(StatusCode::NOT_FOUND)) => {
                let failure = UserFailure {
                    user_id: task.user_id,
                    reason: NOT_FOUND.to_owned(),
                };
                if let Err(error) = self
                    .journal
                    .lock()
                    .append(&[Record::UserFailed(failure.clone())])
                {
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
                if !kind.is_retryable() || task.tries >= self.max_tries {
                    let letter = DeadLetter {
                        user_id: task.user_id,
                        page_id: task.page_id,
                        tries: task.tries,
                        error: failure,
                    };
                    tracing::warn!(user_id = %letter.user_id, error = %letter.error, "dead letter");
                    if let Err(error) = self
                        .journal
                        .lock()
                        .append(&[Record::DeadLetter(letter.clone())])
                    {
                        drop(state);
                        return self.stop(StopReason::Journal(error.to_string()));
                    }
                    state.report.dead_letters.push(letter);
                } else {
                    let mut wait = outcome
                        .retry_delay(SystemTime::now())
                        .unwrap_or_else(|| backoff(task.tries));
                    if let Some(open_for) = refused_for {
                        if state.breaker_open_until.is_none_or(|until| now >= until) {
                            state.report.breaker_opens += 1;
                        }
                        state.breaker_open_until = Some(now + open_for);
                        wait = wait.max(open_for);
                    }
                    task.not_before = Some(now + wait);
                    state.report.retries += 1;
                    self.progress.retry();
                    state.ready.push_back(task);
                }
            }
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Counts what a try put on the wire.
    fn account(&self, state: &mut State, traffic: &Traffic) {
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
            if *status == StatusCode::OK {
                state.report.credits_spent += 1;
            }
        }
        for _ in 0..traffic.sent {
            self.progress.request();
        }
        for _ in 0..traffic.resends {
            self.progress.retry();
        }
    }

    fn page_fetched(&self, state: &mut State, task: Task, page: FollowersPage) {
        let followers = page.response.users.len() as u64;
        let next = page.next_page_id.filter(|id| !id.is_empty());
        let record = Record::Page(PageRecord {
            user_id: task.user_id.clone(),
            page_id: task.page_id,
            next_page_id: next.clone(),
            followers: page.response.users,
        });
        if let Err(error) = self.journal.lock().append(&[record]) {
            if state.stop.is_none() {
                state.stop = Some(StopReason::Journal(error.to_string()));
            }
            self.stopped.send_replace(true);
            return;
        }
        state.report.pages_fetched += 1;
        state.report.followers_fetched += followers;
        self.progress.page();
        match next {
            Some(page_id) => state.ready.push_back(Task::first(task.user_id, page_id)),
            None => {
                state.report.users_completed += 1;
                self.progress.user_done();
            }
        }
    }

    /// A tollway layer refused the request before it was sent: no try is used up.
    fn rejected(&self, mut task: Task, error: &(dyn std::error::Error + 'static)) {
        let now = Instant::now();
        let mut state = self.state.lock();
        // Settled under one lock with the task's return to the queue, so that no worker sees
        // an empty queue and nothing in flight in between and takes the run for finished.
        state.in_flight -= 1;
        if self.budget.is_some() {
            state.reserved = state.reserved.saturating_sub(1);
        }
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
        let wait = if let Some(open) = find_cause::<CircuitOpen>(error) {
            // One trip per open period: a refusal after the last known period ended is a new one.
            if state.breaker_open_until.is_none_or(|until| now >= until) {
                state.report.breaker_opens += 1;
            }
            state.breaker_open_until = Some(now + open.retry_after());
            open.retry_after()
        } else if let Some(limited) = find_cause::<RateLimited>(error) {
            limited.retry_after()
        } else {
            backoff(1)
        };
        tracing::debug!(user_id = %task.user_id, %error, ?wait, "refused by a layer");
        task.not_before = Some(now + wait);
        state.ready.push_back(task);
        drop(state);
        self.changed.notify_waiters();
    }
}

/// The task to work on next: the first one due, or else the one due soonest.
fn take_soonest(ready: &mut VecDeque<Task>) -> Option<Task> {
    let now = Instant::now();
    let index = ready
        .iter()
        .position(|task| task.not_before.is_none_or(|at| at <= now))
        .or_else(|| {
            ready
                .iter()
                .enumerate()
                .min_by_key(|(_, task)| task.not_before)
                .map(|(index, _)| index)
        })?;
    ready.remove(index)
}

/// The wait before try `tries + 1` when the upstream gave no hint: exponential, capped.
fn backoff(tries: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(5), Duration::from_millis(3200));
        assert_eq!(backoff(6), MAX_BACKOFF);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn the_soonest_due_task_goes_first() {
        let now = Instant::now();
        let mut ready = VecDeque::from([
            Task {
                not_before: Some(now + Duration::from_secs(2)),
                ..Task::first("a".into(), String::new())
            },
            Task {
                not_before: Some(now + Duration::from_secs(1)),
                ..Task::first("b".into(), String::new())
            },
        ]);
        assert_eq!(take_soonest(&mut ready).unwrap().user_id, "b");
        ready.push_back(Task::first("c".into(), String::new()));
        assert_eq!(take_soonest(&mut ready).unwrap().user_id, "c");
        assert_eq!(take_soonest(&mut ready).unwrap().user_id, "a");
        assert!(take_soonest(&mut ready).is_none());
    }
}
