//! What a rate limit allows: a [`Rate`], and a [`Quota`] (a rate and a burst).

use std::error::Error;
use std::fmt;
use std::time::Duration;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// The longest time a bucket may span (`burst × interval`), and the longest interval: 2^62 ns,
/// about 146 years. Longer ones are refused when the quota is built: a bucket whose span does
/// not fit the limiter's clock arithmetic would admit everything.
pub(crate) const MAX_SPAN_NANOS: u64 = 1 << 62;

/// A steady rate, "`n` requests per period": half of a [`Quota`]. Name its burst with
/// [`burst`](Self::burst) to get the quota; see [`Quota`] for what the burst means.
///
/// Made by [`Quota::per_second`] and its siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "a rate is not a quota yet: name its burst with `.burst(n)`"]
pub struct Rate {
    interval_nanos: u64,
}

/// A rate and a burst: "`n` requests per period, at most `burst` at once".
///
/// A quota is always built with its burst in sight, and from checked numbers, so an invalid
/// one cannot exist:
///
/// ```
/// use std::time::Duration;
/// use tollway_limiter::Quota;
///
/// // 1,000 an hour, all 1,000 of them at once if the client wants.
/// let hourly = Quota::per_hour(1_000).burst(1_000);
/// // 11 a second, evenly spaced: never two requests closer than 1/11 s.
/// let steady = Quota::per_second(11).burst(1);
/// // Intervals are rounded up to the nanosecond: never faster than the rate.
/// assert_eq!(steady.interval(), Duration::from_nanos(90_909_091));
/// assert_eq!((hourly.burst(), hourly.interval()), (1_000, Duration::from_millis(3_600)));
///
/// // In a const context a zero is a compile error; at runtime, a panic, or use the `try_` forms.
/// const PER_IP: Quota = Quota::per_minute(60).burst(10);
/// assert!(Quota::try_per(0, Duration::from_secs(1)).is_err());
/// # let _ = PER_IP;
/// ```
///
/// # What the burst means
///
/// The limiter is a GCRA (a token bucket measured in time): requests are spaced by the
/// *emission interval* (`period / n`), and up to `burst` requests may go at once when the bucket
/// is full. A full bucket refills at one request per interval.
///
/// - **`burst(1)`**: requests are evenly spaced, and no window of one period ever holds more
///   than `n` of them. What a client wants in front of an API that counts requests in a
///   sliding window.
/// - **`burst(n)`**: the whole period's allowance may be spent at once (what a server usually
///   grants: "1,000 an hour" lets a client send 1,000 together), then refills at the rate. A
///   window of one period can then see up to `2n - 1` requests: `per_minute(60).burst(60)`
///   admits 60 at once and then one a second, so 119 in the first minute. governor's
///   `per_minute(n)` picks this burst for you, hence its "more than `n` per minute" reports.
///
/// Over any span of `t`, a limiter admits at most `n * t / period + burst` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    interval_nanos: u64,
    burst: u32,
}

/// Why a [`Rate`] or a [`Quota`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidQuota {
    reason: &'static str,
}

impl InvalidQuota {
    const ZERO_COUNT: Self = Self::new("a rate needs at least one request per period");
    const ZERO_PERIOD: Self = Self::new("a rate needs a period longer than zero");
    const TOO_SLOW: Self = Self::new("one request per more than about 146 years");
    const ZERO_BURST: Self = Self::new("a burst of 0 would never admit anything");
    const TOO_LONG: Self = Self::new(
        "burst × interval spans more than about 146 years: the bucket would admit everything",
    );

    const fn new(reason: &'static str) -> Self {
        Self { reason }
    }

    /// What is wrong, in words.
    pub const fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid quota: {}", self.reason)
    }
}

impl Error for InvalidQuota {}

/// Unwraps in a `const fn` (where `Result::expect` is not available).
const fn or_panic<T: Copy>(result: Result<T, InvalidQuota>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{}", error.reason),
    }
}

