//! Outcome classification: what a response or an error means for rate limiting, retries,
//! circuit breaking, billing and caching.
//!
//! Every tollway layer reads outcomes through one trait, [`Classify`], so an API's quirks are
//! described once. [`Classifier::default()`] follows HTTP: 2xx succeed, 429 is a rate limit, 402
//! means the credits ran out, 5xx are server errors, other 4xx are the client's fault.
//! [`Classifier::builder()`] adapts it to a particular API:
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use tollway_core::classify::{Classifier, Classify, OutcomeKind};
//!
//! // An API that answers 402 when a key's concurrency limit is exceeded, and signals
//! // rate limits with 503 + Retry-After.
//! let classifier = Classifier::builder()
//!     .status(StatusCode::PAYMENT_REQUIRED, OutcomeKind::RateLimited)
//!     .unavailable_with_retry_after_is_rate_limit(true)
//!     .build();
//!
//! let mut headers = HeaderMap::new();
//! assert_eq!(
//!     classifier.classify_response(StatusCode::PAYMENT_REQUIRED, &headers).kind(),
//!     OutcomeKind::RateLimited
//! );
//! headers.insert("retry-after", "5".parse().unwrap());
//! let outcome = classifier.classify_response(StatusCode::SERVICE_UNAVAILABLE, &headers);
//! assert_eq!(outcome.kind(), OutcomeKind::RateLimited);
//! assert!(outcome.retry_after().is_some());
//! ```

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Response, StatusCode};

use crate::error::{RetryAfterTooLong, find_cause, is_local_rejection};
use crate::headers::{RateLimitHint, RetryAfter};

/// The class of an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// The request did what was asked (2xx; 1xx and 3xx too, which are not failures).
    Success,
    /// The upstream is throttling us (429, or what the API uses instead).
    RateLimited,
    /// The account has no credit left (402).
    CreditsExhausted,
    /// The upstream failed (5xx).
    ServerError,
    /// The request was wrong (other 4xx): sending it again changes nothing.
    ClientError,
    /// No response came: the connection failed or broke.
    Transport,
    /// No response came in time (an inner timeout, or 408).
    Timeout,
    /// A tollway layer refused the request before it was sent
    /// ([`RateLimited`](crate::RateLimited), [`CircuitOpen`](crate::CircuitOpen),
    /// [`BudgetExhausted`](crate::BudgetExhausted)).
    Rejected,
}

impl OutcomeKind {
    /// Whether sending the request again later may succeed: rate limits, server errors,
    /// transport errors and timeouts. Never 402, never other 4xx, never a local rejection.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::RateLimited | Self::ServerError | Self::Transport | Self::Timeout
        )
    }

    /// Whether this is a sign that the upstream is unhealthy (what a circuit breaker counts by
    /// default): server errors, transport errors and timeouts. Being throttled or billed is not.
    pub const fn is_upstream_failure(self) -> bool {
        matches!(self, Self::ServerError | Self::Transport | Self::Timeout)
    }

    /// A short lowercase name, for metrics labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::RateLimited => "rate_limited",
            Self::CreditsExhausted => "credits_exhausted",
            Self::ServerError => "server_error",
            Self::ClientError => "client_error",
            Self::Transport => "transport",
            Self::Timeout => "timeout",
            Self::Rejected => "rejected",
        }
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified response or error: its [`OutcomeKind`], the status if there was a response, and
/// the upstream's hint of when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    kind: OutcomeKind,
    status: Option<StatusCode>,
    retry_after: Option<RetryAfter>,
}

impl Outcome {
    /// An outcome of `kind` with no status and no hint.
    pub const fn new(kind: OutcomeKind) -> Self {
        Self {
            kind,
            status: None,
            retry_after: None,
        }
    }

