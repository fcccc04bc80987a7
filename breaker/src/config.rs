//! What trips the breaker, how long it stays open and how it probes: [`BreakerConfig`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tollway_core::{Classifier, Classify, JitterRng, Outcome};

use crate::error::ConfigError;
use crate::event::StateChange;

/// The largest count window, in calls.
pub const MAX_COUNT_WINDOW: u32 = 1 << 16;
/// The largest time window, in seconds.
pub const MAX_TIME_WINDOW_SECS: u32 = 3_600;
/// The largest number of concurrent half-open probes (and of probe successes to close).
pub const MAX_PROBES: u32 = 1_023;

pub(crate) type FailurePredicate = dyn Fn(&Outcome) -> bool + Send + Sync;
pub(crate) type StateCallback = dyn Fn(&StateChange) + Send + Sync;

/// Which recent calls the failure rate and slow-call rate are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureWindow {
    /// The last `n` calls (four bytes a call; lock-free).
    Count(u32),
    /// The calls of the last `secs` seconds: each counts for at least `secs` seconds and at most
    /// 1/64 longer (65 slices, fixed memory whatever the traffic; a short lock per call).
    Time(u32),
}

/// How long the breaker stays open after a trip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpenDuration {
    /// Always the same.
    Fixed(Duration),
    /// `base`, doubled on each trip that follows a failed probe without the breaker closing in
    /// between, at most `max`, then shortened by up to `jitter` (a fraction in `0.0..=1.0`) at
    /// random so that many clients do not probe at once.
    Exponential {
        /// The first open duration.
        base: Duration,
        /// The cap.
        max: Duration,
        /// The largest fraction taken off at random.
        jitter: f64,
    },
}

impl OpenDuration {
    /// A fixed open duration.
    pub const fn fixed(duration: Duration) -> Self {
        Self::Fixed(duration)
    }

    /// An open duration that doubles from `base` up to `max` on repeated trips, with 10% jitter.
    pub const fn exponential(base: Duration, max: Duration) -> Self {
        Self::Exponential {
            base,
            max,
            jitter: 0.1,
        }
    }

    /// The same, with `jitter` (a fraction in `0.0..=1.0`) instead of 10%; no effect on
    /// [`Fixed`](Self::Fixed).
    #[must_use]
    pub const fn with_jitter(self, jitter: f64) -> Self {
        match self {
            Self::Fixed(d) => Self::Fixed(d),
            Self::Exponential { base, max, .. } => Self::Exponential { base, max, jitter },
        }
    }

    /// The shortest open duration (the first trip's, before jitter).
    pub const fn base(&self) -> Duration {
        match *self {
            Self::Fixed(d) | Self::Exponential { base: d, .. } => d,
        }
    }

    /// The longest open duration.
    pub const fn max(&self) -> Duration {
        match *self {
            Self::Fixed(d) | Self::Exponential { max: d, .. } => d,
        }
    }

    /// The open duration for the `trip`-th consecutive trip (1-based), before jitter.
    pub fn nominal(&self, trip: u32) -> Duration {
        match *self {
            Self::Fixed(d) => d,
            Self::Exponential { base, max, .. } => {
                let factor = 1u32 << trip.saturating_sub(1).min(31);
                base.saturating_mul(factor).min(max)
            }
        }
    }

    /// The open duration for the `trip`-th consecutive trip, with jitter drawn from `rng`.
    pub(crate) fn for_trip(&self, trip: u32, rng: &JitterRng) -> Duration {
        let nominal = self.nominal(trip);
        match *self {
            Self::Exponential { jitter, .. } if jitter > 0.0 => {
                nominal.mul_f64(1.0 - jitter * rng.unit())
            }
            _ => nominal,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            Self::Fixed(d) if d.is_zero() => Err(ConfigError::new("open duration must be > 0")),
            Self::Exponential { base, max, jitter } => {
                if base.is_zero() {
                    Err(ConfigError::new("open duration base must be > 0"))
                } else if max < base {
                    Err(ConfigError::new("open duration max must be >= base"))
                } else if !(0.0..=1.0).contains(&jitter) {
                    Err(ConfigError::new(
                        "open duration jitter must be in 0.0..=1.0",
                    ))
                } else {
                    Ok(())
                }
            }
            Self::Fixed(_) => Ok(()),
        }
    }
}

