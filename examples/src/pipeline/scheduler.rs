//! The state the workers of a run share: the queue of page tasks, the credit reservations, the
//! report, and each user's chain of pages (to catch cursors that loop). Settling an attempt's
//! outcome is in `settle.rs`; waits are in `wait.rs`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use http::StatusCode;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tollway_core::{BoxError, Classifier, Outcome, OutcomeKind};

use super::budget::{CrawlLedger, CreditHold, Refusal};
use super::config::Config;
use super::guard::{BodyTooLarge, ExchangeTimeout};
use super::progress::Progress;
use super::queue::Journal;
use super::report::Report;
use super::stop::StopReason;
use super::wait::LoggedWait;

/// One page to fetch.
#[derive(Debug)]
pub(super) struct Task {
    pub(super) user_id: String,
    pub(super) page_id: String,
    /// Failed attempts so far.
    pub(super) tries: u32,
    /// Not to be sent before this (a retry's wait).
    pub(super) not_before: Option<Instant>,
    /// The page is in the journal already (asked again because its cursor looped): a new
    /// answer is not counted as a new page.
    pub(super) held: bool,
}

impl Task {
    pub(super) fn first(user_id: String, page_id: String) -> Self {
        Self {
            user_id,
            page_id,
            tries: 0,
            not_before: None,
            held: false,
        }
    }
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) ready: VecDeque<Task>,
    /// Tasks held by workers.
    pub(super) in_flight: usize,
    /// Credits held by tries in flight.
    pub(super) reserved: u64,
    pub(super) stop: Option<StopReason>,
    pub(super) report: Report,
    /// When the breaker last seen open lets a probe through.
    pub(super) breaker_open_until: Option<Instant>,
    /// The cursors of each user's pages held, to catch a `next_page_id` that points back.
    pub(super) chains: HashMap<String, HashSet<String>>,
    /// The last long wait logged, so that workers meeting the same pause log it once.
    pub(super) last_wait: Option<LoggedWait>,
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
    /// The answer came from the response cache: it cost no credit.
    pub(super) cached: bool,
}

impl Traffic {
    /// Credits the upstream charged: one per `200`.
    pub(super) fn charged(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|&&status| status == StatusCode::OK)
            .count() as u64
    }
}

#[derive(Debug)]
pub(super) struct Run {
    pub(super) base_url: String,
    pub(super) key: String,
    pub(super) max_tries: u32,
    pub(super) max_wait: Duration,
    /// The most one try may take, the stack's resends and waits included.
    pub(super) try_timeout: Duration,
    /// The largest body read.
    pub(super) max_body: u64,
    /// This run's own budget, counted here.
    per_run: Option<u64>,
    /// The crawl's ledger, on disk in its folder (not in fleet mode).
    crawl: Option<CrawlLedger>,
    /// The fleet's budget, counted by the ledger in Redis alone.
    pub(super) fleet_budget: Option<u64>,
    pub(super) progress: Progress,
    pub(super) state: Mutex<State>,
    pub(super) changed: Notify,
    stopped: watch::Sender<bool>,
    pub(super) journal: Mutex<Journal>,
    pub(super) classifier: Classifier,
}

impl std::fmt::Debug for CrawlLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrawlLedger")
            .field("limit", &self.limit())
            .field("spent", &self.spent())
            .finish()
    }
}

impl Run {
    /// The shared state of a run starting with `ready` and `report` (what the journal held).
    pub(super) fn new(
        config: &Config,
        ready: VecDeque<Task>,
        chains: HashMap<String, HashSet<String>>,
        report: Report,
        journal: Journal,
        crawl: Option<CrawlLedger>,
    ) -> Self {
        Self {
            base_url: config.base_url.clone(),
            key: config.key.clone(),
            max_tries: config.max_tries.max(1),
            max_wait: config.max_wait,
            try_timeout: config
                .request_timeout
                .saturating_mul(super::stack::STACK_ATTEMPTS + 1),
            max_body: config.max_body,
            per_run: config.budget_per_run,
            crawl,
            // In fleet mode the budget is the fleet's: only the ledger in Redis can count it.
            fleet_budget: config.budget.filter(|_| config.fleet.is_some()),
            progress: config.progress.clone(),
            state: Mutex::new(State {
                ready,
                in_flight: 0,
                reserved: 0,
                stop: None,
                report,
                breaker_open_until: None,
                chains,
                last_wait: None,
            }),
            changed: Notify::new(),
            stopped: watch::Sender::new(false),
            journal: Mutex::new(journal),
            classifier: classifier(),
        }
    }

