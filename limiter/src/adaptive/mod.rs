//! Following the upstream: [`Adaptive`] (learns the upstream's stated limit, pauses when the
//! upstream contradicts the schedule) and [`Aimd`] (lowers the rate on 429s and recovers it on
//! successes).
//!
//! A client that paces evenly at the upstream's limit sees `X-RateLimit-Remaining: 0` (or IETF
//! `r=0`) on most answers: the window is full because the client uses all of it, and the next
//! request may go as soon as the window has room, which is exactly when the schedule lets it
//! go. Pausing until the reset there (a whole second, typically) would waste a tenth of the
//! allowance on every window. So an exhausted window pauses the limiter only when it
//! contradicts the schedule (see [`Adaptive`]).

mod aimd;
mod said;

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tollway_core::{Classifier, Classify, OutcomeKind};

use crate::clock::LimiterClock;
use crate::limiter::{RateLimiter, Rates};
use crate::quota::Quota;

pub use aimd::Aimd;
pub(crate) use aimd::AimdState;
use aimd::{clamp, quota_at};
use said::{Policy, Reading, Said, Window};

/// How a limiter adapts to what the upstream answers.
///
/// With it, every response that passes through a [`Limiter`](crate::Limiter) (or is handed to
/// [`RateLimiter::observe_response`](crate::RateLimiter::observe_response)) is read with
/// `tollway-core`'s [`Classifier`] and rate-limit header parsers:
///
/// - **the upstream's stated limit paces the limiter** ([`learn`](Self::learn), on by
///   default): the IETF `RateLimit-Policy` with the shortest window (`q` requests per `w`
///   seconds), else `X-RateLimit-Limit` over the longest `X-RateLimit-Reset` seen in seconds
///   (a window lasts at least as long as any reset it reports). The first quota then runs at
///   that rate less the [`margin`](Self::margin) (2%, room for jitter in delivery), keeping its
///   burst and its debt; a limit that changes (a new plan) is followed at once;
/// - a rate limit (429, or whatever the classifier calls one) pauses **every** caller of the
///   limiter until its `Retry-After` (or [`default_pause`](Self::default_pause) without one),
///   capped at [`max_pause`](Self::max_pause); a 503 with `Retry-After` does the same;
/// - a window the upstream reports as used up (`X-RateLimit-Remaining: 0` with a reset, or IETF
///   `RateLimit: ..;r=0;t=N`) pauses until its reset **only if it contradicts the schedule**:
///   if the schedule could send more than the window allows and the reset comes after the
///   next permit (a daily quota spent, a window whose limit is unknown), or if the schedule
///   could not have used it up (someone else shares the key). A window the schedule paces
///   within and can fill is the steady state of using the whole allowance: no pause;
/// - after a pause the bucket is empty: callers resume one at a time at the steady rate, in the
///   order they queued, not all at once;
/// - with [`aimd`](Self::aimd), a rate limit also lowers the rate, and successes raise it back.
///
/// ```
/// use std::time::Duration;
/// use tollway_limiter::{Adaptive, Aimd};
///
/// let adaptive = Adaptive::new()
///     .default_pause(Duration::from_secs(2))
///     .max_pause(Duration::from_secs(60))
///     .margin(0.03)
///     .aimd(Aimd::new());
/// # let _ = adaptive;
/// ```
#[derive(Debug, Clone)]
pub struct Adaptive {
    pub(crate) classifier: Classifier,
    pub(crate) default_pause: Duration,
    pub(crate) max_pause: Duration,
    pub(crate) aimd: Option<Aimd>,
    pub(crate) margin: f64,
    pub(crate) learn: bool,
}

impl Default for Adaptive {
    fn default() -> Self {
        Self::new()
    }
}