/// A validated breaker configuration; cheap to clone. Build one with [`BreakerConfig::builder`].
///
/// Defaults: trip on 5 consecutive failures, or on a failure rate of 50% over the last 100 calls
/// once 20 have been seen; no slow-call trip; open for 5 s, doubling on repeated trips up to
/// 60 s with 10% jitter, or longer when an upstream `Retry-After` asks (at most 5 min); one probe at
/// a time, one success closes, a probe unanswered for 30 s re-opens; failures are
/// [`Outcome::is_upstream_failure`] (5xx, timeouts, transport errors) under the default
/// [`Classifier`].
#[derive(Clone)]
pub struct BreakerConfig {
    pub(crate) name: Arc<str>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call: Option<(Duration, f64)>,
    pub(crate) window: FailureWindow,
    pub(crate) minimum_calls: u32,
    pub(crate) open_duration: OpenDuration,
    pub(crate) honor_retry_after: Option<Duration>,
    pub(crate) max_probes: u32,
    pub(crate) probes_to_close: u32,
    pub(crate) probe_timeout: Duration,
    pub(crate) classifier: Arc<dyn Classify>,
    pub(crate) custom_classifier: bool,
    pub(crate) is_failure: Option<Arc<FailurePredicate>>,
    pub(crate) on_state_change: Option<Arc<StateCallback>>,
    pub(crate) rng: JitterRng,
}

impl fmt::Debug for BreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerConfig")
            .field("name", &self.name)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("failure_rate", &self.failure_rate)
            .field("slow_call", &self.slow_call)
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("open_duration", &self.open_duration)
            .field("honor_retry_after", &self.honor_retry_after)
            .field("max_probes", &self.max_probes)
            .field("probes_to_close", &self.probes_to_close)
            .field("probe_timeout", &self.probe_timeout)
            .field("custom_failure_predicate", &self.is_failure.is_some())
            .field("on_state_change", &self.on_state_change.is_some())
            .field("rng", &self.rng)
            .finish_non_exhaustive()
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            name: Arc::from("default"),
            consecutive_failures: Some(5),
            failure_rate: Some(0.5),
            slow_call: None,
            window: FailureWindow::Count(100),
            minimum_calls: 20,
            open_duration: OpenDuration::exponential(
                Duration::from_secs(5),
                Duration::from_secs(60),
            ),
            honor_retry_after: Some(Duration::from_secs(300)),
            max_probes: 1,
            probes_to_close: 1,
            probe_timeout: Duration::from_secs(30),
            classifier: Arc::new(Classifier::default()),
            custom_classifier: false,
            is_failure: None,
            on_state_change: None,
            rng: JitterRng::default(),
        }
    }
}

impl BreakerConfig {
    /// Starts from the defaults (see the type docs).
    pub fn builder() -> BreakerConfigBuilder {
        BreakerConfigBuilder {
            config: Self::default(),
        }
    }

    /// The name used in logs, events and metric labels.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The open duration policy.
    pub const fn open_duration(&self) -> OpenDuration {
        self.open_duration
    }

    pub(crate) fn is_failure(&self, outcome: &Outcome) -> bool {
        match &self.is_failure {
            Some(predicate) => predicate(outcome),
            None => outcome.is_upstream_failure(),
        }
    }

    /// Whether a response with `status` is a success without classifying it: only with the
    /// default classifier and predicate, for which every status below 400 is a success.
    pub(crate) fn classifies_by_default(&self) -> bool {
        !self.custom_classifier && self.is_failure.is_none()
    }

    pub(crate) fn with_name(&self, name: Arc<str>) -> Self {
        let mut config = self.clone();
        config.name = name;
        config
    }
}

/// Builds a [`BreakerConfig`]; [`build`](Self::build) rejects inconsistent settings.
#[derive(Debug, Clone)]
pub struct BreakerConfigBuilder {
    config: BreakerConfig,
}

