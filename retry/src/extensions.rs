//! What the retry layer attaches to the responses it returns.

use std::fmt;

/// How many times the request was sent. On a response returned by [`Retry`](crate::Retry) it is
/// present when the request was resent or a retryable outcome was not retried; a response
/// without it was the first attempt's answer. [`Attempts::of`] reads it either way. An error
/// carries the same count in [`RequestFailed`](crate::RequestFailed).
///
/// (A first-try answer carries no extension because inserting the first one into a response
/// allocates: the common case stays as cheap as a bare call.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempts(pub u32);

impl Attempts {
    /// How many times the request behind `response` was sent: its [`Attempts`], or 1.
    ///
    /// ```
    /// use tollway_retry::Attempts;
    ///
    /// let first_try = http::Response::new(());
    /// assert_eq!(Attempts::of(&first_try), 1);
    /// let mut resent = http::Response::new(());
    /// resent.extensions_mut().insert(Attempts(3));
    /// assert_eq!(Attempts::of(&resent), 3);
    /// ```
    pub fn of<B>(response: &http::Response<B>) -> u32 {
        response.extensions().get::<Self>().map_or(1, |a| a.0)
    }

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
    /// The body sent more bytes than its declared length (or far more frames than that length
    /// needs): it was sent once, as it came, and is not resent.
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
