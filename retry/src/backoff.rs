//! Exponential backoff with jitter.
//!
//! The delay before retry `n` (`n = 0` for the first retry) grows from `base` as `base * 2^n`
//! and is capped at `cap` *before* jitter is applied, so jitter never vanishes at the cap (tower's
//! additive jitter does). The [`Jitter`] choices follow AWS's "Exponential Backoff And Jitter"
//! study: no jitter makes synchronised clients retry in waves; full jitter does the least work.
//!
//! ```
//! use std::time::Duration;
//! use tollway_retry::backoff::{Backoff, BackoffState, Jitter};
//! use tollway_retry::JitterRng;
//!
//! let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2))
//!     .with_jitter(Jitter::None);
//! let rng = JitterRng::seeded(1);
//! let mut state = BackoffState::default();
//! let delays: Vec<_> = (0..6).map(|_| backoff.next_delay(&mut state, &rng)).collect();
//! assert_eq!(delays[0], Duration::from_millis(100));
//! assert_eq!(delays[4], Duration::from_millis(1600));
//! assert_eq!(delays[5], Duration::from_secs(2)); // capped
//!
//! // Full jitter: uniform in [0, min(cap, base * 2^n)).
//! let full = backoff.with_jitter(Jitter::Full);
//! let mut state = BackoffState::default();
//! assert!(full.next_delay(&mut state, &rng) < Duration::from_millis(100));
//! ```

use std::time::Duration;

use tollway_core::JitterRng;

/// How the exponential delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// `min(cap, base * 2^n)`: every client that failed together retries together.
    None,
    /// Uniform in `[0, min(cap, base * 2^n))`: the least total work in AWS's study.
    #[default]
    Full,
    /// Half the capped delay plus a uniform draw over the other half: never retries very early.
    Equal,
    /// AWS's decorrelated jitter, exactly as published: `min(cap, uniform(base, 3 * previous))`.
    /// Kept for fidelity; its delays bunch at the cap (with a 100 ms base and a 5 s cap, a fifth
    /// of 8th retries land exactly on it). Prefer [`DecorrelatedV2`](Self::DecorrelatedV2).
    Decorrelated,
    /// Polly's "V2" decorrelated jitter (George Polevoy's formula): a smoothly spread,
    /// monotonically growing median with no retries bunched together. Once the median reaches the
    /// cap the formula stops growing and keeps drawing below the cap, so the delays do not pile
    /// up on the cap either.
    DecorrelatedV2,
}

/// An exponential backoff: base delay, cap and jitter.
///
/// See the [module docs](self) for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

/// Per-request progress through a [`Backoff`]: how many delays were drawn and what the
/// decorrelated variants remember of the previous one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BackoffState {
    retries: u32,
    previous: f64,
}

impl BackoffState {
    /// How many delays were drawn so far.
    pub const fn retries(&self) -> u32 {
        self.retries
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s, full jitter.
    fn default() -> Self {
        Self::exponential(Duration::from_millis(100), Duration::from_secs(10))
    }
}

/// Polly's smoothing factor and median scale for the V2 formula.
const V2_P_FACTOR: f64 = 4.0;
const V2_SCALE: f64 = 1.0 / 1.4;
/// Redraws before a V2 delay above the cap falls back to a uniform draw below it.
const V2_REDRAWS: u32 = 8;

impl Backoff {
    /// `base * 2^n` capped at `cap`, with [`Jitter::Full`].
    pub const fn exponential(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            jitter: Jitter::Full,
        }
    }

    /// The same backoff with another jitter.
    #[must_use]
    pub const fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The base delay.
    pub const fn base(&self) -> Duration {
        self.base
    }

