//! What a rate limit allows: [`Quota`].

use std::num::NonZeroU32;
use std::time::Duration;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A rate and a burst: "`n` requests per period, at most `burst` at once".
///
/// A quota is built from non-zero numbers, so an invalid one cannot exist.
///
/// # What the burst means
///
/// The limiter is a GCRA (a token bucket measured in time): requests are spaced by the
/// *emission interval* (`period / n`), and up to `burst` requests may go at once when the bucket
/// is full. A full bucket refills at one request per interval. The burst defaults to **1**:
/// requests are evenly spaced and no window of one period ever holds more than `n` of them.
///
/// A larger burst lets `burst` requests go at once, then refills at the rate, so a window of one
/// period can see up to `n + burst - 1` requests: `per_minute(60).with_burst(10)` admits 10 at
/// once and then one a second, so **69** in the first minute. That is what "a burst" means in
/// every GCRA (governor's `per_minute(n)` sets the burst to `n`, which is why it admits up to
/// `2n - 1` in its first minute, governor#219). Against an API that counts requests in a sliding
/// window, keep the burst at 1, or lower the rate by the burst.
///
/// Over any span of `t`, a limiter admits at most `n * t / period + burst` requests.
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use tollway_limiter::Quota;
///
/// let eleven = NonZeroU32::new(11).unwrap();
/// let quota = Quota::per_second(eleven);
/// assert_eq!(quota.burst().get(), 1);
/// // Intervals are rounded up to the nanosecond: never faster than the rate.
/// assert_eq!(quota.interval(), Duration::from_nanos(90_909_091));
///
/// let daily = Quota::per_day(NonZeroU32::new(1_000_000).unwrap())
///     .with_burst(NonZeroU32::new(100).unwrap());
/// assert_eq!(daily.burst().get(), 100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    interval_nanos: u64,
    burst: NonZeroU32,
}

impl Quota {
    /// `n` requests per second, burst 1.
    pub const fn per_second(n: NonZeroU32) -> Self {
        Self::per_period_nanos(NANOS_PER_SECOND, n)
    }

    /// `n` requests per minute, burst 1.
    pub const fn per_minute(n: NonZeroU32) -> Self {
        Self::per_period_nanos(60 * NANOS_PER_SECOND, n)
    }

    /// `n` requests per hour, burst 1.
    pub const fn per_hour(n: NonZeroU32) -> Self {
        Self::per_period_nanos(3_600 * NANOS_PER_SECOND, n)
    }

    /// `n` requests per day (86,400 s), burst 1.
    pub const fn per_day(n: NonZeroU32) -> Self {
        Self::per_period_nanos(86_400 * NANOS_PER_SECOND, n)
    }

    /// One request every `interval`, burst 1; `None` if `interval` is zero or longer than
    /// about 584 years.
    pub fn with_period(interval: Duration) -> Option<Self> {
        let nanos = u64::try_from(interval.as_nanos()).ok()?;
        (nanos > 0).then_some(Self {
            interval_nanos: nanos,
            burst: NonZeroU32::MIN,
        })
    }

    /// `n` requests per `period`, burst 1; `None` if `period` is zero or too long.
    pub fn per(period: Duration, n: NonZeroU32) -> Option<Self> {
        let nanos = u64::try_from(period.as_nanos()).ok()?;
        (nanos > 0).then(|| Self::per_period_nanos(nanos, n))
    }

    /// The same rate with up to `burst` requests at once (see [the type docs](Self)).
    #[must_use]
    pub const fn with_burst(mut self, burst: NonZeroU32) -> Self {
        self.burst = burst;
        self
    }

    /// The time between two requests at the steady rate (the emission interval).
    pub const fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// How many requests may go at once from a full bucket.
    pub const fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The steady rate in requests per second.
    pub fn per_second_f64(&self) -> f64 {
        NANOS_PER_SECOND as f64 / self.interval_nanos as f64
    }

    pub(crate) const fn interval_nanos(&self) -> u64 {
        self.interval_nanos
    }

    pub(crate) const fn from_interval_nanos(interval_nanos: u64, burst: NonZeroU32) -> Self {
        Self {
            interval_nanos: if interval_nanos == 0 {
                1
            } else {
                interval_nanos
            },
            burst,
        }
    }

    /// `period / n` rounded up, so the limiter is never faster than asked.
    const fn per_period_nanos(period_nanos: u64, n: NonZeroU32) -> Self {
        let n = n.get() as u64;
        Self {
            interval_nanos: period_nanos.div_ceil(n),
            burst: NonZeroU32::MIN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn intervals() {
        assert_eq!(
            Quota::per_second(nz(10)).interval(),
            Duration::from_millis(100)
        );
        assert_eq!(Quota::per_minute(nz(60)).interval(), Duration::from_secs(1));
        assert_eq!(Quota::per_hour(nz(1)).interval(), Duration::from_secs(3600));
        assert_eq!(
            Quota::per_day(nz(1_000_000)).interval(),
            Duration::from_nanos(86_400_000)
        );
        assert_eq!(
            Quota::per(Duration::from_secs(15 * 60), nz(100))
                .unwrap()
                .interval(),
            Duration::from_secs(9)
        );
        assert_eq!(Quota::with_period(Duration::ZERO), None);
        assert_eq!(Quota::per(Duration::ZERO, nz(3)), None);
        assert_eq!(
            Quota::with_period(Duration::from_millis(5))
                .unwrap()
                .interval(),
            Duration::from_millis(5)
        );
        assert_eq!(Quota::per_second(nz(3)).with_burst(nz(7)).burst(), nz(7));
        assert!((Quota::per_second(nz(20)).per_second_f64() - 20.0).abs() < 1e-9);
    }

    #[test]
    fn rounding_up_never_exceeds_the_rate() {
        // 11 intervals of 1/11 s, rounded down, would fit 12 requests in one second.
        let q = Quota::per_second(nz(11));
        assert!(q.interval_nanos() * 11 >= NANOS_PER_SECOND);
    }
}
