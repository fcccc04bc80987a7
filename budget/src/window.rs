//! Budget windows: calendar periods in a fixed UTC offset, rolling windows, and lifetime totals.
//!
//! Calendar arithmetic is done on days since the unix epoch (Howard Hinnant's civil-from-days
//! algorithms), so no date crate is needed. Time is wall-clock milliseconds since the epoch, read
//! from [`Clock::system_now`](tollway_core::Clock::system_now): it is the only time that means
//! the same thing before and after a restart.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;
/// Rolling windows are kept as this many buckets; a charge leaves the window between one and
/// one-and-a-bucket window lengths after it was made (never early).
const ROLLING_BUCKETS: i64 = 60;

/// A fixed offset from UTC in which calendar windows start (`+05:30` starts days at 18:30 UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UtcOffset {
    seconds: i32,
}

impl UtcOffset {
    /// UTC itself.
    pub const UTC: Self = Self { seconds: 0 };

    /// An offset of whole `hours` east of UTC (negative: west).
    ///
    /// # Panics
    ///
    /// If `hours` is not within ±23.
    pub const fn hours(hours: i32) -> Self {
        Self::minutes(hours * 60)
    }

    /// An offset of `minutes` east of UTC (negative: west), e.g. `UtcOffset::minutes(330)` for
    /// India.
    ///
    /// # Panics
    ///
    /// If the offset is a day or more.
    pub const fn minutes(minutes: i32) -> Self {
        assert!(
            minutes > -24 * 60 && minutes < 24 * 60,
            "a UTC offset must be less than a day"
        );
        Self {
            seconds: minutes * 60,
        }
    }

    /// The offset in seconds east of UTC.
    pub const fn as_seconds(self) -> i32 {
        self.seconds
    }

    const fn as_millis(self) -> i64 {
        self.seconds as i64 * 1000
    }
}

/// A calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Period {
    /// From midnight to midnight.
    Day,
    /// From Monday 00:00 to the next Monday (ISO 8601 weeks).
    Week,
    /// From the 1st of a month 00:00 to the 1st of the next.
    Month,
}

/// The span over which one budget limit counts spend.
///
/// ```
/// use std::time::Duration;
/// use tollway_budget::{UtcOffset, Window};
///
/// let daily_in_berlin = Window::day().with_offset(UtcOffset::hours(1));
/// let last_hour = Window::rolling(Duration::from_secs(3600));
/// assert_ne!(daily_in_berlin, last_hour);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    kind: WindowKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum WindowKind {
    Calendar { period: Period, offset: UtcOffset },
    Rolling { length_ms: i64 },
    Lifetime,
}

impl Window {
    /// A calendar day, in UTC unless [`with_offset`](Self::with_offset) says otherwise.
    pub const fn day() -> Self {
        Self::calendar(Period::Day)
    }

    /// An ISO week (Monday to Monday), in UTC unless offset.
    pub const fn week() -> Self {
        Self::calendar(Period::Week)
    }

    /// A calendar month, in UTC unless offset.
    pub const fn month() -> Self {
        Self::calendar(Period::Month)
    }

    /// A calendar `period`, in UTC unless offset.
    pub const fn calendar(period: Period) -> Self {
        Self {
            kind: WindowKind::Calendar {
                period,
                offset: UtcOffset::UTC,
            },
        }
    }

    /// The last `length` of time, sliding: spend counts until `length` after it was charged
    /// (plus at most a sixtieth of `length`, never less).
    ///
    /// # Panics
    ///
    /// If `length` is under a millisecond.
    pub fn rolling(length: Duration) -> Self {
        let length_ms = i64::try_from(length.as_millis()).unwrap_or(i64::MAX / 4);
        assert!(
            length_ms >= 1,
            "a rolling window must be at least 1 ms long"
        );
        Self {
            kind: WindowKind::Rolling {
                length_ms: length_ms.min(i64::MAX / 4),
            },
        }
    }

    /// No window: spend counts forever (a total budget, or a prepaid balance).
    pub const fn lifetime() -> Self {
        Self {
            kind: WindowKind::Lifetime,
        }
    }

    /// Starts calendar periods in `offset` instead of UTC. No effect on other windows.
    #[must_use]
    pub const fn with_offset(mut self, offset: UtcOffset) -> Self {
        if let WindowKind::Calendar { period, .. } = self.kind {
            self.kind = WindowKind::Calendar { period, offset };
        }
        self
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            WindowKind::Calendar { period, offset } => {
                let name = match period {
                    Period::Day => "day",
                    Period::Week => "week",
                    Period::Month => "month",
                };
                write!(f, "{name} (UTC{:+}s)", offset.as_seconds())
            }
            WindowKind::Rolling { length_ms } => write!(f, "rolling {length_ms} ms"),
            WindowKind::Lifetime => f.write_str("lifetime"),
        }
    }
}

