//! One limit's spend, kept current as time passes.

use std::collections::VecDeque;
use std::time::Duration;

use super::{ROLLING_BUCKETS, Window, WindowKind, millis_to_duration, period_bounds};

#[derive(Debug)]
pub(crate) struct WindowState {
    pub(crate) window: Window,
    pub(crate) limit: u64,
    pub(crate) spent: u64,
    track: Track,
}

#[derive(Debug)]
enum Track {
    Calendar {
        start: i64,
        end: i64,
    },
    Rolling {
        width: i64,
        buckets: VecDeque<(i64, u64)>,
    },
    Lifetime,
}

impl WindowState {
    pub(crate) fn new(limit: u64, window: Window, now: i64) -> Self {
        let track = match window.kind {
            WindowKind::Calendar { period, offset } => {
                let (start, end) = period_bounds(period, offset, now);
                Track::Calendar { start, end }
            }
            WindowKind::Rolling { length_ms } => Track::Rolling {
                width: (length_ms / ROLLING_BUCKETS).max(1),
                buckets: VecDeque::new(),
            },
            WindowKind::Lifetime => Track::Lifetime,
        };
        Self {
            window,
            limit,
            spent: 0,
            track,
        }
    }

    /// Brings the window to `now`; true if spend left it (a period ended, buckets expired).
    pub(crate) fn roll(&mut self, now: i64) -> bool {
        match &mut self.track {
            Track::Calendar { start, end } => {
                if now < *end && now >= *start {
                    return false;
                }
                let WindowKind::Calendar { period, offset } = self.window.kind else {
                    unreachable!("calendar track belongs to a calendar window")
                };
                let (s, e) = period_bounds(period, offset, now);
                // A wall clock stepping backwards must not forget spend: keep the later period.
                if s < *start {
                    return false;
                }
                (*start, *end) = (s, e);
                let had = self.spent > 0;
                self.spent = 0;
                had
            }
            Track::Rolling { width, buckets } => {
                let current = now.div_euclid(*width);
                let mut rolled = false;
                // Untrusted charge headers can be anything: a saturated total is not the sum
                // of its buckets, and taking an expired amount off it would forget spend still
                // in the window. Then the total is counted again from what is left.
                let saturated = self.spent == u64::MAX;
                while let Some(&(index, amount)) = buckets.front() {
                    if current - index <= ROLLING_BUCKETS {
                        break;
                    }
                    buckets.pop_front();
                    self.spent = self.spent.saturating_sub(amount);
                    rolled = true;
                }
                if rolled && saturated {
                    self.spent = buckets
                        .iter()
                        .fold(0u64, |total, &(_, amount)| total.saturating_add(amount));
                }
                rolled
            }
            Track::Lifetime => false,
        }
    }

    /// Counts `amount` charged at `at` (the window is already rolled to `now`). Spend from
    /// before the current period or already expired is ignored; spend stamped in the future
    /// (a clock that stepped back) counts now.
    pub(crate) fn add(&mut self, amount: u64, at: i64, now: i64) {
        if amount == 0 || !self.contains(at, now) {
            return;
        }
        if let Track::Rolling { width, buckets } = &mut self.track {
            let index = at.min(now).div_euclid(*width);
            match buckets.iter_mut().rev().find(|(i, _)| *i <= index) {
                Some((i, total)) if *i == index => *total = total.saturating_add(amount),
                _ => {
                    let at = buckets.partition_point(|(i, _)| *i < index);
                    buckets.insert(at, (index, amount));
                }
            }
        }
        self.spent = self.spent.saturating_add(amount);
    }

    /// Whether a charge made at `at` still counts in this window at `now`.
    pub(crate) fn contains(&self, at: i64, now: i64) -> bool {
        match &self.track {
            // A live charge (stamped now) always counts, even if the wall clock stepped back
            // behind the period we kept.
            Track::Calendar { start, .. } => at >= *start || at >= now,
            Track::Rolling { width, .. } => {
                now.div_euclid(*width) - at.min(now).div_euclid(*width) <= ROLLING_BUCKETS
            }
            Track::Lifetime => true,
        }
    }