impl BreakerConfigBuilder {
    /// The name used in logs, events and metric labels (default `"default"`).
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Trip after `n` failures in a row (default 5).
    #[must_use]
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }

    /// Never trip on consecutive failures alone.
    #[must_use]
    pub fn without_consecutive_failures(mut self) -> Self {
        self.config.consecutive_failures = None;
        self
    }

    /// Trip when at least `rate` (in `0.0..=1.0`) of the calls in the window failed
    /// (default 0.5), once [`minimum_calls`](Self::minimum_calls) calls are in the window.
    #[must_use]
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = Some(rate);
        self
    }

    /// Never trip on the failure rate.
    #[must_use]
    pub fn without_failure_rate(mut self) -> Self {
        self.config.failure_rate = None;
        self
    }

    /// Trip when at least `rate` of the calls in the window took longer than `threshold`
    /// (successful or not), once [`minimum_calls`](Self::minimum_calls) calls are in the window.
    /// Off by default; a slow half-open probe counts as a failed probe when it is on.
    #[must_use]
    pub fn slow_call_rate(mut self, threshold: Duration, rate: f64) -> Self {
        self.config.slow_call = Some((threshold, rate));
        self
    }

    /// Rates over the last `n` calls (default 100).
    #[must_use]
    pub fn count_window(mut self, n: u32) -> Self {
        self.config.window = FailureWindow::Count(n);
        self
    }

    /// Rates over the calls of the last `secs` seconds: a call counts for at least `secs`
    /// seconds and at most 1/64 longer (see [`FailureWindow::Time`]).
    #[must_use]
    pub fn time_window(mut self, secs: u32) -> Self {
        self.config.window = FailureWindow::Time(secs);
        self
    }

    /// How many calls the window must hold before a rate can trip (default 20).
    #[must_use]
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }

    /// How long the breaker stays open (default: exponential from 5 s to 60 s, 10% jitter).
    #[must_use]
    pub fn open_duration(mut self, open: OpenDuration) -> Self {
        self.config.open_duration = open;
        self
    }

    /// Whether a failure that trips the breaker and carries the upstream's `Retry-After` (a 503
    /// with `Retry-After`, say) may lengthen the open duration, and the longest it may make it
    /// (default: yes, at most 5 minutes). A hint never shortens the open duration: an upstream
    /// that keeps answering `Retry-After: 1` cannot defeat the growing backoff. `None` ignores
    /// the upstream's hint.
    #[must_use]
    pub fn honor_retry_after(mut self, cap: Option<Duration>) -> Self {
        self.config.honor_retry_after = cap;
        self
    }

    /// How many half-open probes may be in flight at once (default 1).
    #[must_use]
    pub fn max_probes(mut self, n: u32) -> Self {
        self.config.max_probes = n;
        self
    }

    /// How many successful probes close the breaker (default 1); any failed probe re-opens it.
    #[must_use]
    pub fn probes_to_close(mut self, n: u32) -> Self {
        self.config.probes_to_close = n;
        self
    }

    /// How long half-open may go without a probe answering, once all probe permits are taken,
    /// before the breaker re-opens (default 30 s). A hung probe cannot hold it half-open forever.
    #[must_use]
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.config.probe_timeout = timeout;
        self
    }

    /// The classifier outcomes come from (default [`Classifier::default()`]).
    #[must_use]
    pub fn classifier(mut self, classifier: impl Classify) -> Self {
        self.config.classifier = Arc::new(classifier);
        self.config.custom_classifier = true;
        self
    }

    /// Which outcomes count as failures (default [`Outcome::is_upstream_failure`]: 5xx,
    /// timeouts, transport errors; never 429, 402, other 4xx). Local rejections
    /// ([`OutcomeKind::Rejected`](tollway_core::OutcomeKind::Rejected)) are never counted at all,
    /// whatever this says.
    #[must_use]
    pub fn failure_predicate(
        mut self,
        predicate: impl Fn(&Outcome) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.config.is_failure = Some(Arc::new(predicate));
        self
    }

    /// Called on every state change, after it happened, on the thread that caused it. Keep it
    /// short: it runs inside the request path.
    #[must_use]
    pub fn on_state_change(
        mut self,
        callback: impl Fn(&StateChange) + Send + Sync + 'static,
    ) -> Self {
        self.config.on_state_change = Some(Arc::new(callback));
        self
    }

    /// Where the open-duration jitter draws random numbers (the thread-local generator by
    /// default; [`JitterRng::seeded`] makes every open duration reproducible in tests).
    #[must_use]
    pub fn rng(mut self, rng: JitterRng) -> Self {
        self.config.rng = rng;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] saying which setting is out of range: a zero consecutive-failure count,
    /// a rate outside `0.0..=1.0` (or zero), an empty or oversized window, zero minimum calls,
    /// a zero or inconsistent open duration, zero or more than [`MAX_PROBES`] probes, or a zero
    /// probe timeout.
    pub fn build(self) -> Result<BreakerConfig, ConfigError> {
        let c = &self.config;
        if c.consecutive_failures == Some(0) {
            return Err(ConfigError::new("consecutive failures must be >= 1"));
        }
        let valid_rate = |r: f64| r > 0.0 && r <= 1.0;
        if c.failure_rate.is_some_and(|r| !valid_rate(r)) {
            return Err(ConfigError::new("failure rate must be in (0.0, 1.0]"));
        }
        if let Some((threshold, rate)) = c.slow_call
            && (threshold.is_zero() || !valid_rate(rate))
        {
            return Err(ConfigError::new(
                "slow call threshold must be > 0 and its rate in (0.0, 1.0]",
            ));
        }
        match c.window {
            FailureWindow::Count(n) if n == 0 || n > MAX_COUNT_WINDOW => {
                return Err(ConfigError::new("count window must hold 1..=65536 calls"));
            }
            FailureWindow::Time(s) if s == 0 || s > MAX_TIME_WINDOW_SECS => {
                return Err(ConfigError::new("time window must be 1..=3600 seconds"));
            }
            _ => {}
        }
        if c.minimum_calls == 0 {
            return Err(ConfigError::new("minimum calls must be >= 1"));
        }
        c.open_duration.validate()?;
        if c.max_probes == 0 || c.max_probes > MAX_PROBES {
            return Err(ConfigError::new("max probes must be in 1..=1023"));
        }
        if c.probes_to_close == 0 || c.probes_to_close > MAX_PROBES {
            return Err(ConfigError::new("probes to close must be in 1..=1023"));
        }
        if c.probe_timeout.is_zero() {
            return Err(ConfigError::new("probe timeout must be > 0"));
        }
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests;
