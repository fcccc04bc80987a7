//! The windows the failure and slow-call rates are computed over, and the consecutive-failure
//! count, each tagged with the closed generation it counts.
//!
//! A result is recorded only into the window of the generation it was admitted in: a window
//! holding an older generation's counts is reset by the first result of a newer one, and a result
//! older than the window is dropped. So a result that was read before an open → half-open →
//! closed cycle can never land in the new cycle's counts, and closing needs no clearing step.
//!
//! - [`CountRing`]: the last `n` calls, lock-free. Each slot holds its generation and two
//!   flags (failed, slow); running sums are adjusted by exactly what a slot's swap displaced. A
//!   success while the window holds no failure costs only loads.
//! - [`TimeSlices`]: the calls of the last `secs` seconds in 64 slices plus the one filling now,
//!   with running sums, behind a short lock: a call counts for at least `secs` seconds and at
//!   most 1/64 longer. Memory is fixed, whatever the traffic.

use crate::config::FailureWindow;
use crate::hot::HotWords;
use crate::sync::{AtomicU32, AtomicU64, Lock, Ordering::Relaxed};
use crate::word::generation_order;

/// What a window holds at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// How a recorded generation relates to the one a window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Age {
    Same,
    /// The window holds an older generation: start afresh.
    Newer,
    /// The result is from an older generation than the window: drop it.
    Stale,
}

/// Words that carry a generation tag in their top 24 bits and a value in the low 40.
const VALUE_BITS: u32 = 40;
const VALUE_MASK: u64 = (1 << VALUE_BITS) - 1;
const TAG_BITS: u32 = 24;
/// Signed running sums are kept biased, so that a removal applied before its addition (two
/// threads on one slot) is a value below the bias, not an underflow into the tag.
pub(crate) const BIAS: u64 = 1 << (VALUE_BITS - 1);

const fn tag(generation: u64) -> u64 {
    generation & ((1 << TAG_BITS) - 1)
}

/// Whether a tagged word belongs to `generation` and holds at least `value`.
#[inline]
pub(crate) const fn holds_at_least(word: u64, generation: u64, value: u64) -> bool {
    word >> VALUE_BITS == tag(generation) && word & VALUE_MASK >= value
}

pub(crate) const fn pack(generation: u64, value: u64) -> u64 {
    (tag(generation) << VALUE_BITS) | (value & VALUE_MASK)
}

fn age(word: u64, generation: u64) -> Age {
    match generation_order(word >> VALUE_BITS, tag(generation), TAG_BITS) {
        std::cmp::Ordering::Equal => Age::Same,
        std::cmp::Ordering::Less => Age::Newer,
        std::cmp::Ordering::Greater => Age::Stale,
    }
}

/// Updates a tagged word for `generation` with `f` (given the current value, or `initial` for a
/// word of an older generation). `None`, and nothing written, when the word is newer.
fn update(slot: &AtomicU64, generation: u64, initial: u64, f: impl Fn(u64) -> u64) -> Option<u64> {
    let mut current = slot.load(Relaxed);
    loop {
        let value = match age(current, generation) {
            Age::Same => current & VALUE_MASK,
            Age::Newer => initial,
            Age::Stale => return None,
        };
        let next = f(value);
        let packed = pack(generation, next);
        if packed == current {
            return Some(next);
        }
        match slot.compare_exchange_weak(current, packed, Relaxed, Relaxed) {
            Ok(_) => return Some(next),
            Err(actual) => current = actual,
        }
    }
}

/// The value of a tagged word for `generation` (`initial` when it holds another generation).
fn read(slot: &AtomicU64, generation: u64, initial: u64) -> u64 {
    let current = slot.load(Relaxed);
    if age(current, generation) == Age::Same {
        current & VALUE_MASK
    } else {
        initial
    }
}

/// Failures in a row, for one closed generation (a word in the breaker's [`HotWords`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Consecutive(pub(crate) &'static AtomicU64);

