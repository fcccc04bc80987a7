//! What the retry layer attaches to the responses it returns.

use std::fmt;

/// How many times the request was sent (1 when the first attempt was final). Always present on
/// a response returned by [`Retry`](crate::Retry); an error carries the same count in
/// [`RequestFailed`](crate::RequestFailed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempts(pub u32);

impl Attempts {
    /// How many of the attempts were resends (`http.request.resend_count` in OpenTelemetry).
    pub const fn resends(self) -> u32 {
        self.0.saturating_sub(1)
    }
}

/// Present on a response whose outcome was retryable (429, 5xx, ...) but that was returned
/// without another attempt, saying why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetriesStopped(pub StopReason);

/// Why a retryable outcome was not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// The method is not idempotent and the request carries no `Idempotency-Key`, and the policy
    /// does not opt in to resending such requests.
    NotIdempotent,
    /// The request body cannot be sent twice: its size is unknown, or larger than the policy's
    /// replay limit.
    BodyNotReplayable,
    /// The body sent more bytes than its declared length: it was sent once, as it came, and
    /// is not resent.
    BodyOversize,
    /// The policy's maximum number of attempts was reached.
    MaxAttempts,
    /// The next delay would end after the policy's total deadline.
    Deadline,
    /// The shared retry budget had no retry left: the upstream is failing for many requests at
    /// once, and retrying them all would multiply the load on it.
    BudgetExhausted,
}

impl StopReason {
    /// A short lowercase name, for metrics labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotIdempotent => "not_idempotent",
            Self::BodyNotReplayable => "body_not_replayable",
            Self::BodyOversize => "body_oversize",
            Self::MaxAttempts => "max_attempts",
            Self::Deadline => "deadline",
            Self::BudgetExhausted => "budget_exhausted",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