    /// The longest delay.
    pub const fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter.
    pub const fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// `min(cap, base * 2^n)`: the delay before jitter.
    pub fn envelope(&self, n: u32) -> Duration {
        1u32.checked_shl(n)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The delay before the next retry; advances `state`.
    pub fn next_delay(&self, state: &mut BackoffState, rng: &JitterRng) -> Duration {
        let n = state.retries;
        state.retries = state.retries.saturating_add(1);
        match self.jitter {
            Jitter::None => self.envelope(n),
            Jitter::Full => scale(self.envelope(n), rng.unit()),
            Jitter::Equal => {
                let half = self.envelope(n) / 2;
                half + scale(half, rng.unit())
            }
            Jitter::Decorrelated => self.aws_decorrelated(state, rng),
            Jitter::DecorrelatedV2 => self.decorrelated_v2(n, state, rng),
        }
    }

    fn aws_decorrelated(&self, state: &mut BackoffState, rng: &JitterRng) -> Duration {
        let base = self.base.as_secs_f64();
        let previous = if state.retries == 1 {
            base
        } else {
            state.previous
        };
        let high = (previous * 3.0).max(base);
        let drawn = base + (high - base) * rng.unit();
        let delay = seconds(drawn).min(self.cap);
        state.previous = delay.as_secs_f64();
        delay
    }

    fn decorrelated_v2(&self, n: u32, state: &mut BackoffState, rng: &JitterRng) -> Duration {
        let base = self.base.as_secs_f64();
        let cap = self.cap.as_secs_f64();
        if base <= 0.0 || cap <= 0.0 {
            return Duration::ZERO;
        }
        // The last attempt whose median (about base * 2^n) is still under the cap: from there on
        // the formula is held there instead of growing into the cap.
        let held = (cap / base).log2().floor().max(0.0);
        let attempt = f64::from(n);
        let saturated = attempt > held;
        let t_attempt = if saturated { held } else { attempt };
        for _ in 0..V2_REDRAWS {
            let previous = if saturated {
                // Decorrelate from a fresh draw one step back, since the held step does not move.
                if held >= 1.0 {
                    v2_formula(held - 1.0 + rng.unit())
                } else {
                    0.0
                }
            } else {
                state.previous
            };
            let next = v2_formula(t_attempt + rng.unit());
            let delay = (next - previous).max(0.0) * V2_SCALE * base;
            if delay <= cap {
                state.previous = next;
                return seconds(delay);
            }
        }
        state.previous = v2_formula(t_attempt + 1.0);
        scale(self.cap, rng.unit())
    }
}

fn v2_formula(t: f64) -> f64 {
    2f64.powf(t) * (V2_P_FACTOR * t).sqrt().tanh()
}

/// `d * fraction` for a fraction in `[0, 1)`, never more than `d` and never panicking.
fn scale(d: Duration, fraction: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * fraction)
        .unwrap_or(d)
        .min(d)
}

