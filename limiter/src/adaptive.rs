//! Following the upstream: [`Adaptive`] (pauses on 429s and used-up windows) and [`Aimd`]
//! (lowers the rate on 429s and recovers it on successes).

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tollway_core::headers::{HintSource, RateLimitHint};
use tollway_core::{Classifier, Classify, OutcomeKind};

use crate::clock::{LimiterClock, duration_nanos};
use crate::limiter::RateLimiter;
use crate::quota::Quota;

/// How a limiter adapts to what the upstream answers.
///
/// With it, every response that passes through a [`Limiter`](crate::Limiter) (or is handed to
/// [`RateLimiter::observe_response`](crate::RateLimiter::observe_response)) is read with
/// `tollway-core`'s [`Classifier`] and rate-limit header parsers:
///
/// - a rate limit (429, or whatever the classifier calls one) pauses **every** caller of the
///   limiter until its `Retry-After` (or [`default_pause`](Self::default_pause) without one),
///   capped at [`max_pause`](Self::max_pause); a 503 with `Retry-After` does the same;
/// - any response that says its window is used up (`X-RateLimit-Remaining: 0` with a reset, or
///   IETF `RateLimit: ..;r=0;t=N`) pauses until the reset;
/// - after a pause the bucket is empty: callers resume one at a time at the steady rate, in the
///   order they queued, not all at once;
/// - with [`aimd`](Self::aimd), a rate limit also lowers the rate, and successes raise it back
///   towards the configured one.
///
/// ```
/// use std::time::Duration;
/// use tollway_limiter::{Adaptive, Aimd};
///
/// let adaptive = Adaptive::new()
///     .default_pause(Duration::from_secs(2))
///     .max_pause(Duration::from_secs(60))
///     .aimd(Aimd::new());
/// # let _ = adaptive;
/// ```
#[derive(Debug, Clone)]
pub struct Adaptive {
    pub(crate) classifier: Classifier,
    pub(crate) default_pause: Duration,
    pub(crate) max_pause: Duration,
    pub(crate) aimd: Option<Aimd>,
}

impl Default for Adaptive {
    fn default() -> Self {
        Self::new()
    }
}

impl Adaptive {
    /// Pauses on rate limits (1 s without a hint, at most 5 minutes), no AIMD, the standard
    /// HTTP classifier.
    pub fn new() -> Self {
        Self {
            classifier: Classifier::default(),
            default_pause: Duration::from_secs(1),
            max_pause: Duration::from_secs(300),
            aimd: None,
        }
    }

    /// Classifies responses with `classifier` (for APIs that signal rate limits their own way).
    #[must_use]
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// The pause after a rate limit that carries no hint (default 1 s).
    #[must_use]
    pub fn default_pause(mut self, pause: Duration) -> Self {
        self.default_pause = pause;
        self
    }

    /// The longest pause any hint may order (default 5 minutes): protects against a
    /// `Retry-After` years away.
    #[must_use]
    pub fn max_pause(mut self, pause: Duration) -> Self {
        self.max_pause = pause;
        self
    }

    /// Also lowers the rate on rate limits and recovers it on successes.
    #[must_use]
    pub fn aimd(mut self, aimd: Aimd) -> Self {
        self.aimd = Some(aimd);
        self
    }
}

/// Additive increase, multiplicative decrease of the first quota's rate.
///
/// On a rate limit the rate is multiplied by [`decrease`](Self::decrease) (once per pause: the
/// other answers to requests already in flight do not count again); every success raises it so
/// that, while requests succeed, it regains [`recovery`](Self::recovery) × the configured rate
/// per second, up to the configured rate and never below [`floor`](Self::floor) × it. Within
/// 10% of the rate that last drew a rate limit, it climbs eight times slower: it probes the
/// server's limit gently instead of hitting it again at full speed. A client configured above
/// the server's real limit thus settles just under it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aimd {
    pub(crate) decrease: f64,
    pub(crate) recovery: f64,
    pub(crate) floor: f64,
}

impl Default for Aimd {
    fn default() -> Self {
        Self::new()
    }
}

impl Aimd {
    /// Halve on a rate limit, regain 5% of the configured rate per second of successes, never
    /// below 1% of it.
    pub const fn new() -> Self {
        Self {
            decrease: 0.5,
            recovery: 0.05,
            floor: 0.01,
        }
    }

    /// The factor applied to the rate on a rate limit, clamped to `0.01..=1.0`.
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

    /// The rate after a rate limit, in requests per second.
    pub(crate) fn decreased(&self, current: f64, configured: f64) -> f64 {
        (current * self.decrease).max(configured * self.floor)
    }

    /// The rate after one success, in requests per second; `limited_at` is the rate that
    /// drew the last rate limit.
    pub(crate) fn increased(&self, current: f64, configured: f64, limited_at: f64) -> f64 {
        let mut per_success = self.recovery * configured / current.max(f64::MIN_POSITIVE);
        if current >= 0.9 * limited_at {
            per_success /= 8.0;
        }
        (current + per_success).min(configured)
    }
}