impl Adaptive {
    /// Learns the upstream's stated limit and paces 2% under it, pauses on rate limits (1 s
    /// without a hint, at most 5 minutes), no AIMD, the standard HTTP classifier.
    pub fn new() -> Self {
        Self {
            classifier: Classifier::default(),
            default_pause: Duration::from_secs(1),
            max_pause: Duration::from_secs(300),
            aimd: None,
            margin: 0.02,
            learn: true,
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
    /// `Retry-After` years away. A learned limit never paces slower than one request per this
    /// long either.
    #[must_use]
    pub fn max_pause(mut self, pause: Duration) -> Self {
        self.max_pause = pause;
        self
    }

    /// The share of a limit left unused, for jitter in delivery: requests leave evenly spaced
    /// but reach the upstream a little unevenly (default 0.02, clamped to `0.0..=0.5`).
    #[must_use]
    pub fn margin(mut self, share: f64) -> Self {
        self.margin = clamp(share, 0.0, 0.5);
        self
    }

    /// Whether the upstream's stated limit sets the first quota's rate (default `true`). Turn
    /// it off to keep a rate of your own (below the upstream's, say, to leave room for other
    /// clients of the key); a rate set with [`RateLimiter::set_rate`] holds until the upstream
    /// states a different limit.
    #[must_use]
    pub fn learn(mut self, yes: bool) -> Self {
        self.learn = yes;
        self
    }

    /// Also lowers the rate on rate limits and recovers it on successes.
    #[must_use]
    pub fn aimd(mut self, aimd: Aimd) -> Self {
        self.aimd = Some(aimd);
        self
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
        let wall = self.shared.clock.system_now();
        let said = Said::read(headers, wall);
        let refused = outcome.kind() == OutcomeKind::RateLimited;
        let unavailable = status == StatusCode::SERVICE_UNAVAILABLE;
        let (relearned, pause) = {
            let shared = &*self.shared;
            let mut rates = shared.rates.lock();
            let reading = said.against(&mut rates.aimd.learned, adaptive.max_pause);
            let relearned = adaptive.learn
                && reading
                    .policy
                    .is_some_and(|policy| self.learn(&mut rates, adaptive, policy));
            let pause = if refused {
                Some(outcome.retry_delay(wall).unwrap_or(adaptive.default_pause))
            } else if unavailable {
                outcome.retry_delay(wall)
            } else {
                if let Some(aimd) = adaptive.aimd {
                    let now = shared.now();
                    rates.aimd.let_through(now);
                    if outcome.kind() == OutcomeKind::Success
                        && let Some(quota) = rates.aimd.increase(&aimd, adaptive.margin, now)
                    {
                        shared.apply_quota(&mut rates, 0, quota);
                    }
                }
                self.contradiction(&rates, adaptive, &reading)
            };
            (relearned, pause)
        };
        if relearned {
            self.shared.wake_head();
        }
        if let Some(pause) = pause {
            let pause = pause.min(adaptive.max_pause);
            self.pause(pause);
            if refused {
                self.aimd_decrease(pause);
            }
        }
    }

    /// Paces by `policy` if it is new; whether it was.
    fn learn(&self, rates: &mut Rates, adaptive: &Adaptive, policy: Policy) -> bool {
        if rates.aimd.learned.applied == Some(policy) {
            return false;
        }
        rates.aimd.learned.applied = Some(policy);
        let limit = policy.per_second();
        let slowest = 1.0 / adaptive.max_pause.as_secs_f64().max(1e-9);
        let rate = (limit * (1.0 - adaptive.margin)).max(slowest);
        let quota = quota_at(rate, rates.quotas[0].burst());
        self.shared.apply_quota(rates, 0, quota);
        rates.aimd.stated(quota, limit);
        tracing::debug!(
            quota = policy.quota,
            window = ?policy.window,
            rate = quota.per_second_f64(),
            "rate limiter follows the upstream's stated limit"
        );
        true
    }

    /// The pause a response's windows order: until the latest reset among the used-up windows
    /// that contradict the schedule.
    fn contradiction(
        &self,
        rates: &Rates,
        adaptive: &Adaptive,
        reading: &Reading,
    ) -> Option<Duration> {
        let first = rates.quotas[0];
        let next_permit = || {
            self.peek()
                .err()
                .map_or(Duration::ZERO, |r| r.retry_after())
        };
        reading
            .windows
            .iter()
            .filter(|w| w.remaining == 0)
            .filter_map(|w| Some((w, w.reset.filter(|r| !r.is_zero())?)))
            .filter(|(w, _)| !steady_state(first, adaptive.margin, w))
            .map(|(_, reset)| reset)
            .max()
            .filter(|&reset| reset > next_permit())
    }

    fn aimd_decrease(&self, pause: Duration) {
        let shared = &*self.shared;
        let Some(adaptive) = shared.adaptive.as_ref() else {
            return;
        };
        let Some(aimd) = adaptive.aimd else {
            return;
        };
        let mut rates = shared.rates.lock();
        if let Some(quota) = rates
            .aimd
            .decrease(&aimd, adaptive.margin, shared.now(), pause)
        {
            shared.apply_quota(&mut rates, 0, quota);
            tracing::debug!(rate = rates.aimd.current(), "rate limiter backing off");
        }
    }
}

/// Whether a used-up `window` is what pacing at `first` leads to: the schedule never sends
/// more than the window allows, yet can fill it (with `margin` of the window's length to spare
/// for jitter, and one request more), and the window resets within its own length (a second
/// more for rounding): a reset further away says the window is not what its policy states.
fn steady_state(first: Quota, margin: f64, window: &Window) -> bool {
    let Some(policy) = window.policy else {
        return false;
    };
    let within_its_length = window
        .reset
        .is_some_and(|reset| reset <= policy.window.saturating_add(Duration::from_secs(1)));
    if !within_its_length {
        return false;
    }
    let interval = first.interval().as_secs_f64();
    let length = policy.window.as_secs_f64();
    // The most requests the schedule admits in any span of `span` seconds.
    let most = |span: f64| (span / interval).floor() + f64::from(first.burst());
    let quota = policy.quota as f64;
    most(length) <= quota && most(length * (1.0 + margin)) + 1.0 >= quota
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(quota: u64, secs: u64) -> Window {
        Window {
            policy: Some(Policy {
                quota,
                window: Duration::from_secs(secs),
            }),
            remaining: 0,
            reset: Some(Duration::from_secs(1)),
        }
    }

    #[test]
    fn used_up_windows_the_schedule_fills_are_the_steady_state() {
        let paced = |limit: f64| quota_at(limit * 0.98, 1);
        // 11 per second, paced 2% under: a full window is expected.
        assert!(steady_state(paced(11.0), 0.02, &window(11, 1)));
        assert!(steady_state(paced(100.0), 0.02, &window(100, 1)));
        assert!(steady_state(paced(2.0), 0.02, &window(120, 60)));
        // Exactly at the limit still never exceeds it (intervals round up).
        assert!(steady_state(
            Quota::per_second(11).burst(1),
            0.0,
            &window(11, 1)
        ));
        // Faster than the window allows: a full window means stop.
        assert!(!steady_state(paced(22.0), 0.02, &window(11, 1)));
        // A burst can exceed it too.
        assert!(!steady_state(quota_at(10.78, 5), 0.02, &window(11, 1)));
        // Far slower: the schedule could not have used it up, someone else did.
        assert!(!steady_state(paced(5.0), 0.02, &window(11, 1)));
        // A daily quota is not what the per-second schedule paces within.
        assert!(!steady_state(paced(11.0), 0.02, &window(1000, 86_400)));
        // A reset far beyond the window's length: the policy does not describe this window.
        let far = Window {
            reset: Some(Duration::from_secs(3600)),
            ..window(11, 1)
        };
        assert!(!steady_state(paced(11.0), 0.02, &far));
        // No stated limit: nothing to compare with.
        let unknown = Window {
            policy: None,
            ..window(11, 1)
        };
        assert!(!steady_state(paced(11.0), 0.02, &unknown));
    }
}
