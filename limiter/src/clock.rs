//! How the limiter reads time: [`LimiterClock`], and the cheap [`QuantaClock`] it uses by
//! default.
//!
//! The limiter keeps time as nanoseconds since a fixed origin. Any
//! [`tollway_core::Clock`] works ([`LimiterClock`] is implemented for core's
//! [`MonotonicClock`], [`TokioClock`] and [`FakeClock`]); reading the clock is most of the cost
//! of a `check`, so [`QuantaClock`] reads the CPU's time-stamp counter where it can.

use std::fmt;
use std::time::{Duration, Instant};

use tollway_core::{Clock, FakeClock, MonotonicClock, TokioClock};

/// A [`Clock`] the limiter can read as nanoseconds since an origin.
///
/// The provided methods suit every clock; a clock with a cheaper raw reading (such as
/// [`QuantaClock`]) overrides them. To use your own [`Clock`], write
/// `impl LimiterClock for MyClock {}`.
pub trait LimiterClock: Clock {
    /// The origin this clock measures from: an instant at or before every later `now()`.
    fn origin(&self) -> Instant {
        self.now()
    }

    /// Nanoseconds from `origin` (a value [`origin`](Self::origin) returned) to now.
    fn nanos_since(&self, origin: Instant) -> u64 {
        duration_nanos(self.now().saturating_duration_since(origin))
    }
}

impl LimiterClock for MonotonicClock {}
impl LimiterClock for TokioClock {}
impl LimiterClock for FakeClock {}

/// A monotonic clock that reads the CPU's time-stamp counter (through the `quanta` crate) when
/// the CPU has an invariant one, and the operating system's clock otherwise.
///
/// It is the limiter's default: a reading costs a few nanoseconds instead of a system call's
/// worth. It does **not** follow tokio's paused test clock: tests that use
/// `tokio::time::pause` must build their limiter with [`TokioClock`].
#[derive(Clone)]
pub struct QuantaClock {
    clock: quanta::Clock,
    raw_origin: u64,
    origin: Instant,
}

impl QuantaClock {
    /// A clock whose origin is now. The first one made in a process calibrates the counter
    /// (a few milliseconds); later ones are cheap.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let raw_origin = clock.raw();
        Self {
            clock,
            raw_origin,
            origin: Instant::now(),
        }
    }

    #[inline]
    fn elapsed_nanos(&self) -> u64 {
        self.clock.delta_as_nanos(self.raw_origin, self.clock.raw())
    }
}

impl Default for QuantaClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for QuantaClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuantaClock")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Clock for QuantaClock {
    fn now(&self) -> Instant {
        self.origin + Duration::from_nanos(self.elapsed_nanos())
    }
}

impl LimiterClock for QuantaClock {
    fn origin(&self) -> Instant {
        self.origin
    }

    #[inline]
    fn nanos_since(&self, origin: Instant) -> u64 {
        if origin == self.origin {
            self.elapsed_nanos()
        } else {
            duration_nanos(self.now().saturating_duration_since(origin))
        }
    }
}

/// A duration in whole nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quanta_clock_moves_forward_and_agrees_with_now() {
        let clock = QuantaClock::new();
        let origin = clock.origin();
        let a = clock.nanos_since(origin);
        let b = clock.nanos_since(origin);
        assert!(b >= a);
        let other_origin = origin - Duration::from_secs(1);
        assert!(clock.nanos_since(other_origin) >= 1_000_000_000);
    }

    #[test]
    fn fake_clock_counts_from_its_origin() {
        let clock = FakeClock::new();
        let origin = clock.origin();
        clock.advance(Duration::from_millis(3));
        assert_eq!(clock.nanos_since(origin), 3_000_000);
    }
}