impl Consecutive {
    /// Records one result; the failures in a row after it, or `None` for a stale result.
    #[inline]
    pub(crate) fn record(&self, generation: u64, failed: bool) -> Option<u32> {
        if !failed && self.0.load(Relaxed) == pack(generation, 0) {
            return Some(0);
        }
        let count = update(self.0, generation, 0, |n| {
            if failed { (n + 1).min(VALUE_MASK) } else { 0 }
        })?;
        Some(u32::try_from(count).unwrap_or(u32::MAX))
    }

    pub(crate) fn get(&self, generation: u64) -> u32 {
        u32::try_from(read(self.0, generation, 0)).unwrap_or(u32::MAX)
    }
}

#[derive(Debug)]
pub(crate) enum Tally {
    Count(CountRing),
    Time(TimeSlices),
}

impl Tally {
    pub(crate) fn new(window: FailureWindow, hot: &'static HotWords) -> Self {
        match window {
            FailureWindow::Count(n) => Self::Count(CountRing::new(n, hot)),
            FailureWindow::Time(secs) => Self::Time(TimeSlices::new(secs)),
        }
    }

    pub(crate) const fn needs_time(&self) -> bool {
        matches!(self, Self::Time(_))
    }

    /// Records one call of `generation` at `now_micros` (ignored by a count window); the totals
    /// afterwards, or `None` when the result is stale.
    #[inline]
    pub(crate) fn record(
        &self,
        generation: u64,
        failed: bool,
        slow: bool,
        now_micros: u64,
    ) -> Option<Totals> {
        match self {
            Self::Count(ring) => ring.record(generation, failed, slow),
            Self::Time(slices) => slices.record(generation, failed, slow, now_micros),
        }
    }

    /// What the window of `generation` holds at `now_micros` (nothing if it holds another).
    pub(crate) fn totals(&self, generation: u64, now_micros: u64) -> Totals {
        match self {
            Self::Count(ring) => ring.totals(generation),
            Self::Time(slices) => slices.totals(generation, now_micros),
        }
    }
}

pub(crate) struct CountRing {
    size: u64,
    /// Generation tag and the index of the next call (in the breaker's [`HotWords`]).
    head: &'static AtomicU64,
    /// Per slot: the low 30 bits of the generation that wrote it, then failed and slow flags.
    slots: Box<[AtomicU32]>,
    failures: &'static AtomicU64,
    slow: &'static AtomicU64,
}

impl std::fmt::Debug for CountRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountRing")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

const SLOT_TAG_MASK: u64 = (1 << 30) - 1;

impl CountRing {
    fn new(size: u32, hot: &'static HotWords) -> Self {
        Self {
            size: u64::from(size),
            head: &hot.head,
            slots: (0..size).map(|_| AtomicU32::new(0)).collect(),
            failures: &hot.failures,
            slow: &hot.slow,
        }
    }

    #[inline]
    fn record(&self, generation: u64, failed: bool, slow: bool) -> Option<Totals> {
        if !failed
            && !slow
            && self.failures.load(Relaxed) == pack(generation, BIAS)
            && self.slow.load(Relaxed) == pack(generation, BIAS)
        {
            let head = self.head.load(Relaxed);
            if age(head, generation) == Age::Same && head & VALUE_MASK >= self.size {
                // A full window without failures: rotating in a success changes nothing (a
                // later failure is evicted `size` calls after it lands, wherever it lands), so
                // the healthy steady state records with loads only.
                return Some(Totals {
                    calls: self.size,
                    failures: 0,
                    slow: 0,
                });
            }
        }
        let size = self.size;
        let index = update(self.head, generation, 0, |n| {
            // Kept in `size..2 * size` once full: the same slot, and the window stays full.
            if n + 1 >= 2 * size {
                n + 1 - size
            } else {
                n + 1
            }
        })?
        .wrapping_sub(1);
        let position = usize::try_from(index % size).unwrap_or(0);
        let flags = (u32::from(failed) << 1) | u32::from(slow);
        let stamp = u32::try_from(generation & SLOT_TAG_MASK).unwrap_or(0) << 2;
        let old = self.slots[position].swap(stamp | flags, Relaxed);
        let evicted = if old >> 2 == stamp >> 2 {
            old & 0b11
        } else {
            0
        };
        let delta = |bit: u32| i64::from((flags >> bit) & 1) - i64::from((evicted >> bit) & 1);
        let failures = self.adjust(self.failures, generation, delta(1))?;
        let slow = self.adjust(self.slow, generation, delta(0))?;
        Some(Totals {
            calls: (index + 1).min(size),
            failures,
            slow,
        })
    }