    /// A key that is equal for two charge times exactly when the window cannot tell them apart
    /// (same period, same bucket): charges with equal keys may be merged.
    pub(crate) fn cell(&self, at: i64) -> i64 {
        match (&self.track, self.window.kind) {
            (Track::Calendar { .. }, WindowKind::Calendar { period, offset }) => {
                period_bounds(period, offset, at).0
            }
            (Track::Rolling { width, .. }, _) => at.div_euclid(*width),
            _ => 0,
        }
    }

    /// Credit left for new reservations when `reserved` is already held.
    pub(crate) fn remaining(&self, reserved: u64) -> u64 {
        self.limit
            .saturating_sub(self.spent)
            .saturating_sub(reserved)
    }

    /// Milliseconds from `now` until the window next gives credit back, if it ever does.
    pub(crate) fn resets_in(&self, now: i64) -> Option<i64> {
        match &self.track {
            Track::Calendar { end, .. } => Some((*end - now).max(0)),
            Track::Rolling { width, buckets } => buckets
                .front()
                .map(|&(index, _)| ((index + ROLLING_BUCKETS + 1) * *width - now).max(0)),
            Track::Lifetime => None,
        }
    }

    /// Milliseconds until `needed` more credit is free (spend expiring), if that ever happens.
    pub(crate) fn free_in(&self, needed: u64, now: i64) -> Option<i64> {
        match &self.track {
            Track::Rolling { width, buckets } => {
                let mut freed = 0u64;
                for &(index, amount) in buckets {
                    freed = freed.saturating_add(amount);
                    if freed >= needed {
                        return Some(((index + ROLLING_BUCKETS + 1) * *width - now).max(0));
                    }
                }
                None
            }
            _ => self.resets_in(now),
        }
    }

    /// When a latch set at `now` should lift by itself: the next period start, or one rolling
    /// window length later.
    pub(crate) fn rollover_at(&self, now: i64) -> Option<i64> {
        match (&self.track, self.window.kind) {
            (Track::Calendar { end, .. }, _) => Some(*end),
            (_, WindowKind::Rolling { length_ms }) => Some(now.saturating_add(length_ms)),
            _ => None,
        }
    }

    /// [`resets_in`](Self::resets_in) as a [`Duration`].
    pub(crate) fn resets_in_duration(&self, now: i64) -> Option<Duration> {
        self.resets_in(now).map(millis_to_duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::DAY_MS;
    use crate::window::calendar::days_from_civil;

    fn ms(year: i64, month: u32, day: u32, hour: i64) -> i64 {
        days_from_civil(year, month, day) * DAY_MS + hour * 3_600_000
    }

    #[test]
    fn rolling_window_never_forgets_early() {
        let mut w = WindowState::new(10, Window::rolling(Duration::from_secs(60)), 0);
        w.add(4, 500, 500);
        assert_eq!(w.spent, 4);
        // Still counted exactly one window later...
        assert!(!w.roll(60_500));
        assert_eq!(w.spent, 4);
        // ...and gone a bucket after that.
        assert!(w.roll(61_000));
        assert_eq!(w.spent, 0);
    }

    #[test]
    fn a_saturated_rolling_total_is_recounted_not_undercounted() {
        let mut w = WindowState::new(10, Window::rolling(Duration::from_secs(60)), 0);
        // True total 2^64 + 1: saturated.
        w.add((1 << 63) + 1, 0, 0);
        w.add(1 << 63, 30_000, 30_000);
        assert_eq!(w.spent, u64::MAX);
        // The first ages out: exactly the second is left, not `u64::MAX - (2^63 + 1)`.
        assert!(w.roll(61_000));
        assert_eq!(w.spent, 1 << 63);
        assert!(w.roll(91_000));
        assert_eq!(w.spent, 0);
    }

    #[test]
    fn calendar_ignores_backward_steps() {
        let start = ms(2024, 5, 2, 12);
        let mut w = WindowState::new(10, Window::day(), start);
        w.add(3, start, start);
        assert!(!w.roll(start - 2 * DAY_MS));
        assert_eq!(w.spent, 3);
        // Spend made while the clock is behind still counts.
        w.add(2, start - 2 * DAY_MS, start - 2 * DAY_MS);
        assert_eq!(w.spent, 5);
        assert!(w.roll(start + DAY_MS));
        assert_eq!(w.spent, 0);
    }
}