impl Quota {
    /// `count` requests per second; name the burst next: `Quota::per_second(11).burst(1)`.
    ///
    /// # Panics
    ///
    /// If `count` is 0 (at compile time in a const context).
    pub const fn per_second(count: u32) -> Rate {
        or_panic(Rate::per_nanos(count, NANOS_PER_SECOND))
    }

    /// `count` requests per minute; name the burst next.
    ///
    /// # Panics
    ///
    /// If `count` is 0 (at compile time in a const context).
    pub const fn per_minute(count: u32) -> Rate {
        or_panic(Rate::per_nanos(count, 60 * NANOS_PER_SECOND))
    }

    /// `count` requests per hour; name the burst next: `Quota::per_hour(1_000).burst(1_000)`.
    ///
    /// # Panics
    ///
    /// If `count` is 0 (at compile time in a const context).
    pub const fn per_hour(count: u32) -> Rate {
        or_panic(Rate::per_nanos(count, 3_600 * NANOS_PER_SECOND))
    }

    /// `count` requests per day (86,400 s); name the burst next.
    ///
    /// # Panics
    ///
    /// If `count` is 0 (at compile time in a const context).
    pub const fn per_day(count: u32) -> Rate {
        or_panic(Rate::per_nanos(count, 86_400 * NANOS_PER_SECOND))
    }

    /// `count` requests per `period` (`Quota::per(100, Duration::from_secs(900))`: 100 per
    /// 15 minutes); name the burst next. [`try_per`](Self::try_per) for numbers read at
    /// runtime.
    ///
    /// # Panics
    ///
    /// If `count` or `period` is zero, or one request per `period` is slower than one per
    /// about 146 years (at compile time in a const context).
    pub const fn per(count: u32, period: Duration) -> Rate {
        or_panic(Self::try_per(count, period))
    }

    /// [`per`](Self::per), with an error instead of a panic.
    pub const fn try_per(count: u32, period: Duration) -> Result<Rate, InvalidQuota> {
        let nanos = period.as_nanos();
        if nanos == 0 {
            return Err(InvalidQuota::ZERO_PERIOD);
        }
        if nanos > u64::MAX as u128 {
            return Err(InvalidQuota::TOO_SLOW);
        }
        Rate::per_nanos(count, nanos as u64)
    }

    /// The time between two requests at the steady rate (the emission interval).
    pub const fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// How many requests may go at once from a full bucket (at least 1).
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// The steady rate alone (to give the same rate another burst, or to
    /// [`set_rate`](crate::RateLimiter::set_rate)).
    pub const fn rate(&self) -> Rate {
        Rate {
            interval_nanos: self.interval_nanos,
        }
    }

    /// The steady rate in requests per second.
    pub fn per_second_f64(&self) -> f64 {
        self.rate().per_second_f64()
    }

    pub(crate) const fn interval_nanos(&self) -> u64 {
        self.interval_nanos
    }

    /// `burst × interval`: how far ahead of now a full bucket's debt may reach.
    pub(crate) const fn capacity_nanos(&self) -> u64 {
        // Checked when the quota was built: at most MAX_SPAN_NANOS.
        self.interval_nanos * self.burst as u64
    }

    /// A quota for an interval computed at runtime (AIMD): the interval is clamped so that
    /// the bucket's span stays valid.
    pub(crate) const fn clamped(interval_nanos: u64, burst: u32) -> Self {
        let burst = if burst == 0 { 1 } else { burst };
        let max = MAX_SPAN_NANOS / burst as u64;
        let interval_nanos = if interval_nanos == 0 {
            1
        } else if interval_nanos > max {
            max
        } else {
            interval_nanos
        };
        Self {
            interval_nanos,
            burst,
        }
    }
}

impl Rate {
    /// `period_nanos / count` rounded up, so the limiter is never faster than asked.
    const fn per_nanos(count: u32, period_nanos: u64) -> Result<Self, InvalidQuota> {
        if count == 0 {
            return Err(InvalidQuota::ZERO_COUNT);
        }
        let interval_nanos = period_nanos.div_ceil(count as u64);
        if interval_nanos > MAX_SPAN_NANOS {
            return Err(InvalidQuota::TOO_SLOW);
        }
        Ok(Self { interval_nanos })
    }

