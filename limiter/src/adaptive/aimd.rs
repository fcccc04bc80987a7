//! [`Aimd`]: lowering the rate on rate limits and recovering it on successes, and the running
//! state every adaptive limiter keeps ([`AimdState`]).

use std::collections::VecDeque;
use std::time::Duration;

use crate::clock::duration_nanos;
use crate::quota::Quota;

use super::said::Learned;

/// Additive increase, multiplicative decrease of the first quota's rate, for upstreams that do
/// not state their limit.
///
/// On a rate limit the limiter measures what the upstream let through in the second before
/// it: if that is clearly less than the rate it was sending at, that count **is** the
/// upstream's limit, and the rate drops to just under it (less the
/// [margin](crate::Adaptive::margin)) at once. Otherwise the rate is multiplied by
/// [`decrease`](Self::decrease). Either way it happens once per pause: the answers to
/// requests already in flight do not count again.
///
/// Every success raises the rate so that, while requests succeed, it regains
/// [`recovery`](Self::recovery) × the configured rate per second, up to the configured rate and
/// never below [`floor`](Self::floor) × it. Within 10% of the upstream's limit it climbs eight
/// times slower, and it stays just under a limit it measured for [`hold`](Self::hold) before
/// it probes above it again (each probe that finds the limit unchanged doubles the next hold,
/// up to eight times). A client configured above the upstream's real limit thus settles just
/// under it after its first rate limit, and draws another only once per hold.
///
/// An upstream that states its limit (`RateLimit-Policy`, `X-RateLimit-Limit`) is paced from
/// that instead ([`Adaptive::learn`](crate::Adaptive::learn)); AIMD then only backs off from
/// the limit it stated, and never probes above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aimd {
    pub(crate) decrease: f64,
    pub(crate) recovery: f64,
    pub(crate) floor: f64,
    pub(crate) hold: Duration,
}

impl Default for Aimd {
    fn default() -> Self {
        Self::new()
    }
}

impl Aimd {
    /// Halve on a rate limit of unknown cause, regain 5% of the configured rate per second of
    /// successes, never below 1% of it, and probe above a measured limit every 30 s.
    pub const fn new() -> Self {
        Self {
            decrease: 0.5,
            recovery: 0.05,
            floor: 0.01,
            hold: Duration::from_secs(30),
        }
    }

    /// The factor applied to the rate on a rate limit whose cause is unknown, clamped to
    /// `0.01..=1.0`.
    #[must_use]
    pub fn decrease(mut self, factor: f64) -> Self {
        self.decrease = clamp(factor, 0.01, 1.0);
        self
    }

    /// The share of the configured rate regained per second of successes, clamped to
    /// `0.0..=1.0`.
    #[must_use]
    pub fn recovery(mut self, share: f64) -> Self {
        self.recovery = clamp(share, 0.0, 1.0);
        self
    }

    /// The lowest rate, as a share of the configured one, clamped to `0.0001..=1.0`.
    #[must_use]
    pub fn floor(mut self, share: f64) -> Self {
        self.floor = clamp(share, 0.0001, 1.0);
        self
    }

    /// How long the rate stays just under a limit it measured before it probes above it again
    /// (default 30 s; doubled after each probe that finds the limit unchanged, up to 8×). Each
    /// such probe costs one rate limit and its pause.
    #[must_use]
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// The rate after a rate limit of unknown cause, in requests per second.
    pub(crate) fn decreased(&self, current: f64, configured: f64) -> f64 {
        (current * self.decrease).max(configured * self.floor)
    }

    /// The rate after one success, in requests per second; below `gentle_from` it climbs at
    /// full speed, above it eight times slower.
    pub(crate) fn increased(&self, current: f64, configured: f64, gentle_from: f64) -> f64 {
        let mut per_success = self.recovery * configured / current.max(f64::MIN_POSITIVE);
        if current >= gentle_from {
            per_success /= 8.0;
        }
        (current + per_success).min(configured)
    }
}

