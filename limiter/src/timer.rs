//! [`Timer`]: the head of the wait queue sleeps on tokio's timer until its permit is due.
//!
//! tokio's timer fires on whole milliseconds and after its deadline, usually a millisecond or
//! two late. Admitting the head when it wakes pushes every later permit back by that much: at
//! 11 requests per second, 1.5 ms a permit is 2% of the rate lost, on every permit. A plain
//! limiter accepts that loss: its permits are never closer together than its interval, however
//! late the timer. An adaptive limiter paces a margin under the limit the upstream states; it
//! admits a head the timer woke late as of the moment it was due, forgiving at most that
//! margin of its wait and of one interval (and [`TIMER_SLACK`]): the schedule keeps its pace,
//! and no two permits come closer together than the upstream's own interval, even after a
//! long pause.

use std::task::{Context, Poll};
#[cfg(not(all(test, tollway_loom)))]
use std::{future::Future, pin::Pin, time::Duration};

/// The most a late wake-up is forgiven, in nanoseconds: the timer's millisecond, and as much
/// again for the scheduler.
pub(crate) const TIMER_SLACK: u64 = 2_000_000;

/// When the head was due, on the limiter's clock, and how much lateness it is forgiven.
#[derive(Debug, Default, Clone, Copy)]
#[cfg_attr(all(test, tollway_loom), allow(dead_code))]
struct Due {
    at: u64,
    slack: u64,
}

#[cfg_attr(all(test, tollway_loom), allow(dead_code))]
impl Due {
    /// Due `wait_nanos` after `now`, forgiven `margin` of that wait or of `pace` (the interval
    /// the limiter paces at), whichever is shorter (at most half of it, and at most
    /// [`TIMER_SLACK`]) if the wake-up comes late. Of the pace, not only of the wait: the next
    /// permit is due one interval after this one's due time, so a head that waited out a long
    /// pause must not be forgiven more than the margin of one interval.
    fn new(now: u64, wait_nanos: u64, margin: f64, pace: u64) -> Self {
        let share = if margin.is_nan() {
            0.0
        } else {
            margin.clamp(0.0, 0.5)
        };
        // At most half the wait: an f64 of it converts back exactly enough.
        let forgiven = (wait_nanos.min(pace) as f64 * share) as u64;
        Self {
            at: now.saturating_add(wait_nanos),
            slack: TIMER_SLACK.min(forgiven),
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
    /// A late wake-up is forgiven `margin` of the wait or of `pace`, the interval the limiter
    /// paces at, whichever is shorter (see the module docs).
    pub(crate) fn sleep(
        &mut self,
        cx: &mut Context<'_>,
        now: u64,
        wait_nanos: u64,
        margin: f64,
        pace: u64,
    ) -> Poll<()> {
        self.due = Some(Due::new(now, wait_nanos, margin, pace));
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

    pub(crate) fn sleep(
        &mut self,
        _cx: &mut Context<'_>,
        _now: u64,
        _wait_nanos: u64,
        _margin: f64,
        _pace: u64,
    ) -> Poll<()> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_wake_is_admitted_as_of_its_due_time_within_the_slack() {
        // Slept 90 ms from 1 s with a 5% margin: due at 1.09 s, 2 ms forgiven.
        let due = Due::new(1_000_000_000, 90_000_000, 0.05, 90_000_000);
        assert_eq!(due.admit_at(1_089_000_000), 1_089_000_000, "early: now");
        assert_eq!(due.admit_at(1_090_000_000), 1_090_000_000);
        assert_eq!(due.admit_at(1_091_500_000), 1_090_000_000, "late: when due");
        assert_eq!(due.admit_at(1_095_000_000), 1_093_000_000, "at most 2 ms");
        // A 1% margin forgives 1% of the wait.
        let small = Due::new(0, 90_000_000, 0.01, 90_000_000);
        assert_eq!(small.admit_at(95_000_000), 94_100_000);
        // No margin (a plain limiter): nothing forgiven.
        let strict = Due::new(0, 90_000_000, 0.0, 90_000_000);
        assert_eq!(strict.admit_at(91_500_000), 91_500_000);
        // Absurd margins forgive at most half the wait, or nothing.
        let absurd = Due::new(0, 1_000_000, f64::INFINITY, 1_000_000);
        assert_eq!(absurd.admit_at(3_000_000), 2_500_000);
        let nan = Due::new(0, 1_000_000, f64::NAN, 1_000_000);
        assert_eq!(nan.admit_at(3_000_000), 3_000_000);
        // A long wait (a pause) is forgiven no more than the margin of one interval: 2% of
        // 10 ms, not 2% of the 1 s pause.
        let paused = Due::new(0, 1_000_000_000, 0.02, 10_000_000);
        assert_eq!(paused.admit_at(1_002_000_000), 1_001_800_000);
    }
}
