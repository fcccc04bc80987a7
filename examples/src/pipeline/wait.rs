//! Every wait of the run loop: capped, computed without overflow, and logged when long.
//!
//! The upstream's hints are untrusted numbers (`Retry-After: 99999999999999999999`, a reset in
//! the year 9999): each layer caps what it waits itself, and the run loop caps again at the
//! place that sleeps, at [`Config::max_wait`](super::Config::max_wait).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::scheduler::{Run, State, Task};

/// The first retry waits this long when the upstream gave no hint; each further one doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two tries without a hint.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Waits at least this long, and every wait cut to the cap, are logged at `info` (others at
/// `debug`).
const LONG_WAIT: Duration = Duration::from_secs(1);

/// A long wait that was logged, so that the workers meeting one pause log it once.
#[derive(Debug, Clone)]
pub(super) struct LoggedWait {
    why: String,
    until: Instant,
}

/// `now + wait`, never panicking: a sum past the end of the clock is a year from now (no wait
/// reaches it: every wait is capped first).
pub(super) fn later(now: Instant, wait: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    now.checked_add(wait)
        .or_else(|| now.checked_add(YEAR))
        .unwrap_or(now)
}

impl Run {
    /// Puts `task` back in the queue, due after `asked` (cut to the run's cap), and logs the wait
    /// and `why` it is waited, once per pause when it is long.
    pub(super) fn wait_then_retry(
        &self,
        state: &mut State,
        mut task: Task,
        asked: Duration,
        why: &str,
    ) {
        let now = Instant::now();
        let wait = asked.min(self.max_wait);
        let until = later(now, wait);
        task.not_before = Some(until);
        let capped = asked > wait;
        if wait >= LONG_WAIT || capped {
            let repeat = state
                .last_wait
                .as_ref()
                .is_some_and(|last| last.why == why && until <= later(last.until, LONG_WAIT));
            if !repeat {
                tracing::info!(
                    user_id = %task.user_id,
                    page_id = %task.page_id,
                    wait_s = wait.as_secs_f64(),
                    asked_s = asked.as_secs_f64(),
                    capped,
                    "waiting before trying again: {why}"
                );
                let note = if capped {
                    format!(
                        "waiting {:.0} s ({why}; asked for {}, capped by --max-wait)",
                        wait.as_secs_f64(),
                        describe(asked)
                    )
                } else {
                    format!("waiting {:.0} s ({why})", wait.as_secs_f64())
                };
                self.progress.note(note);
                state.last_wait = Some(LoggedWait {
                    why: why.to_owned(),
                    until,
                });
            }
        } else {
            tracing::debug!(user_id = %task.user_id, ?wait, "retrying soon: {why}");
        }
        state.ready.push_back(task);
    }
}

/// A duration a person can read, however large.
fn describe(wait: Duration) -> String {
    let secs = wait.as_secs();
    if secs >= 365 * 24 * 3600 {
        format!("{:.0} years", secs as f64 / (365.25 * 24.0 * 3600.0))
    } else if secs >= 2 * 3600 {
        format!("{:.1} h", secs as f64 / 3600.0)
    } else {
        format!("{:.0} s", wait.as_secs_f64())
    }
}

/// The task to work on next: the first one due, or else the one due soonest.
pub(super) fn take_soonest(ready: &mut VecDeque<Task>) -> Option<Task> {
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
pub(super) fn backoff(tries: u32) -> Duration {
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
    async fn no_wait_overflows_the_clock() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
        let far = later(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(364 * 24 * 3600), "{far:?}");
        assert_eq!(describe(Duration::MAX).split(' ').nth(1), Some("years"));
        assert_eq!(describe(Duration::from_secs(86_400)), "24.0 h");
        assert_eq!(describe(Duration::from_secs(90)), "90 s");
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
