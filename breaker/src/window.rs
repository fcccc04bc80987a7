//! The windows the failure and slow-call rates are computed over, lock-free.
//!
//! - [`CountRing`]: the last `n` calls as two rings of bits (failed, slow) with running totals
//!   adjusted when a bit flips, so an eviction subtracts what it overwrites. A success in a
//!   healthy window costs one `fetch_add` on the cursor and one load.
//! - [`SecondBuckets`]: one bucket per second of the window, reused when its second comes round
//!   again: memory is fixed, whatever the traffic.
//!
//! Both are exact when calls are recorded one at a time; under concurrency a count may be off by
//! a call or two around a clear or a bucket's reuse, never more.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::config::Window;

/// What a window holds at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

#[derive(Debug)]
pub(crate) enum Tally {
    Count(CountRing),
    Time(SecondBuckets),
}

impl Tally {
    pub(crate) fn new(window: Window) -> Self {
        match window {
            Window::Count(n) => Self::Count(CountRing::new(n)),
            Window::Time(secs) => Self::Time(SecondBuckets::new(secs)),
        }
    }

    pub(crate) const fn needs_time(&self) -> bool {
        matches!(self, Self::Time(_))
    }

    /// Records one call at second `second` (ignored by a count window); returns the totals
    /// afterwards when `want_totals`.
    #[inline]
    pub(crate) fn record(
        &self,
        failed: bool,
        slow: bool,
        second: u64,
        want_totals: bool,
    ) -> Option<Totals> {
        match self {
            Self::Count(ring) => ring.record(failed, slow, want_totals),
            Self::Time(buckets) => buckets.record(failed, slow, second, want_totals),
        }
    }