/// The most answers remembered for measuring the upstream's limit: above this many a second,
/// the measure is not trusted (the rate halves instead).
const MEASURED_MAX: usize = 4096;

/// A probe that finds the limit unchanged doubles the hold before the next one, up to this
/// many times (30 s, 1, 2, then 4 minutes by default).
const MAX_HOLD_DOUBLINGS: u32 = 3;

/// One second, in nanoseconds: the span the upstream's limit is measured over.
const SECOND: u64 = 1_000_000_000;

/// The running state of one adaptive limiter: AIMD's rate, the upstream's limit as measured
/// or stated, and what was learned of its policy.
#[derive(Debug)]
pub(crate) struct AimdState {
    /// The first quota as configured or learned: the ceiling.
    configured: Quota,
    current_per_second: f64,
    /// Rate limits seen before this time belong to the last decrease.
    decrease_guard_until: u64,
    /// The rate that drew the last rate limit whose cause was unknown.
    limited_at: f64,
    /// The upstream's limit in requests per second, as it stated it or as a rate limit
    /// revealed it.
    limit: Option<f64>,
    /// No probing above a measured limit before this time.
    hold_until: u64,
    /// Probes in a row that found the limit where it was (each doubles the next hold).
    probes_failed: u32,
    /// When the upstream let requests through, over the last second (AIMD only).
    let_through: VecDeque<u64>,
    /// What was learned of the upstream's policy.
    pub(crate) learned: Learned,
}

impl AimdState {
    pub(crate) fn new(configured: Quota) -> Self {
        Self {
            configured,
            current_per_second: configured.per_second_f64(),
            decrease_guard_until: 0,
            limited_at: f64::INFINITY,
            limit: None,
            hold_until: 0,
            probes_failed: 0,
            let_through: VecDeque::new(),
            learned: Learned::default(),
        }
    }

    /// The user set a new first quota: it is the new ceiling, and the rate starts there. What
    /// was learned of the upstream stays.
    pub(crate) fn reconfigure(&mut self, quota: Quota) {
        let learned = std::mem::take(&mut self.learned);
        *self = Self::new(quota);
        self.learned = learned;
    }

    /// The upstream stated its limit, `limit` requests per second, and the limiter now paces at
    /// `quota`: the new ceiling, which AIMD never probes above.
    pub(crate) fn stated(&mut self, quota: Quota, limit: f64) {
        self.configured = quota;
        self.current_per_second = quota.per_second_f64();
        self.limit = Some(limit);
        self.limited_at = f64::INFINITY;
        self.hold_until = 0;
        self.probes_failed = 0;
    }

    /// The rate now, in requests per second.
    pub(crate) fn current(&self) -> f64 {
        self.current_per_second
    }

    /// The upstream let a request through at `now`.
    pub(crate) fn let_through(&mut self, now: u64) {
        self.forget_before(now);
        if self.let_through.len() == MEASURED_MAX {
            self.let_through.pop_front();
        }
        self.let_through.push_back(now);
    }

    /// What the upstream let through in the second up to `now`, if that can be trusted.
    fn measured(&mut self, now: u64) -> Option<f64> {
        self.forget_before(now);
        let n = self.let_through.len();
        (n > 0 && n < MEASURED_MAX).then_some(n as f64)
    }

    fn forget_before(&mut self, now: u64) {
        let Some(since) = now.checked_sub(SECOND) else {
            return;
        };
        while self.let_through.front().is_some_and(|&t| t <= since) {
            self.let_through.pop_front();
        }
    }

