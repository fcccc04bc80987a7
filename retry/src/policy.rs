//! What is retried, how often and how long to wait: [`RetryPolicy`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tollway_core::{Classifier, Classify, Clock};

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::error::InvalidConfig;
use crate::observe::Metrics;
use tollway_core::JitterRng;
use tollway_core::SharedClock;

/// The retry rules one [`RetryLayer`](crate::RetryLayer) applies. Cheap to clone; clones share
/// the budget and the random generator.
///
/// Defaults: 3 attempts, 100 ms doubling to 10 s with full jitter, no total deadline, a
/// `Retry-After` of at most 60 s honoured, the default [`RetryBudget`], core's default
/// [`Classifier`], only idempotent or keyed requests resent, bodies of up to 64 KiB replayed.
#[derive(Clone)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) deadline: Option<Duration>,
    pub(crate) max_retry_after: Duration,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) classifier: Arc<dyn Classify>,
    /// Core's default classifier: every status below 400 is a success, decided without it.
    pub(crate) plain_statuses: bool,
    pub(crate) resend_non_idempotent: bool,
    pub(crate) generate_idempotency_keys: bool,
    pub(crate) max_replay_bytes: u64,
    pub(crate) rng: JitterRng,
    pub(crate) clock: SharedClock,
    pub(crate) metrics: Metrics,
}

impl RetryPolicy {
    /// Starts a policy from the defaults.
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder::default()
    }

    /// The most times a request is sent, the first time included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff between attempts.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The total time from the first send after which no retry starts.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The longest `Retry-After` that is waited out.
    pub fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// The shared retry budget, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicyBuilder::default()
            .build()
            .expect("the default policy is valid")
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("deadline", &self.deadline)
            .field("max_retry_after", &self.max_retry_after)
            .field("budget", &self.budget)
            .field("resend_non_idempotent", &self.resend_non_idempotent)
            .field("generate_idempotency_keys", &self.generate_idempotency_keys)
            .field("max_replay_bytes", &self.max_replay_bytes)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RetryPolicy`].
///
/// ```
/// use std::time::Duration;
/// use tollway_retry::backoff::{Backoff, Jitter};
/// use tollway_retry::{RetryBudget, RetryPolicy};
///
/// let policy = RetryPolicy::builder()
///     .max_attempts(5)
///     .backoff(
///         Backoff::exponential(Duration::from_millis(200), Duration::from_secs(5))
///             .with_jitter(Jitter::DecorrelatedV2),
///     )
///     .deadline(Duration::from_secs(30))
///     .max_retry_after(Duration::from_secs(10))
///     .budget(RetryBudget::default())
///     .build()
///     .unwrap();
/// assert_eq!(policy.max_attempts(), 5);
/// assert!(RetryPolicy::builder().max_attempts(0).build().is_err());
/// ```
pub struct RetryPolicyBuilder {
    policy: RetryPolicy,
    budget_default: bool,
}

impl fmt::Debug for RetryPolicyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicyBuilder")
            .field("policy", &self.policy)
            .finish()
    }
}

impl Default for RetryPolicyBuilder {
    fn default() -> Self {
        Self {
            policy: RetryPolicy {
                max_attempts: 3,
                backoff: Backoff::default(),
                deadline: None,
                max_retry_after: Duration::from_secs(60),
                budget: None,
                classifier: Arc::new(Classifier::default()),
                plain_statuses: true,
                resend_non_idempotent: false,
                generate_idempotency_keys: false,
                max_replay_bytes: 64 * 1024,
                rng: JitterRng::default(),
                clock: SharedClock::default(),
                metrics: Metrics::default(),
            },
            budget_default: true,
        }
    }
}

impl RetryPolicyBuilder {
    /// The most times a request is sent, the first included (at least 1; 1 means never retry).
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.policy.max_attempts = max_attempts;
        self
    }

    /// The backoff between attempts.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.policy.backoff = backoff;
        self
    }

    /// A total deadline from the first send: a retry whose delay would end after it is not
    /// made. (This does not cut an attempt in flight short; put a timeout inside for that.)
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.policy.deadline = Some(deadline);
        self
    }

    /// The longest `Retry-After` (or rate-limit reset) that is waited out. A longer one ends
    /// the retries at once with [`RetryAfterTooLong`](crate::RetryAfterTooLong).
    #[must_use]
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.policy.max_retry_after = max;
        self
    }

    /// The retry budget, shared by every service the layer builds and by anyone else holding a
    /// clone of it.
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.policy.budget = Some(budget);
        self.budget_default = false;
        self
    }

    /// No retry budget: every retryable failure is retried up to `max_attempts`. Only for tests
    /// and for upstreams you own; a budget is what prevents retry storms.
    #[must_use]
    pub fn no_budget(mut self) -> Self {
        self.policy.budget = None;
        self.budget_default = false;
        self
    }

    /// How responses and errors are classified (core's default [`Classifier`] otherwise):
    /// only outcomes for which [`Outcome::is_retryable`](tollway_core::Outcome::is_retryable)
    /// holds are retried.
    #[must_use]
    pub fn classifier(mut self, classifier: impl Classify) -> Self {
        self.policy.classifier = Arc::new(classifier);
        self.policy.plain_statuses = false;
        self
    }

    /// Resends requests whose method is not idempotent and that carry no `Idempotency-Key`.
    /// Off by default: resending a POST can charge or create twice.
    #[must_use]
    pub fn resend_non_idempotent(mut self, yes: bool) -> Self {
        self.policy.resend_non_idempotent = yes;
        self
    }

    /// With [`resend_non_idempotent`](Self::resend_non_idempotent), gives each such request a
    /// random `Idempotency-Key` before its first send (kept for every attempt), so an API that
    /// honours the header applies it once.
    #[must_use]
    pub fn generate_idempotency_keys(mut self, yes: bool) -> Self {
        self.policy.generate_idempotency_keys = yes;
        self
    }

    /// The largest request body kept for replay (64 KiB by default). A body that may be resent
    /// and whose exact length is within this is read into memory before the first send, so
    /// every attempt, the first included, sends the same bytes. Bodies of unknown length or
    /// longer than this are sent once, as they come.
    #[must_use]
    pub fn max_replay_bytes(mut self, bytes: u64) -> Self {
        self.policy.max_replay_bytes = bytes;
        self
    }

    /// Where jitter draws random numbers (the thread-local generator by default).
    #[must_use]
    pub fn rng(mut self, rng: JitterRng) -> Self {
        self.policy.rng = rng;
        self
    }

    /// The clock the deadline, `Retry-After` dates and the default budget read
    /// ([`TokioClock`](tollway_core::TokioClock) by default). Delays always sleep on tokio's
    /// timer.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.policy.clock = SharedClock::new(clock);
        self
    }

    /// The policy, or what is wrong with it. With the `metrics` feature, the counters are
    /// registered with the recorder installed now.
    pub fn build(mut self) -> Result<RetryPolicy, InvalidConfig> {
        self.policy.metrics = Metrics::register();
        if self.policy.max_attempts == 0 {
            return Err(InvalidConfig::new(
                "max_attempts",
                "must be at least 1 (the first send)",
            ));
        }
        if self.budget_default {
            let clock = self.policy.clock.clone();
            self.policy.budget = Some(RetryBudget::builder().shared_clock(clock).build()?);
        }
        Ok(self.policy)
    }
}
