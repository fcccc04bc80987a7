//! The breaker's state packed into one `u64`, so that every transition (and every half-open
//! permit) is a single compare-and-swap: the open → half-open race cannot admit extra probes.
//!
//! Layout, low bits first: state (2 bits), mode (2), probes in flight (10), probe successes (10),
//! generation (40).

use crate::event::{Mode, State};

const STATE_MASK: u64 = 0b11;
const MODE_SHIFT: u32 = 2;
const MODE_MASK: u64 = 0b11 << MODE_SHIFT;
const PROBES_SHIFT: u32 = 4;
const SUCCESSES_SHIFT: u32 = 14;
const COUNTER_MASK: u64 = 0x3FF;
const GENERATION_SHIFT: u32 = 24;
/// How many bits of the generation the word keeps (it wraps after 2^40 state changes).
pub(crate) const GENERATION_BITS: u32 = 64 - GENERATION_SHIFT;
const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;
/// Closed in normal mode is all-zero in these bits: the hot path tests one mask.
const STATE_AND_MODE: u64 = STATE_MASK | MODE_MASK;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(pub(crate) u64);

impl Word {
    pub(crate) const fn new(state: State, mode: Mode, generation: u64) -> Self {
        let state = match state {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        };
        let mode = match mode {
            Mode::Normal => 0,
            Mode::ForcedOpen => 1,
            Mode::Disabled => 2,
            Mode::MetricsOnly => 3,
        };
        Self(state | (mode << MODE_SHIFT) | ((generation & GENERATION_MASK) << GENERATION_SHIFT))
    }

    /// Closed and in normal mode: the only test on the hot path.
    pub(crate) const fn is_closed_normal(self) -> bool {
        self.0 & STATE_AND_MODE == 0
    }

    pub(crate) const fn state(self) -> State {
        match self.0 & STATE_MASK {
            0 => State::Closed,
            1 => State::Open,
            _ => State::HalfOpen,
        }
    }

    pub(crate) const fn mode(self) -> Mode {
        match (self.0 & MODE_MASK) >> MODE_SHIFT {
            0 => Mode::Normal,
            1 => Mode::ForcedOpen,
            2 => Mode::Disabled,
            _ => Mode::MetricsOnly,
        }
    }

    pub(crate) const fn probes(self) -> u32 {
        ((self.0 >> PROBES_SHIFT) & COUNTER_MASK) as u32
    }

    pub(crate) const fn successes(self) -> u32 {
        ((self.0 >> SUCCESSES_SHIFT) & COUNTER_MASK) as u32
    }

    pub(crate) const fn generation(self) -> u64 {
        self.0 >> GENERATION_SHIFT
    }

    /// The next generation (wraps after 2^40 state changes).
    pub(crate) const fn next_generation(self) -> u64 {
        (self.generation() + 1) & GENERATION_MASK
    }

    pub(crate) const fn with_probes(self, probes: u32) -> Self {
        let cleared = self.0 & !(COUNTER_MASK << PROBES_SHIFT);
        Self(cleared | (((probes as u64) & COUNTER_MASK) << PROBES_SHIFT))
    }

    pub(crate) const fn with_successes(self, successes: u32) -> Self {
        let cleared = self.0 & !(COUNTER_MASK << SUCCESSES_SHIFT);
        Self(cleared | (((successes as u64) & COUNTER_MASK) << SUCCESSES_SHIFT))
    }
}

/// How generation `a` relates to generation `b` when both are kept to their low `bits` bits:
/// the one less than half the range ahead of the other is the newer (wrapping, as TCP sequence
/// numbers are compared).
pub(crate) fn generation_order(a: u64, b: u64, bits: u32) -> std::cmp::Ordering {
    let mask = (1u64 << bits) - 1;
    let ahead = a.wrapping_sub(b) & mask;
    if ahead == 0 {
        std::cmp::Ordering::Equal
    } else if ahead < 1 << (bits - 1) {
        std::cmp::Ordering::Greater
    } else {
        std::cmp::Ordering::Less
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_compare_across_the_wrap() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        assert_eq!(generation_order(5, 5, 8), Equal);
        assert_eq!(generation_order(6, 5, 8), Greater);
        assert_eq!(generation_order(5, 6, 8), Less);
        assert_eq!(generation_order(1, 255, 8), Greater);
        assert_eq!(generation_order(255, 1, 8), Less);
        assert_eq!(
            generation_order(0, GENERATION_MASK, GENERATION_BITS),
            Greater
        );
    }

    #[test]
    fn fields_round_trip() {
        for state in [State::Closed, State::Open, State::HalfOpen] {
            for mode in [
                Mode::Normal,
                Mode::ForcedOpen,
                Mode::Disabled,
                Mode::MetricsOnly,
            ] {
                let w = Word::new(state, mode, GENERATION_MASK)
                    .with_probes(1023)
                    .with_successes(511);
                assert_eq!(w.state(), state);
                assert_eq!(w.mode(), mode);
                assert_eq!(w.generation(), GENERATION_MASK);
                assert_eq!(w.next_generation(), 0);
                assert_eq!(w.probes(), 1023);
                assert_eq!(w.successes(), 511);
                assert_eq!(
                    w.is_closed_normal(),
                    state == State::Closed && mode == Mode::Normal
                );
                assert_eq!(w.with_probes(3).probes(), 3);
                assert_eq!(w.with_probes(3).successes(), 511);
            }
        }
    }
}