/// Adaptation: what a response tells the limiter.
impl<C: LimiterClock, St: crate::store::Store<C>> RateLimiter<C, St> {
    /// Feeds a response to the limiter's [`Adaptive`] settings (the
    /// [`AdaptiveLimiter`](crate::AdaptiveLimiter) service does this for every response). Does
    /// nothing if the limiter was built without them.
    pub fn observe_response(&self, status: StatusCode, headers: &HeaderMap) {
        let Some(adaptive) = &self.shared.adaptive else {
            return;
        };
        let outcome = adaptive.classifier.classify_response(status, headers);
        let wall = || self.shared.clock.system_now();
        match outcome.kind() {
            OutcomeKind::RateLimited => {
                let pause = outcome
                    .retry_delay(wall())
                    .unwrap_or(adaptive.default_pause)
                    .min(adaptive.max_pause);
                self.pause(pause);
                self.aimd_decrease(pause);
            }
            OutcomeKind::Success => {
                if let Some(hint) = RateLimitHint::from_headers(headers)
                    .filter(|h| h.source() != HintSource::RetryAfter)
                {
                    self.pause(hint.delay_from(wall()).min(adaptive.max_pause));
                }
                self.aimd_increase();
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                if let Some(delay) = outcome.retry_delay(wall()) {
                    self.pause(delay.min(adaptive.max_pause));
                }
            }
            _ => {}
        }
    }

    fn aimd_decrease(&self, pause: Duration) {
        let shared = &*self.shared;
        let Some(aimd) = shared.adaptive.as_ref().and_then(|a| a.aimd) else {
            return;
        };
        let mut rates = shared.rates.lock();
        if let Some(quota) = rates.aimd.decrease(&aimd, shared.now(), pause) {
            shared.apply_quota(&mut rates, 0, quota);
            tracing::debug!(rate = rates.aimd.current(), "rate limiter backing off");
        }
    }

    fn aimd_increase(&self) {
        let shared = &*self.shared;
        let Some(aimd) = shared.adaptive.as_ref().and_then(|a| a.aimd) else {
            return;
        };
        let mut rates = shared.rates.lock();
        if let Some(quota) = rates.aimd.increase(&aimd) {
            shared.apply_quota(&mut rates, 0, quota);
        }
    }
}

/// AIMD's running state for one limiter: the first quota as configured (the ceiling), and the
/// rate it runs at now.
#[derive(Debug)]
pub(crate) struct AimdState {
    configured: Quota,
    current_per_second: f64,
    /// Rate limits seen before this time belong to the last decrease.
    decrease_guard_until: u64,
    /// The rate that drew the last rate limit (the increase probes gently near it).
    limited_at: f64,
}

impl AimdState {
    pub(crate) fn new(configured: Quota) -> Self {
        Self {
            configured,
            current_per_second: configured.per_second_f64(),
            decrease_guard_until: 0,
            limited_at: f64::INFINITY,
        }
    }

    /// The user set a new first quota: it is the new ceiling, and the rate starts there.
    pub(crate) fn reconfigure(&mut self, quota: Quota) {
        *self = Self::new(quota);
    }

    /// The rate now, in requests per second.
    pub(crate) fn current(&self) -> f64 {
        self.current_per_second
    }

    /// A rate limit at `now` that paused the limiter for `pause`: the first quota to run at
    /// next, or `None` if this rate limit belongs to the last decrease.
    pub(crate) fn decrease(&mut self, aimd: &Aimd, now: u64, pause: Duration) -> Option<Quota> {
        if now < self.decrease_guard_until {
            return None;
        }
        let configured = self.configured.per_second_f64();
        self.limited_at = self.current_per_second;
        let rate = aimd.decreased(self.current_per_second, configured);
        self.current_per_second = rate;
        let quota = self.at(rate);
        self.decrease_guard_until = now
            .saturating_add(duration_nanos(pause))
            .saturating_add(quota.interval_nanos());
        Some(quota)
    }

    /// A success: the first quota to run at next, or `None` if it runs at the ceiling.
    pub(crate) fn increase(&mut self, aimd: &Aimd) -> Option<Quota> {
        let configured = self.configured.per_second_f64();
        if self.current_per_second >= configured {
            return None;
        }
        let rate = aimd.increased(self.current_per_second, configured, self.limited_at);
        self.current_per_second = rate;
        Some(if rate >= configured {
            self.configured
        } else {
            self.at(rate)
        })
    }

    /// The configured quota's burst at `per_second`.
    fn at(&self, per_second: f64) -> Quota {
        let interval =
            Duration::try_from_secs_f64(1.0 / per_second).map_or(u64::MAX, duration_nanos);
        Quota::clamped(interval, self.configured.burst())
    }
}

fn clamp(value: f64, low: f64, high: f64) -> f64 {
    if value.is_nan() {
        high
    } else {
        value.clamp(low, high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Near the rate that drew the last 429, eight times slower.
        let near = aimd.increased(30.0, 60.0, 32.0) - 30.0;
        assert!((near - 0.1 / 8.0).abs() < 1e-9, "{near}");
        assert!(
            (aimd.increased(59.99, 60.0, 90.0) - 60.0).abs() < 1e-9,
            "capped"
        );
        assert_eq!(Aimd::new().decrease(f64::NAN).decrease, 1.0);
        assert_eq!(Aimd::new().recovery(7.0).recovery, 1.0);
        assert_eq!(Aimd::new().floor(0.0).floor, 0.0001);
    }
}
