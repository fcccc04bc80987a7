//! [`Timer`]: the head of the wait queue sleeps on tokio's timer until its permit is due.
//!
//! tokio's timer fires on whole milliseconds and after its deadline, usually a millisecond or
//! two late. Admitting the head when it wakes would push every later permit back by that much:
//! at 11 requests per second, 1.5 ms a permit is 2% of the rate lost, on every permit. So a
//! head the timer woke late is admitted as of the moment it was due, by at most
//! [`TIMER_SLACK`] (and half its wait): the schedule keeps its pace, and no two permits come
//! closer together than their interval less that slack.

use std::task::{Context, Poll};
#[cfg(not(all(test, tollway_loom)))]
use std::{future::Future, pin::Pin, time::Duration};

/// The most a late wake-up is forgiven, in nanoseconds: the timer's millisecond, and as much
/// again for the scheduler.
pub(crate) const TIMER_SLACK: u64 = 2_000_000;

/// When the head was due, on the limiter's clock, and how much lateness it is forgiven.
#[derive(Debug, Default, Clone, Copy)]
struct Due {
    at: u64,
    slack: u64,
}

impl Due {
    fn new(now: u64, wait_nanos: u64) -> Self {
        Self {
            at: now.saturating_add(wait_nanos),
            slack: TIMER_SLACK.min(wait_nanos / 2),
        }
    }

    /// The time to admit at, `now` or earlier: the due time if the wake-up came late.
    fn admit_at(self, now: u64) -> u64 {
        if self.at <= now {
            self.at.max(now - self.slack)
        } else {
            now
        }
    }
}

/// The head's sleep until its permit is due, on tokio's timer.
#[cfg(not(all(test, tollway_loom)))]
#[derive(Default)]
pub(crate) struct Timer {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    due: Option<Due>,
}

#[cfg(not(all(test, tollway_loom)))]
impl Timer {
    /// The time to try the bucket at when the head wakes at `now` (limiter nanoseconds): `now`,
    /// or the time it was due if the timer woke it late (see the module docs).
    pub(crate) fn admit_at(&mut self, now: u64) -> u64 {
        self.due.take().map_or(now, |due| due.admit_at(now))
    }

    /// Sleeps `wait_nanos` from `now` (limiter nanoseconds); ready once that time has passed.
    pub(crate) fn sleep(&mut self, cx: &mut Context<'_>, now: u64, wait_nanos: u64) -> Poll<()> {
        self.due = Some(Due::new(now, wait_nanos));
        let deadline = tokio::time::Instant::now()
            .checked_add(Duration::from_nanos(wait_nanos))
            .unwrap_or_else(far_future);
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        sleep.as_mut().poll(cx)
    }
}

/// About 30 years from now: tokio's own idea of "never".
#[cfg(not(all(test, tollway_loom)))]
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// Under the model checker time does not pass: the head waits for a wake-up (a refund, a
/// quota change, the previous head leaving).
#[cfg(all(test, tollway_loom))]
#[derive(Default)]
pub(crate) struct Timer;

#[cfg(all(test, tollway_loom))]
impl Timer {
    pub(crate) fn admit_at(&mut self, now: u64) -> u64 {
        now
    }

    pub(crate) fn sleep(&mut self, _cx: &mut Context<'_>, _now: u64, _wait_nanos: u64) -> Poll<()> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_wake_is_admitted_as_of_its_due_time_within_the_slack() {
        // Slept 90 ms from 1 s: due at 1.09 s.
        let due = Due::new(1_000_000_000, 90_000_000);
        assert_eq!(due.admit_at(1_089_000_000), 1_089_000_000, "early: now");
        assert_eq!(due.admit_at(1_090_000_000), 1_090_000_000);
        assert_eq!(due.admit_at(1_091_500_000), 1_090_000_000, "late: when due");
        assert_eq!(
            due.admit_at(1_095_000_000),
            1_093_000_000,
            "at most the slack"
        );
        // A short sleep is forgiven at most half of it.
        let short = Due::new(0, 1_000_000);
        assert_eq!(short.admit_at(3_000_000), 2_500_000);
    }
}