    /// The report so far, and why the run stopped, if it did.
    pub(super) fn finish(&self) -> (Report, Option<StopReason>) {
        let mut state = self.state.lock();
        if let Some(crawl) = &self.crawl {
            state.report.crawl_credits_spent = crawl.spent();
        }
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
                if let Some(task) = super::wait::take_soonest(&mut state.ready) {
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
        self.signal_stop();
    }

    /// Wakes everyone who waits for the run to stop (its reason is already set).
    pub(super) fn signal_stop(&self) {
        self.stopped.send_replace(true);
        self.changed.notify_waiters();
    }

    /// Reserves the credit a try may cost before it is sent: in this run's count and in the
    /// crawl's ledger (on disk before the request goes out), so that concurrent requests cannot
    /// overspend either budget and a kill cannot forget a request in flight. Waits while tries
    /// in flight may still give credit back; `None` when the run stops.
    pub(super) async fn reserve_credit(&self) -> Option<CreditHold> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut refused = {
                let mut state = self.state.lock();
                if state.stop.is_some() {
                    return None;
                }
                let spent = state.report.credits_spent + state.reserved;
                match self.per_run {
                    Some(budget) if spent >= budget => Some(StopReason::BudgetSpent { budget }),
                    // Counted before the crawl's ledger is asked, so that concurrent tries see
                    // it; given back below if the ledger refuses.
                    _ => {
                        state.reserved += 1;
                        None
                    }
                }
            };
            if refused.is_none() {
                let Some(crawl) = &self.crawl else {
                    return Some(CreditHold::none());
                };
                // Not under the state's lock: the ledger waits for the disk.
                let reserved = crawl.reserve().await;
                let mut state = self.state.lock();
                match reserved {
                    Ok(hold) => return Some(hold),
                    Err(Refusal::Spent) => {
                        state.reserved = state.reserved.saturating_sub(1);
                        refused = Some(StopReason::CrawlBudgetSpent {
                            budget: crawl.limit().unwrap_or(u64::MAX),
                            earlier_runs: crawl.spent_before(),
                        });
                    }
                    Err(Refusal::Ledger(why)) => {
                        state.reserved = state.reserved.saturating_sub(1);
                        drop(state);
                        self.stop(StopReason::Journal(format!("the crawl's ledger: {why}")));
                        return None;
                    }
                }
            }
            {
                let mut state = self.state.lock();
                // Tries in flight may still give credit back: wait for them before stopping.
                if state.reserved == 0 {
                    state.report.budget_exhausted += 1;
                    drop(state);
                    if let Some(reason) = refused {
                        self.stop(reason);
                    }
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Gives back the credit of a try that was never sent.
    pub(super) fn refund_credit(&self, hold: CreditHold) {
        let mut state = self.state.lock();
        state.reserved = state.reserved.saturating_sub(1);
        hold.settle(0);
    }
}

/// The run loop's classifier: the standard one, plus the guard's failures.
fn classifier() -> Classifier {
    Classifier::builder()
        .error_rule(|error| {
            if tollway_core::error::find_cause::<ExchangeTimeout>(error).is_some() {
                Some(OutcomeKind::Timeout)
            } else if tollway_core::error::find_cause::<BodyTooLarge>(error).is_some() {
                // Not retried: the same page is as large the next time, and costs a credit.
                Some(OutcomeKind::ClientError)
            } else {
                None
            }
        })
        .build()
}
