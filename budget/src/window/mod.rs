//! Budget windows: calendar periods in a fixed UTC offset, rolling windows, and lifetime totals.
//!
//! Calendar arithmetic is done on days since the unix epoch (Howard Hinnant's civil-from-days
//! algorithms), so no date crate is needed. Time is wall-clock milliseconds since the epoch, read
//! from [`Clock::system_now`](tollway_core::Clock::system_now): it is the only time that means
//! the same thing before and after a restart.

use std::fmt;
use std::time::Duration;

mod calendar;
mod state;

pub(crate) use calendar::period_bounds;
pub(crate) use state::WindowState;

pub(crate) const DAY_MS: i64 = 86_400_000;
/// Rolling windows are kept as this many buckets; a charge leaves the window between one and
/// one-and-a-bucket window lengths after it was made (never early).
pub(crate) const ROLLING_BUCKETS: i64 = 60;

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

    pub(crate) const fn as_millis(self) -> i64 {
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
    pub(crate) kind: WindowKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum WindowKind {
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

impl Window {
    /// A short name for the kind of window (`day`, `week`, `month`, `rolling`, `lifetime`).
    pub(crate) const fn short_name(&self) -> &'static str {
        match self.kind {
            WindowKind::Calendar {
                period: Period::Day,
                ..
            } => "day",
            WindowKind::Calendar {
                period: Period::Week,
                ..
            } => "week",
            WindowKind::Calendar {
                period: Period::Month,
                ..
            } => "month",
            WindowKind::Rolling { .. } => "rolling",
            WindowKind::Lifetime => "lifetime",
        }
    }

    /// How long the window that holds `now` is: its calendar period's length, or a rolling
    /// window's; `None` for a lifetime.
    pub(crate) fn span_at(&self, now: i64) -> Option<Duration> {
        match self.kind {
            WindowKind::Calendar { period, offset } => {
                let (start, end) = period_bounds(period, offset, now);
                Some(millis_to_duration(end - start))
            }
            WindowKind::Rolling { length_ms } => Some(millis_to_duration(length_ms)),
            WindowKind::Lifetime => None,
        }
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
pub(crate) fn millis_to_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "less than a day")]
    fn offsets_must_be_under_a_day() {
        let _ = UtcOffset::hours(24);
    }
}
