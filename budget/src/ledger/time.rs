//! Where a ledger reads the time: by default the system's real-time clock, read coarsely.
//!
//! A precise real-time read costs more than everything else a reservation does; the coarse one
//! (`CLOCK_REALTIME_COARSE` on Linux) costs a few nanoseconds and is exact to the kernel's
//! tick (a few milliseconds), plenty for windows of seconds to months. A clock given to
//! [`LedgerBuilder::clock`](super::LedgerBuilder::clock) is read as it is.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollway_core::{Clock, SharedClock};

use super::system_millis;

/// A ledger's clock.
#[derive(Clone, Debug)]
pub(crate) enum Time {
    /// The system's real-time clock, read coarsely.
    Coarse,
    /// A clock given to the builder.
    Clock(SharedClock),
}

impl Time {
    /// Milliseconds since the unix epoch, now.
    #[inline]
    pub(crate) fn millis(&self) -> i64 {
        match self {
            Self::Coarse => coarse_millis(),
            Self::Clock(clock) => system_millis(clock.system_now()),
        }
    }

    /// The same clock as a [`SharedClock`], for stores that read time themselves.
    pub(crate) fn shared(&self) -> SharedClock {
        match self {
            Self::Coarse => SharedClock::new(CoarseClock),
            Self::Clock(clock) => clock.clone(),
        }
    }
}

/// [`Time::Coarse`] as a [`Clock`].
#[derive(Debug, Clone, Copy)]
struct CoarseClock;

impl Clock for CoarseClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn system_now(&self) -> SystemTime {
        let millis = coarse_millis();
        match u64::try_from(millis) {
            Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
            Err(_) => UNIX_EPOCH - Duration::from_millis(millis.unsigned_abs()),
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn coarse_millis() -> i64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    now.tv_sec
        .saturating_mul(1_000)
        .saturating_add(now.tv_nsec / 1_000_000)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
fn coarse_millis() -> i64 {
    system_millis(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_follows_the_system_clock_to_its_tick() {
        let before = system_millis(SystemTime::now());
        let coarse = Time::Coarse.millis();
        let after = system_millis(SystemTime::now());
        // The coarse clock lags by less than a tick (a few milliseconds).
        assert!(
            coarse <= after && coarse > before - 50,
            "{before} {coarse} {after}"
        );
        let shared = system_millis(Time::Coarse.shared().system_now());
        assert!((shared - coarse).abs() < 50);
    }
}