    pub(crate) fn totals(&self, second: u64) -> Totals {
        match self {
            Self::Count(ring) => ring.totals(),
            Self::Time(buckets) => buckets.totals(second),
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Self::Count(ring) => ring.clear(),
            Self::Time(buckets) => buckets.clear(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct CountRing {
    size: u64,
    cursor: AtomicU64,
    failed_bits: Box<[AtomicU64]>,
    slow_bits: Box<[AtomicU64]>,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl CountRing {
    fn new(size: u32) -> Self {
        let words = size.div_ceil(64) as usize;
        let zeros = || (0..words).map(|_| AtomicU64::new(0)).collect();
        Self {
            size: u64::from(size),
            cursor: AtomicU64::new(0),
            failed_bits: zeros(),
            slow_bits: zeros(),
            failures: AtomicI64::new(0),
            slow: AtomicI64::new(0),
        }
    }

    #[inline]
    fn record(&self, failed: bool, slow: bool, want_totals: bool) -> Option<Totals> {
        if !failed
            && !slow
            && self.failures.load(Relaxed) == 0
            && self.slow.load(Relaxed) == 0
            && self.cursor.load(Relaxed) >= self.size
        {
            // A full window of successes: rotating an all-zero ring changes nothing (a later
            // failure is evicted `size` calls after it lands, wherever it lands), so the
            // healthy steady state records with loads only.
            return want_totals.then(|| self.totals());
        }
        let index = self.cursor.fetch_add(1, Relaxed);
        let position = index % self.size;
        let word = (position / 64) as usize;
        let bit = 1u64 << (position % 64);
        let failures = flip(&self.failed_bits[word], bit, failed);
        if failures != 0 {
            self.failures.fetch_add(failures, Relaxed);
        }
        let slows = flip(&self.slow_bits[word], bit, slow);
        if slows != 0 {
            self.slow.fetch_add(slows, Relaxed);
        }
        want_totals.then(|| self.totals())
    }

    fn totals(&self) -> Totals {
        Totals {
            calls: self.cursor.load(Relaxed).min(self.size),
            failures: non_negative(self.failures.load(Relaxed)),
            slow: non_negative(self.slow.load(Relaxed)),
        }
    }

    fn clear(&self) {
        for word in self.failed_bits.iter().chain(self.slow_bits.iter()) {
            word.store(0, Relaxed);
        }
        self.failures.store(0, Relaxed);
        self.slow.store(0, Relaxed);
        self.cursor.store(0, Relaxed);
    }
}

/// Sets or clears `bit`; returns how the number of set bits changed. Clearing an already clear
/// bit (a success evicting a success: the common case) only loads.
#[inline]
fn flip(slot: &AtomicU64, bit: u64, set: bool) -> i64 {
    if set {
        i64::from(slot.fetch_or(bit, Relaxed) & bit == 0)
    } else if slot.load(Relaxed) & bit == 0 {
        0
    } else {
        -i64::from(slot.fetch_and(!bit, Relaxed) & bit != 0)
    }
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[derive(Debug)]
pub(crate) struct SecondBuckets {
    buckets: Box<[Bucket]>,
}

#[derive(Debug, Default)]
struct Bucket {
    /// The second this bucket counts, plus one (0: never used).
    second: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl SecondBuckets {
    fn new(secs: u32) -> Self {
        Self {
            buckets: (0..secs).map(|_| Bucket::default()).collect(),
        }
    }

    fn record(&self, failed: bool, slow: bool, second: u64, want_totals: bool) -> Option<Totals> {
        let len = self.buckets.len() as u64;
        let bucket = &self.buckets[(second % len) as usize];
        let tag = second + 1;
        let seen = bucket.second.load(Relaxed);
        if seen != tag
            && seen < tag
            && bucket
                .second
                .compare_exchange(seen, tag, Relaxed, Relaxed)
                .is_ok()
        {
            bucket.calls.store(0, Relaxed);
            bucket.failures.store(0, Relaxed);
            bucket.slow.store(0, Relaxed);
        }
        if bucket.second.load(Relaxed) == tag {
            bucket.calls.fetch_add(1, Relaxed);
            if failed {
                bucket.failures.fetch_add(1, Relaxed);
            }
            if slow {
                bucket.slow.fetch_add(1, Relaxed);
            }
        }
        want_totals.then(|| self.totals(second))
    }

    fn totals(&self, second: u64) -> Totals {
        let len = self.buckets.len() as u64;
        let newest = second + 1;
        let oldest = newest.saturating_sub(len - 1);
        let mut totals = Totals::default();
        for bucket in &*self.buckets {
            let tag = bucket.second.load(Relaxed);
            if tag >= oldest && tag <= newest && tag != 0 {
                totals.calls += u64::from(bucket.calls.load(Relaxed));
                totals.failures += u64::from(bucket.failures.load(Relaxed));
                totals.slow += u64::from(bucket.slow.load(Relaxed));
            }
        }
        totals
    }

    fn clear(&self) {
        for bucket in &*self.buckets {
            bucket.second.store(0, Relaxed);
            bucket.calls.store(0, Relaxed);
            bucket.failures.store(0, Relaxed);
            bucket.slow.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_ring_evicts_what_it_overwrites() {
        let ring = Tally::new(Window::Count(3));
        let t = |f, s| ring.record(f, s, 0, true).expect("totals");
        assert_eq!(
            t(true, false),
            Totals {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
        assert_eq!(
            t(true, true),
            Totals {
                calls: 2,
                failures: 2,
                slow: 1
            }
        );
        assert_eq!(
            t(false, false),
            Totals {
                calls: 3,
                failures: 2,
                slow: 1
            }
        );
        // Evicts the first failure.
        assert_eq!(
            t(false, false),
            Totals {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        // Evicts the slow failure.
        assert_eq!(
            t(false, false),
            Totals {
                calls: 3,
                failures: 0,
                slow: 0
            }
        );
        ring.clear();
        assert_eq!(ring.totals(0), Totals::default());
    }

    #[test]
    fn count_ring_spans_words() {
        let ring = Tally::new(Window::Count(130));
        for i in 0..400u32 {
            ring.record(i % 4 == 0, false, 0, false);
        }
        // The last 130 calls are 270..400: multiples of 4 among them.
        let expected = (270..400).filter(|i| i % 4 == 0).count() as u64;
        assert_eq!(ring.totals(0).failures, expected);
        assert_eq!(ring.totals(0).calls, 130);
    }

    #[test]
    fn second_buckets_forget_old_seconds() {
        let buckets = Tally::new(Window::Time(3));
        buckets.record(true, false, 10, false);
        buckets.record(false, true, 11, false);
        buckets.record(false, false, 12, false);
        assert_eq!(
            buckets.totals(12),
            Totals {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        // Second 13 reuses second 10's bucket.
        buckets.record(false, false, 13, false);
        assert_eq!(
            buckets.totals(13),
            Totals {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        // Nothing recorded for a while: all of it is out of the window.
        assert_eq!(buckets.totals(30), Totals::default());
        // A late record for a second whose bucket moved on is dropped, not mixed in.
        buckets.record(true, false, 30, false);
        buckets.record(true, false, 27, false);
        assert_eq!(buckets.totals(30).failures, 1);
    }
}