    /// This rate with up to `burst` requests at once: the [`Quota`].
    ///
    /// # Panics
    ///
    /// If `burst` is 0, or `burst × interval` spans more than about 146 years (at compile
    /// time in a const context). [`try_burst`](Self::try_burst) for numbers read at runtime.
    pub const fn burst(self, burst: u32) -> Quota {
        or_panic(self.try_burst(burst))
    }

    /// [`burst`](Self::burst), with an error instead of a panic.
    pub const fn try_burst(self, burst: u32) -> Result<Quota, InvalidQuota> {
        if burst == 0 {
            return Err(InvalidQuota::ZERO_BURST);
        }
        match self.interval_nanos.checked_mul(burst as u64) {
            Some(span) if span <= MAX_SPAN_NANOS => Ok(Quota {
                interval_nanos: self.interval_nanos,
                burst,
            }),
            _ => Err(InvalidQuota::TOO_LONG),
        }
    }

    /// The time between two requests (the emission interval).
    pub const fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// Requests per second.
    pub fn per_second_f64(&self) -> f64 {
        NANOS_PER_SECOND as f64 / self.interval_nanos as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(
            Quota::per_second(10).burst(1).interval(),
            Duration::from_millis(100)
        );
        assert_eq!(Quota::per_minute(60).interval(), Duration::from_secs(1));
        assert_eq!(Quota::per_hour(1).interval(), Duration::from_secs(3600));
        assert_eq!(
            Quota::per_day(1_000_000).interval(),
            Duration::from_nanos(86_400_000)
        );
        assert_eq!(
            Quota::per(100, Duration::from_secs(15 * 60)).interval(),
            Duration::from_secs(9)
        );
        assert_eq!(Quota::per_second(3).burst(7).burst(), 7);
        assert!((Quota::per_second(20).burst(1).per_second_f64() - 20.0).abs() < 1e-9);
        assert_eq!(Quota::per_second(3).burst(7).rate(), Quota::per_second(3));
    }

    #[test]
    fn rounding_up_never_exceeds_the_rate() {
        // 11 intervals of 1/11 s, rounded down, would fit 12 requests in one second.
        let q = Quota::per_second(11).burst(1);
        assert!(q.interval_nanos() * 11 >= NANOS_PER_SECOND);
    }

    #[test]
    fn invalid_numbers_are_typed_errors() {
        assert_eq!(
            Quota::try_per(0, Duration::from_secs(1)),
            Err(InvalidQuota::ZERO_COUNT)
        );
        assert_eq!(
            Quota::try_per(3, Duration::ZERO),
            Err(InvalidQuota::ZERO_PERIOD)
        );
        assert_eq!(
            Quota::try_per(1, Duration::MAX),
            Err(InvalidQuota::TOO_SLOW)
        );
        assert_eq!(
            Quota::per_second(1).try_burst(0),
            Err(InvalidQuota::ZERO_BURST)
        );
        assert!(InvalidQuota::ZERO_BURST.to_string().contains("burst of 0"));
    }

    /// Finding: a quota whose burst × interval passed u64 nanoseconds saturated the bucket's
    /// capacity, and the limiter then admitted everything. It can no longer be built.
    #[test]
    fn a_bucket_longer_than_the_clock_is_refused_when_built() {
        assert_eq!(
            Quota::per_day(1).try_burst(u32::MAX),
            Err(InvalidQuota::TOO_LONG)
        );
        // About 146 years is the limit: a year-long bucket is fine.
        assert!(Quota::per_day(1).try_burst(365).is_ok());
        let panicked = std::panic::catch_unwind(|| Quota::per_day(1).burst(u32::MAX));
        assert!(panicked.is_err());
        assert!(std::panic::catch_unwind(|| Quota::per_second(0)).is_err());
    }

    #[test]
    fn clamped_quotas_stay_valid() {
        let q = Quota::clamped(u64::MAX, 1_000);
        assert!(q.capacity_nanos() <= MAX_SPAN_NANOS);
        assert_eq!(
            Quota::clamped(0, 0),
            Quota::per_second(1_000_000_000).burst(1)
        );
    }
}