    /// Sets the response status.
    #[must_use]
    pub const fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the upstream's retry hint.
    #[must_use]
    pub const fn with_retry_after(mut self, retry_after: Option<RetryAfter>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The class.
    pub const fn kind(&self) -> OutcomeKind {
        self.kind
    }

    /// The response status, if a response came.
    pub const fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// The upstream's hint of when to try again (`Retry-After`, or a used-up rate-limit window's
    /// reset), if it gave one.
    pub const fn retry_after(&self) -> Option<RetryAfter> {
        self.retry_after
    }

    /// The hint as a delay from `now`.
    pub fn retry_delay(&self, now: SystemTime) -> Option<Duration> {
        self.retry_after.map(|r| r.delay_from(now))
    }

    /// Shorthand for `kind() == Success`.
    pub const fn is_success(&self) -> bool {
        matches!(self.kind, OutcomeKind::Success)
    }

    /// See [`OutcomeKind::is_retryable`].
    pub const fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// See [`OutcomeKind::is_upstream_failure`].
    pub const fn is_upstream_failure(&self) -> bool {
        self.kind.is_upstream_failure()
    }
}

/// Maps responses and errors to [`Outcome`]s. Breaker, retry, budget and cache all consume it.
pub trait Classify: Send + Sync + 'static {
    /// Classifies a response by its status and headers.
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome;

    /// Classifies an error the inner service returned instead of a response.
    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome;

    /// Classifies a whole response.
    fn classify<B>(&self, response: &Response<B>) -> Outcome
    where
        Self: Sized,
    {
        self.classify_response(response.status(), response.headers())
    }
}

impl<C: Classify + ?Sized> Classify for Arc<C> {
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        (**self).classify_response(status, headers)
    }

    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        (**self).classify_error(error)
    }
}

type StatusRule = dyn Fn(StatusCode, &HeaderMap) -> Option<OutcomeKind> + Send + Sync;
type ErrorRule = dyn Fn(&(dyn Error + 'static)) -> Option<OutcomeKind> + Send + Sync;

/// The configurable classifier; cheap to clone (its rules are shared).
///
/// See the [module docs](self) for examples.
#[derive(Clone, Default)]
pub struct Classifier {
    rules: Arc<Rules>,
}

#[derive(Default)]
struct Rules {
    statuses: Vec<(StatusCode, OutcomeKind)>,
    unavailable_with_retry_after_is_rate_limit: bool,
    response_rule: Option<Box<StatusRule>>,
    error_rule: Option<Box<ErrorRule>>,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("statuses", &self.rules.statuses)
            .field(
                "unavailable_with_retry_after_is_rate_limit",
                &self.rules.unavailable_with_retry_after_is_rate_limit,
            )
            .field("response_rule", &self.rules.response_rule.is_some())
            .field("error_rule", &self.rules.error_rule.is_some())
            .finish()
    }
}

impl Classifier {
    /// The HTTP-standard classifier (the same as `Classifier::default()`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a classifier for an API with its own conventions.
    pub fn builder() -> ClassifierBuilder {
        ClassifierBuilder::default()
    }
}

impl Classify for Classifier {
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        let rules = &*self.rules;
        let kind = rules
            .response_rule
            .as_ref()
            .and_then(|rule| rule(status, headers))
            .or_else(|| {
                rules
                    .statuses
                    .iter()
                    .rev()
                    .find(|(s, _)| *s == status)
                    .map(|&(_, kind)| kind)
            })
            .unwrap_or_else(|| default_kind(status, headers, rules));
        let hint = || RateLimitHint::from_headers(headers).map(|h| h.wait());
        let retry_after = match kind {
            OutcomeKind::RateLimited | OutcomeKind::CreditsExhausted => hint(),
            // A 503 may be a throttle in disguise: a used-up window's reset counts.
            OutcomeKind::ServerError if status == StatusCode::SERVICE_UNAVAILABLE => hint(),
            // Other failures say when to try again with `Retry-After` alone. The window fields a
            // server adds to every answer describe its rate window, not the failure: a client
            // pacing at the limit sees `Remaining: 0` on most answers, 500s included.
            OutcomeKind::ServerError | OutcomeKind::Timeout => RetryAfter::from_headers(headers),
            _ => None,
        };
        Outcome::new(kind)
            .with_status(status)
            .with_retry_after(retry_after)
    }

    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        if let Some(kind) = self.rules.error_rule.as_ref().and_then(|rule| rule(error)) {
            return Outcome::new(kind);
        }
        if let Some(too_long) = find_cause::<RetryAfterTooLong>(error) {
            return Outcome::new(OutcomeKind::RateLimited)
                .with_retry_after(Some(RetryAfter::Delay(too_long.retry_after())));
        }
        Outcome::new(default_error_kind(error))
    }
}