    /// Adds `delta` to a running sum; the sum after it.
    fn adjust(&self, sum: &AtomicU64, generation: u64, delta: i64) -> Option<u64> {
        let value = if delta == 0 {
            read(sum, generation, BIAS)
        } else {
            update(sum, generation, BIAS, |v| v.saturating_add_signed(delta))?
        };
        Some(value.saturating_sub(BIAS))
    }

    fn totals(&self, generation: u64) -> Totals {
        // Every record moves the head first: a head of another generation means this
        // generation's window holds nothing.
        if age(self.head.load(Relaxed), generation) != Age::Same {
            return Totals::default();
        }
        Totals {
            calls: read(self.head, generation, 0).min(self.size),
            failures: read(self.failures, generation, BIAS).saturating_sub(BIAS),
            slow: read(self.slow, generation, BIAS).saturating_sub(BIAS),
        }
    }
}

/// How many slices a time window is cut into (plus the one filling now).
const SLICES: u64 = 64;

#[derive(Debug)]
pub(crate) struct TimeSlices {
    slice_micros: u64,
    state: Lock<SliceState>,
}

#[derive(Debug)]
struct SliceState {
    generation: u64,
    /// The slice the newest call fell in (time since the breaker was made / slice length).
    newest: u64,
    slices: Box<[Totals]>,
    sums: Totals,
}

impl TimeSlices {
    fn new(secs: u32) -> Self {
        Self {
            slice_micros: (u64::from(secs) * 1_000_000 / SLICES).max(1),
            state: Lock::new(SliceState {
                generation: 0,
                newest: 0,
                slices: vec![Totals::default(); SLICES as usize + 1].into_boxed_slice(),
                sums: Totals::default(),
            }),
        }
    }

    fn record(&self, generation: u64, failed: bool, slow: bool, now_micros: u64) -> Option<Totals> {
        let slice = now_micros / self.slice_micros;
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.enter(generation, slice)?;
        let index = (state.newest % (SLICES + 1)) as usize;
        for totals in [&mut state.slices[index], &mut state.sums] {
            totals.calls += 1;
            totals.failures += u64::from(failed);
            totals.slow += u64::from(slow);
        }
        Some(state.sums)
    }

    fn totals(&self, generation: u64, now_micros: u64) -> Totals {
        let mut state = self.state.lock();
        if state.generation != generation {
            return Totals::default();
        }
        state.advance(now_micros / self.slice_micros);
        state.sums
    }
}

impl SliceState {
    /// Makes the window current for a result of `generation` in `slice`; `None` if stale.
    fn enter(&mut self, generation: u64, slice: u64) -> Option<()> {
        match generation_order(self.generation, generation, crate::word::GENERATION_BITS) {
            std::cmp::Ordering::Greater => return None,
            std::cmp::Ordering::Less => {
                self.generation = generation;
                self.newest = slice;
                self.slices.fill(Totals::default());
                self.sums = Totals::default();
            }
            std::cmp::Ordering::Equal => self.advance(slice),
        }
        Some(())
    }

    /// Moves the newest slice to `slice`, evicting what fell out of the window. A `slice`
    /// behind the newest (threads read the clock a moment apart) counts in the newest.
    fn advance(&mut self, slice: u64) {
        let steps = slice.saturating_sub(self.newest);
        for step in 1..=steps.min(SLICES + 1) {
            let index = ((self.newest + step) % (SLICES + 1)) as usize;
            let gone = std::mem::take(&mut self.slices[index]);
            self.sums.calls -= gone.calls;
            self.sums.failures -= gone.failures;
            self.sums.slow -= gone.slow;
        }
        self.newest = self.newest.max(slice);
    }
}

#[cfg(all(test, not(tollway_loom)))]
mod tests;