    /// A rate limit at `now` that paused the limiter for `pause`: the first quota to run at
    /// next, or `None` if this rate limit belongs to the last decrease. `margin` is the share
    /// kept under a limit.
    pub(crate) fn decrease(
        &mut self,
        aimd: &Aimd,
        margin: f64,
        now: u64,
        pause: Duration,
    ) -> Option<Quota> {
        if now < self.decrease_guard_until {
            return None;
        }
        let configured = self.configured.per_second_f64();
        let current = self.current_per_second;
        let under = |limit: f64| limit * (1.0 - margin);
        let probing = self.limit.is_some_and(|l| current > under(l) * 1.001);
        let rate = match (self.measured(now), self.limit) {
            // The upstream let through clearly less than was sent: that is its limit.
            (Some(measured), _) if measured < 0.9 * current => {
                self.limit = Some(measured);
                self.probes_failed = 0;
                under(measured)
            }
            // Refused at the limit it knew (not probing): the limit is lower than it thought.
            (Some(measured), Some(limit)) if !probing => {
                let limit = limit.min(measured);
                self.limit = Some(limit);
                under(limit)
            }
            // A probe above the known limit failed: back under it, and probe half as often.
            (_, Some(limit)) => {
                self.probes_failed = (self.probes_failed + 1).min(MAX_HOLD_DOUBLINGS);
                under(limit)
            }
            (_, None) => {
                self.limited_at = current;
                aimd.decreased(current, configured)
            }
        };
        let rate = rate
            .min(current)
            .max(configured * aimd.floor)
            .min(configured);
        self.current_per_second = rate;
        let quota = self.at(rate);
        let after_pause = now.saturating_add(duration_nanos(pause));
        self.decrease_guard_until = after_pause.saturating_add(quota.interval_nanos());
        let hold = aimd.hold.saturating_mul(1 << self.probes_failed);
        self.hold_until = after_pause.saturating_add(duration_nanos(hold));
        Some(quota)
    }

    /// A success at `now`: the first quota to run at next, or `None` if the rate stays.
    pub(crate) fn increase(&mut self, aimd: &Aimd, margin: f64, now: u64) -> Option<Quota> {
        let configured = self.configured.per_second_f64();
        let current = self.current_per_second;
        if current >= configured {
            return None;
        }
        let (gentle_from, most) = match self.limit {
            Some(limit) => {
                let under = limit * (1.0 - margin);
                let most = if now < self.hold_until {
                    under
                } else {
                    configured
                };
                (0.9 * under, most)
            }
            None => (0.9 * self.limited_at, configured),
        };
        if current >= most {
            return None;
        }
        let rate = aimd.increased(current, configured, gentle_from).min(most);
        self.current_per_second = rate;
        Some(if rate >= configured {
            self.configured
        } else {
            self.at(rate)
        })
    }

    /// The configured quota's burst at `per_second`.
    fn at(&self, per_second: f64) -> Quota {
        quota_at(per_second, self.configured.burst())
    }
}

/// A quota of `per_second` with `burst` (any number gives a valid quota: the interval is
/// clamped).
pub(crate) fn quota_at(per_second: f64, burst: u32) -> Quota {
    let interval = Duration::try_from_secs_f64(1.0 / per_second).map_or(u64::MAX, duration_nanos);
    Quota::clamped(interval, burst)
}