fn default_kind(status: StatusCode, headers: &HeaderMap, rules: &Rules) -> OutcomeKind {
    match status.as_u16() {
        429 => OutcomeKind::RateLimited,
        402 => OutcomeKind::CreditsExhausted,
        408 => OutcomeKind::Timeout,
        503 if rules.unavailable_with_retry_after_is_rate_limit
            && headers.contains_key(http::header::RETRY_AFTER) =>
        {
            OutcomeKind::RateLimited
        }
        500..=599 => OutcomeKind::ServerError,
        400..=499 => OutcomeKind::ClientError,
        _ => OutcomeKind::Success,
    }
}

fn default_error_kind(error: &(dyn Error + 'static)) -> OutcomeKind {
    if is_local_rejection(error) {
        return OutcomeKind::Rejected;
    }
    let mut current = Some(error);
    while let Some(e) = current {
        let timed_out = e.is::<tokio::time::error::Elapsed>()
            || e.is::<tower::timeout::error::Elapsed>()
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if timed_out {
            return OutcomeKind::Timeout;
        }
        current = e.source();
    }
    OutcomeKind::Transport
}

/// Builds a [`Classifier`]. Later rules win over earlier ones; a custom rule wins over status
/// rules, which win over the defaults.
#[derive(Default)]
pub struct ClassifierBuilder {
    rules: Rules,
}

impl fmt::Debug for ClassifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifierBuilder")
            .field("statuses", &self.rules.statuses)
            .finish_non_exhaustive()
    }
}

impl ClassifierBuilder {
    /// Classifies every response with `status` as `kind`.
    #[must_use]
    pub fn status(mut self, status: StatusCode, kind: OutcomeKind) -> Self {
        self.rules.statuses.push((status, kind));
        self
    }

    /// Treats `503 Service Unavailable` carrying `Retry-After` as a rate limit (some APIs
    /// throttle that way). Off by default: a 503 is a server error.
    #[must_use]
    pub fn unavailable_with_retry_after_is_rate_limit(mut self, yes: bool) -> Self {
        self.rules.unavailable_with_retry_after_is_rate_limit = yes;
        self
    }

    /// A rule consulted first for every response; `None` falls through to the other rules.
    /// Use it for APIs that signal conditions in headers.
    #[must_use]
    pub fn response_rule(
        mut self,
        rule: impl Fn(StatusCode, &HeaderMap) -> Option<OutcomeKind> + Send + Sync + 'static,
    ) -> Self {
        self.rules.response_rule = Some(Box::new(rule));
        self
    }

    /// A rule consulted first for every error; `None` falls through to the defaults (local
    /// rejections, then timeouts, then transport errors).
    #[must_use]
    pub fn error_rule(
        mut self,
        rule: impl Fn(&(dyn Error + 'static)) -> Option<OutcomeKind> + Send + Sync + 'static,
    ) -> Self {
        self.rules.error_rule = Some(Box::new(rule));
        self
    }

    /// The classifier.
    pub fn build(self) -> Classifier {
        Classifier {
            rules: Arc::new(self.rules),
        }
    }
}

#[cfg(test)]
mod tests;