/// `secs` as a duration; absurd values saturate instead of panicking.
fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    fn draws(jitter: Jitter, retries: usize, runs: usize, seed: u64) -> Vec<Vec<Duration>> {
        let backoff = Backoff::exponential(BASE, CAP).with_jitter(jitter);
        let rng = JitterRng::seeded(seed);
        (0..runs)
            .map(|_| {
                let mut state = BackoffState::default();
                (0..retries)
                    .map(|_| backoff.next_delay(&mut state, &rng))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn no_jitter_doubles_then_caps() {
        let run = &draws(Jitter::None, 10, 1, 0)[0];
        let ms: Vec<u128> = run.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]);
        let huge = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(huge.envelope(200), Duration::from_secs(60));
    }

    #[test]
    fn full_and_equal_stay_inside_the_capped_envelope() {
        let backoff = Backoff::exponential(BASE, CAP);
        for jitter in [Jitter::Full, Jitter::Equal] {
            for run in draws(jitter, 12, 200, 3) {
                for (n, delay) in run.iter().enumerate() {
                    let envelope = backoff.envelope(u32::try_from(n).unwrap());
                    assert!(*delay <= envelope, "{jitter:?} {n}: {delay:?}");
                    if jitter == Jitter::Equal {
                        assert!(*delay >= envelope / 2, "{jitter:?} {n}: {delay:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn jitter_does_not_vanish_at_the_cap() {
        // Cap applied before jitter: late full-jitter delays spread over [0, cap).
        let late: Vec<Duration> = draws(Jitter::Full, 12, 500, 5)
            .into_iter()
            .map(|run| run[11])
            .collect();
        let below_half = late.iter().filter(|d| **d < CAP / 2).count();
        assert!(
            (150..350).contains(&below_half),
            "{below_half} of 500 below cap/2"
        );
        assert!(late.iter().all(|d| *d < CAP));
    }

    fn share_at_cap(jitter: Jitter) -> f64 {
        let runs = draws(jitter, 8, 2_000, 11);
        let at_cap = runs
            .iter()
            .filter(|run| run[7] >= CAP.mul_f64(0.999))
            .count();
        at_cap as f64 / runs.len() as f64
    }

    #[test]
    fn aws_decorrelated_bunches_at_the_cap_and_v2_does_not() {
        let aws = share_at_cap(Jitter::Decorrelated);
        let v2 = share_at_cap(Jitter::DecorrelatedV2);
        assert!(
            aws > 0.2,
            "AWS decorrelated: {aws} of 8th retries on the cap"
        );
        assert!(v2 < 0.01, "V2: {v2} of 8th retries on the cap");
        for run in draws(Jitter::DecorrelatedV2, 20, 300, 13) {
            assert!(run.iter().all(|d| *d <= CAP), "{run:?}");
        }
        for run in draws(Jitter::Decorrelated, 20, 300, 13) {
            assert!(run.iter().all(|d| *d >= BASE && *d <= CAP), "{run:?}");
        }
    }

    #[test]
    fn v2_median_doubles_per_retry() {
        // Polly's formula: the first retry's median is about `base`, then it doubles from the
        // second retry on.
        let runs = draws(Jitter::DecorrelatedV2, 5, 2_001, 17);
        for (n, expected_ms) in [(0usize, 100.0), (2, 200.0), (3, 400.0), (4, 800.0)] {
            let mut column: Vec<Duration> = runs.iter().map(|run| run[n]).collect();
            column.sort();
            let median = column[column.len() / 2].as_secs_f64() * 1000.0;
            assert!(
                (expected_ms * 0.6..expected_ms * 1.6).contains(&median),
                "retry {n}: median {median} ms"
            );
        }
    }

    #[test]
    fn seeded_draws_are_reproducible() {
        assert_eq!(
            draws(Jitter::DecorrelatedV2, 10, 3, 42),
            draws(Jitter::DecorrelatedV2, 10, 3, 42)
        );
        assert_ne!(
            draws(Jitter::Full, 10, 3, 42),
            draws(Jitter::Full, 10, 3, 43)
        );
    }

    proptest::proptest! {
        #[test]
        fn every_delay_stays_under_the_cap(
            base_ms in 0u64..100_000,
            cap_ms in 0u64..600_000,
            seed in proptest::prelude::any::<u64>(),
            jitter in proptest::sample::select(vec![
                Jitter::None, Jitter::Full, Jitter::Equal, Jitter::Decorrelated,
                Jitter::DecorrelatedV2,
            ]),
        ) {
            let cap = Duration::from_millis(cap_ms);
            let backoff = Backoff::exponential(Duration::from_millis(base_ms), cap)
                .with_jitter(jitter);
            let rng = JitterRng::seeded(seed);
            let mut state = BackoffState::default();
            for _ in 0..70 {
                let delay = backoff.next_delay(&mut state, &rng);
                proptest::prop_assert!(delay <= cap, "{delay:?} > {cap:?}");
            }
        }
    }

    #[test]
    fn absurd_durations_do_not_panic() {
        let rng = JitterRng::seeded(9);
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
            Jitter::DecorrelatedV2,
        ] {
            let backoff = Backoff::exponential(Duration::MAX, Duration::MAX).with_jitter(jitter);
            let mut state = BackoffState::default();
            for _ in 0..100 {
                backoff.next_delay(&mut state, &rng);
            }
        }
    }

    #[test]
    fn zero_base_means_no_wait() {
        let backoff = Backoff::exponential(Duration::ZERO, CAP);
        let rng = JitterRng::seeded(0);
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
            Jitter::DecorrelatedV2,
        ] {
            let mut state = BackoffState::default();
            let b = backoff.with_jitter(jitter);
            assert_eq!(b.next_delay(&mut state, &rng), Duration::ZERO, "{jitter:?}");
        }
    }
}