pub(crate) fn clamp(value: f64, low: f64, high: f64) -> f64 {
    if value.is_nan() {
        high
    } else {
        value.clamp(low, high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn aimd_steps() {
        let aimd = Aimd::new();
        assert!((aimd.decreased(60.0, 60.0) - 30.0).abs() < 1e-9);
        assert!((aimd.decreased(0.5, 60.0) - 0.6).abs() < 1e-9, "floor");
        // 30 successes at 30/s (one second) regain 5% of 60: 3 req/s, roughly.
        let mut rate = 30.0;
        for _ in 0..30 {
            rate = aimd.increased(rate, 60.0, 60.0);
        }
        assert!((32.8..33.2).contains(&rate), "{rate}");
        // Near the limit, eight times slower.
        let near = aimd.increased(30.0, 60.0, 27.0) - 30.0;
        assert!((near - 0.1 / 8.0).abs() < 1e-9, "{near}");
        assert!(
            (aimd.increased(59.99, 60.0, 90.0) - 60.0).abs() < 1e-9,
            "capped"
        );
        assert_eq!(Aimd::new().decrease(f64::NAN).decrease, 1.0);
        assert_eq!(Aimd::new().recovery(7.0).recovery, 1.0);
        assert_eq!(Aimd::new().floor(0.0).floor, 0.0001);
    }

    fn state(per_second: u32) -> AimdState {
        AimdState::new(Quota::per_second(per_second).burst(1))
    }

    #[test]
    fn a_rate_limit_reveals_the_limit_the_upstream_let_through() {
        let aimd = Aimd::new();
        let mut state = state(33);
        // 11 let through in the first third of a second, then a refusal.
        for k in 0..11 {
            state.let_through(k * 30 * MS);
        }
        let quota = state.decrease(&aimd, 0.02, 333 * MS, Duration::from_secs(1));
        let rate = quota.unwrap().per_second_f64();
        assert!((rate - 11.0 * 0.98).abs() < 0.01, "{rate}");
        // The answers to requests in flight belong to that decrease.
        assert!(
            state
                .decrease(&aimd, 0.02, 400 * MS, Duration::from_secs(1))
                .is_none()
        );
        // Successes do not climb above the limit during the hold...
        let mut now = 2_000 * MS;
        while now < 20_000 * MS {
            state.let_through(now);
            assert!(state.increase(&aimd, 0.02, now).is_none(), "at {now}");
            now += 93 * MS;
        }
        // ... and probe gently after it.
        let later = 1_400 * MS + 30_000 * MS;
        let probe = state.increase(&aimd, 0.02, later).unwrap().per_second_f64();
        assert!(probe > rate && probe < rate + 0.05, "{probe}");
        // The probe fails: back under the limit, without halving.
        let back = state
            .decrease(&aimd, 0.02, later + 500 * MS, Duration::from_secs(1))
            .unwrap()
            .per_second_f64();
        assert!((back - rate).abs() < 0.01, "{back}");
    }

    #[test]
    fn a_rate_limit_of_unknown_cause_halves() {
        let aimd = Aimd::new();
        let mut state = state(30);
        // Everything sent in the last second got through: the limit is not per second.
        for k in 0..30 {
            state.let_through(k * 33 * MS);
        }
        let rate = state
            .decrease(&aimd, 0.02, 1_000 * MS, Duration::from_secs(7))
            .unwrap()
            .per_second_f64();
        assert!((rate - 15.0).abs() < 0.01, "{rate}");
        // Nothing let through at all: halves too.
        let mut state = AimdState::new(Quota::per_second(30).burst(1));
        let rate = state
            .decrease(&aimd, 0.02, 5 * MS, Duration::from_secs(1))
            .unwrap()
            .per_second_f64();
        assert!((rate - 15.0).abs() < 0.01, "{rate}");
    }

    #[test]
    fn refused_at_a_stated_limit_believes_the_lower_count() {
        let aimd = Aimd::new();
        let mut state = state(100);
        state.stated(quota_at(10.78, 1), 11.0);
        for k in 0..10 {
            state.let_through(k * 93 * MS);
        }
        let rate = state
            .decrease(&aimd, 0.02, 950 * MS, Duration::from_secs(1))
            .unwrap()
            .per_second_f64();
        assert!((rate - 9.8).abs() < 0.01, "{rate}");
        // Never above what it stated, hold or not.
        for k in 0..2_000 {
            state.increase(&aimd, 0.02, 60_000 * MS + k * MS);
        }
        assert!(state.current() <= 10.78 + 1e-6, "{}", state.current());
    }

    #[test]
    fn the_measure_stays_bounded() {
        let mut state = state(1_000_000);
        for k in 0..100_000 {
            state.let_through(k);
        }
        assert_eq!(state.let_through.len(), MEASURED_MAX);
        assert_eq!(state.measured(100_000), None, "too many to trust");
        assert_eq!(state.measured(100_000 + 2 * SECOND), None, "all forgotten");
        assert!(state.let_through.is_empty());
    }

    #[test]
    fn absurd_rates_make_valid_quotas() {
        for per_second in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-30, 1e30] {
            let quota = quota_at(per_second, 1);
            assert!(quota.interval() > Duration::ZERO, "{per_second}");
        }
    }
}
