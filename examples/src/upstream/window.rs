//! The exact sliding window the simulator enforces and measures with.
//!
//! A request admitted at `t` counts against every window `(s - period, s]` that contains `t`, so
//! "at most `limit` in any period" holds for every placement of the window, not just aligned ones.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Arrival times of admitted requests within the last `period`, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct SlidingWindow {
    period: Duration,
    arrivals: VecDeque<Instant>,
    max_len: usize,
}

/// A request the window let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    /// How many more requests the window would let in right now.
    pub(crate) remaining: u32,
    /// How long until the window is empty again.
    pub(crate) reset: Duration,
}

/// A request the window turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// How long until the oldest admitted arrival leaves the window, freeing a place.
    pub(crate) retry_after: Duration,
    /// How long until the window is empty again.
    pub(crate) reset: Duration,
}

impl SlidingWindow {
    /// An empty window of length `period`.
    pub(crate) fn new(period: Duration) -> Self {
        Self {
            period,
            arrivals: VecDeque::new(),
            max_len: 0,
        }
    }

    /// Admits an arrival at `now` if fewer than `limit` arrivals lie in `(now - period, now]`.
    /// A rejected arrival leaves the window unchanged.
    pub(crate) fn try_admit(&mut self, now: Instant, limit: u32) -> Result<Admission, Rejection> {
        let now = self.evict(now);
        if self.arrivals.len() >= limit as usize {
            let oldest = self.arrivals.front().copied().unwrap_or(now);
            let newest = self.arrivals.back().copied().unwrap_or(now);
            return Err(Rejection {
                retry_after: (oldest + self.period).saturating_duration_since(now),
                reset: (newest + self.period).saturating_duration_since(now),
            });
        }
        self.push(now);
        Ok(Admission {
            remaining: limit.saturating_sub(self.len()),
            reset: self.period,
        })
    }

    /// Records an arrival at `now` without any limit (for measuring only).
    pub(crate) fn record(&mut self, now: Instant) {
        let now = self.evict(now);
        self.push(now);
    }

    /// How many arrivals lie in the window that ended at the last admission or eviction.
    pub(crate) fn len(&self) -> u32 {
        u32::try_from(self.arrivals.len()).unwrap_or(u32::MAX)
    }

    /// The most arrivals ever seen together in one window.
    pub(crate) fn max_len(&self) -> u64 {
        self.max_len as u64
    }

    /// Drops the arrivals that left the window by `now`, and returns `now`, clamped so that
    /// arrivals stay in order even if a caller's clock reading is older than the newest one.
    fn evict(&mut self, now: Instant) -> Instant {
        let now = self.arrivals.back().map_or(now, |&newest| now.max(newest));
        while let Some(&oldest) = self.arrivals.front() {
            if now.saturating_duration_since(oldest) >= self.period {
                self.arrivals.pop_front();
            } else {
                break;
            }
        }
        now
    }

    fn push(&mut self, now: Instant) {
        self.arrivals.push_back(now);
        self.max_len = self.max_len.max(self.arrivals.len());
    }
}

/// `duration` in whole seconds, rounded up.
pub(crate) fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn admits_limit_then_rejects_until_oldest_leaves() {
        let mut window = SlidingWindow::new(SECOND);
        for i in 0..3 {
            let admission = window.try_admit(Instant::now(), 3).unwrap();
            assert_eq!(admission.remaining, 2 - i);
            advance(Duration::from_millis(100)).await;
        }
        // Arrivals at 0, 100 and 200 ms; now is 300 ms.
        let rejection = window.try_admit(Instant::now(), 3).unwrap_err();
        assert_eq!(rejection.retry_after, Duration::from_millis(700));
        assert_eq!(rejection.reset, Duration::from_millis(900));
        assert_eq!(window.len(), 3, "a rejection does not enter the window");

        // One nanosecond before the first arrival leaves: still full.
        advance(Duration::from_millis(700) - Duration::from_nanos(1)).await;
        assert!(window.try_admit(Instant::now(), 3).is_err());
        // Exactly one period after the first arrival, it has left.
        advance(Duration::from_nanos(1)).await;
        assert!(window.try_admit(Instant::now(), 3).is_ok());
        assert!(window.try_admit(Instant::now(), 3).is_err());
        assert_eq!(window.max_len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn no_window_placement_holds_more_than_the_limit() {
        // A client that sends every 50 ms for 5 s against a limit of 7 per second.
        let mut window = SlidingWindow::new(SECOND);
        let mut admitted = Vec::new();
        for _ in 0..100 {
            let now = Instant::now();
            if window.try_admit(now, 7).is_ok() {
                admitted.push(now);
            }
            advance(Duration::from_millis(50)).await;
        }
        // Brute force over every window that ends at an admission.
        for (i, &end) in admitted.iter().enumerate() {
            let inside = admitted[..=i].iter().filter(|&&t| end - t < SECOND).count();
            assert!(inside <= 7, "{inside} admitted in one second");
        }
        assert_eq!(window.max_len(), 7);
        // 5 s of traffic at a 7/s limit, with windows of arrivals every 50 ms: 5 full windows.
        assert_eq!(admitted.len(), 35);
    }

    #[tokio::test(start_paused = true)]
    async fn record_measures_the_busiest_second() {
        let mut window = SlidingWindow::new(SECOND);
        for _ in 0..4 {
            window.record(Instant::now());
        }
        advance(Duration::from_millis(999)).await;
        window.record(Instant::now());
        assert_eq!(window.max_len(), 5);
        advance(Duration::from_millis(1)).await;
        window.record(Instant::now());
        assert_eq!(window.len(), 2);
        assert_eq!(window.max_len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_clock_reading_keeps_arrivals_in_order() {
        let mut window = SlidingWindow::new(SECOND);
        let early = Instant::now();
        advance(Duration::from_millis(10)).await;
        window.record(Instant::now());
        window.record(early);
        advance(Duration::from_millis(1000)).await;
        window.record(Instant::now());
        assert_eq!(window.len(), 1);
    }

    #[test]
    fn ceil_secs_rounds_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_secs(SECOND), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
    }
}