/// One limit's spend, kept current by [`roll`](Self::roll).
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
                while let Some(&(index, amount)) = buckets.front() {
                    if current - index <= ROLLING_BUCKETS {
                        break;
                    }
                    buckets.pop_front();
                    self.spent = self.spent.saturating_sub(amount);
                    rolled = true;
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

/// How a window is described to a shared store: calendar bounds, or rolling length and width.
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowSpec {
    /// The calendar period holding the time asked about.
    Calendar { start: i64, end: i64 },
    /// A rolling window kept as buckets of `width`.
    Rolling { length: i64, width: i64 },
    /// Spend counts forever.
    Lifetime,
}

#[cfg(feature = "redis")]
impl Window {
    /// This window as a shared store keeps it, at `now`.
    pub(crate) fn spec(&self, now: i64) -> WindowSpec {
        match self.kind {
            WindowKind::Calendar { period, offset } => {
                let (start, end) = period_bounds(period, offset, now);
                WindowSpec::Calendar { start, end }
            }
            WindowKind::Rolling { length_ms } => WindowSpec::Rolling {
                length: length_ms,
                width: (length_ms / ROLLING_BUCKETS).max(1),
            },
            WindowKind::Lifetime => WindowSpec::Lifetime,
        }
    }
}

pub(crate) fn millis_to_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Start and end (milliseconds since the epoch) of the `period` holding `now`.
fn period_bounds(period: Period, offset: UtcOffset, now: i64) -> (i64, i64) {
    let local_day = (now + offset.as_millis()).div_euclid(DAY_MS);
    let (start, end) = match period {
        Period::Day => (local_day, local_day + 1),
        Period::Week => {
            // 1970-01-01 was a Thursday: Monday-based weekday 3.
            let start = local_day - (local_day + 3).rem_euclid(7);
            (start, start + 7)
        }
        Period::Month => {
            let (year, month, _) = civil_from_days(local_day);
            let next = if month == 12 {
                days_from_civil(year + 1, 1, 1)
            } else {
                days_from_civil(year, month + 1, 1)
            };
            (days_from_civil(year, month, 1), next)
        }
    };
    (
        start * DAY_MS - offset.as_millis(),
        end * DAY_MS - offset.as_millis(),
    )
}

/// Days since 1970-01-01 of the proleptic Gregorian date `year-month-day`.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` that is `days` after 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn ms(year: i64, month: u32, day: u32, hour: i64) -> i64 {
        days_from_civil(year, month, day) * DAY_MS + hour * H
    }

    #[test]
    fn civil_round_trips() {
        for days in [-1_000_000, -719_468, -1, 0, 1, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn day_week_month_bounds() {
        let now = ms(2024, 2, 29, 13); // a Thursday in a leap February
        assert_eq!(
            period_bounds(Period::Day, UtcOffset::UTC, now),
            (ms(2024, 2, 29, 0), ms(2024, 3, 1, 0))
        );
        assert_eq!(
            period_bounds(Period::Week, UtcOffset::UTC, now),
            (ms(2024, 2, 26, 0), ms(2024, 3, 4, 0))
        );
        assert_eq!(
            period_bounds(Period::Month, UtcOffset::UTC, now),
            (ms(2024, 2, 1, 0), ms(2024, 3, 1, 0))
        );
        let december = ms(2023, 12, 31, 23);
        assert_eq!(
            period_bounds(Period::Month, UtcOffset::UTC, december),
            (ms(2023, 12, 1, 0), ms(2024, 1, 1, 0))
        );
    }

    #[test]
    fn offsets_move_the_boundaries() {
        // 20:00 UTC on the 29th is already the 1st of March in UTC+5.
        let now = ms(2024, 2, 29, 20);
        let plus5 = UtcOffset::hours(5);
        assert_eq!(
            period_bounds(Period::Month, plus5, now),
            (ms(2024, 2, 29, 19), ms(2024, 3, 31, 19))
        );
        let minus8 = UtcOffset::hours(-8);
        assert_eq!(
            period_bounds(Period::Day, minus8, ms(2024, 3, 1, 3)),
            (ms(2024, 2, 29, 8), ms(2024, 3, 1, 8))
        );
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

    #[test]
    #[should_panic(expected = "less than a day")]
    fn offsets_must_be_under_a_day() {
        let _ = UtcOffset::hours(24);
    }
}
