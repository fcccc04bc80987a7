//! Time, injectable.
//!
//! Every tollway layer reads time through [`Clock`], so its time-dependent logic can be tested
//! exactly: [`FakeClock`] moves only when a test calls [`FakeClock::advance`], and its clones share
//! one time. Async waits use tokio's timer; layers that both wait and compute use [`TokioClock`],
//! which follows tokio's paused clock in tests (`tokio::time::pause`).
//!
//! ```
//! use std::time::Duration;
//! use tollway_core::clock::{Clock, FakeClock};
//!
//! let clock = FakeClock::new();
//! let shared = clock.clone();
//! let start = clock.now();
//! shared.advance(Duration::from_millis(250));
//! assert_eq!(clock.now() - start, Duration::from_millis(250));
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A source of monotonic and wall-clock time.
pub trait Clock: Clone + Send + Sync + 'static {
    /// Monotonic time: what intervals, windows and deadlines are measured with.
    fn now(&self) -> Instant;

    /// Wall-clock time: what HTTP dates and calendar windows are read against.
    fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The operating system's monotonic clock ([`Instant::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// tokio's clock ([`tokio::time::Instant::now`]): it stands still and jumps with tokio's paused
/// test clock, so deadlines computed from it agree with `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A clock that moves only when told to. Clones share one time.
#[derive(Debug, Clone)]
pub struct FakeClock {
    inner: Arc<FakeInner>,
}

#[derive(Debug)]
struct FakeInner {
    origin: Instant,
    system_origin: SystemTime,
    elapsed_nanos: AtomicU64,
}

impl FakeClock {
    /// A fake clock whose wall-clock time starts at the real current time.
    pub fn new() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// A fake clock whose wall-clock time starts at `system_time`
    /// (useful for calendar windows and HTTP dates).
    pub fn starting_at(system_time: SystemTime) -> Self {
        Self {
            inner: Arc::new(FakeInner {
                origin: Instant::now(),
                system_origin: system_time,
                elapsed_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Moves time forward by `by`, for this clock and all its clones.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.inner.elapsed_nanos.fetch_add(nanos, Ordering::AcqRel);
    }

    /// How far the clock has been advanced since it was made.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.inner.elapsed_nanos.load(Ordering::Acquire))
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.inner.origin + self.elapsed()
    }

    fn system_now(&self) -> SystemTime {
        self.inner.system_origin + self.elapsed()
    }
}

/// Any [`Clock`], type-erased behind an `Arc`: for state that should not be generic over its
/// clock (policies, budgets, ledgers, caches). Clones share the clock; it is a [`Clock`] too.
///
/// ```
/// use std::time::Duration;
/// use tollway_core::clock::{Clock, FakeClock, SharedClock};
///
/// let fake = FakeClock::new();
/// let shared = SharedClock::new(fake.clone());
/// let start = shared.now();
/// fake.advance(Duration::from_secs(3));
/// assert_eq!(shared.now() - start, Duration::from_secs(3));
/// ```
#[derive(Clone)]
pub struct SharedClock(Arc<dyn DynClock>);

trait DynClock: Send + Sync {
    fn dyn_now(&self) -> Instant;
    fn dyn_system_now(&self) -> SystemTime;
}

impl<K: Clock> DynClock for K {
    fn dyn_now(&self) -> Instant {
        Clock::now(self)
    }

    fn dyn_system_now(&self) -> SystemTime {
        Clock::system_now(self)
    }
}

impl SharedClock {
    /// `clock`, type-erased.
    pub fn new(clock: impl Clock) -> Self {
        Self(Arc::new(clock))
    }

    /// [`Clock::now`], without importing the trait.
    #[inline]
    pub fn now(&self) -> Instant {
        self.0.dyn_now()
    }

    /// [`Clock::system_now`], without importing the trait.
    #[inline]
    pub fn system_now(&self) -> SystemTime {
        self.0.dyn_system_now()
    }
}

impl Clock for SharedClock {
    #[inline]
    fn now(&self) -> Instant {
        self.0.dyn_now()
    }

    #[inline]
    fn system_now(&self) -> SystemTime {
        self.0.dyn_system_now()
    }
}

/// [`TokioClock`]: follows tokio's paused clock in tests, the system's otherwise.
impl Default for SharedClock {
    fn default() -> Self {
        Self::new(TokioClock)
    }
}

impl std::fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedClock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_clones_share_time() {
        let clock = FakeClock::starting_at(SystemTime::UNIX_EPOCH);
        let other = clock.clone();
        let t0 = clock.now();
        other.advance(Duration::from_secs(2));
        assert_eq!(clock.now() - t0, Duration::from_secs(2));
        assert_eq!(
            clock.system_now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let t0 = TokioClock.now();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(TokioClock.now() - t0, Duration::from_secs(5));
    }
}
