//! Errors shared by every tollway layer.
//!
//! Each rejection is a small struct that a caller can find with
//! [`downcast_ref`](std::error::Error#method.downcast_ref) on the [`BoxError`] a tollway service
//! returns. They live here, rather than in the crate of the layer that raises them, so that every
//! other layer can recognise them: a retry layer must never retry the limiter's, the breaker's or
//! the budget's own refusal, and a breaker must never count one as an upstream failure.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// The error type every tollway service returns: any error, boxed.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// A request was refused by a rate limiter before it was sent.
///
/// `retry_after` is the limiter's best estimate of when a permit becomes available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    retry_after: Duration,
}

impl RateLimited {
    /// A refusal that expects a permit after `retry_after`.
    pub const fn new(retry_after: Duration) -> Self {
        Self { retry_after }
    }

    /// How long until a permit is expected to be available.
    pub const fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited: retry after {:?}", self.retry_after)
    }
}

impl Error for RateLimited {}

/// A request was refused by an open circuit breaker; the inner service was not called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitOpen {
    retry_after: Duration,
}

impl CircuitOpen {
    /// A refusal from a breaker that stays open for `retry_after` more.
    pub const fn new(retry_after: Duration) -> Self {
        Self { retry_after }
    }

    /// How long until the breaker lets a probe through.
    pub const fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit open: retry after {:?}", self.retry_after)
    }
}

impl Error for CircuitOpen {}

/// Why a credit budget refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExhaustedReason {
    /// The window's credits are spent (or reserved by requests in flight).
    Window,
    /// What is left is the critical reserve, and the request is not critical.
    CriticalReserve,
    /// The upstream answered `402 Payment Required`: the account is empty.
    Upstream402,
}

impl fmt::Display for ExhaustedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Window => "window spent",
            Self::CriticalReserve => "only the critical reserve is left",
            Self::Upstream402 => "upstream answered 402",
        })
    }
}

/// A request was refused by a credit budget before it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExhausted {
    reason: ExhaustedReason,
    retry_after: Option<Duration>,
}

impl BudgetExhausted {
    /// A refusal for `reason`; `retry_after` is when credit comes back, if known
    /// (the window rolls over, say).
    pub const fn new(reason: ExhaustedReason, retry_after: Option<Duration>) -> Self {
        Self {
            reason,
            retry_after,
        }
    }

    /// Why the request was refused.
    pub const fn reason(&self) -> ExhaustedReason {
        self.reason
    }

    /// When credit is expected back, if the budget knows.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "credit budget exhausted: {}", self.reason)?;
        if let Some(after) = self.retry_after {
            write!(f, " (credit back in {after:?})")?;
        }
        Ok(())
    }
}

impl Error for BudgetExhausted {}

/// A retry layer stopped because the upstream asked it to wait longer than its policy allows.
///
/// It is returned in place of the last response so that callers see why no further attempt was
/// made and can schedule the work for later themselves. [`Classifier`](crate::Classifier) reads it
/// as [`RateLimited`](crate::OutcomeKind::RateLimited) with the upstream's hint: the upstream was
/// throttling, not failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfterTooLong {
    retry_after: Duration,
    max: Duration,
    attempts: u32,
}

impl RetryAfterTooLong {
    /// The upstream asked to wait `retry_after`, more than `max`, after `attempts` sends.
    pub const fn new(retry_after: Duration, max: Duration, attempts: u32) -> Self {
        Self {
            retry_after,
            max,
            attempts,
        }
    }

    /// How long the upstream asked us to wait.
    pub const fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The longest wait the policy accepts.
    pub const fn max(&self) -> Duration {
        self.max
    }

    /// How many times the request was sent before retrying stopped.
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl fmt::Display for RetryAfterTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "upstream asked to retry after {:?}, longer than the {:?} this policy waits (after {} attempt(s))",
            self.retry_after, self.max, self.attempts
        )
    }
}

impl Error for RetryAfterTooLong {}

/// A layer's shared store (Redis, in fleet mode) could not be reached, timed out or answered an
/// error, so the layer refused the request rather than guess: it was not sent.
///
/// [`is_local_rejection`] counts it: a breaker never reads it as an upstream failure and a retry
/// layer never resends because of it.
#[derive(Debug)]
pub struct StoreUnavailable {
    layer: &'static str,
    operation: &'static str,
    source: BoxError,
}

impl StoreUnavailable {
    /// The store of `layer` (`"rate limiter"`, `"budget"`) failed during `operation`.
    pub fn new(layer: &'static str, operation: &'static str, source: impl Into<BoxError>) -> Self {
        Self {
            layer,
            operation,
            source: source.into(),
        }
    }

    /// Which layer's store failed.
    pub fn layer(&self) -> &'static str {
        self.layer
    }

    /// What the layer was doing (`acquire`, `reserve`, `settle`, ...).
    pub fn operation(&self) -> &'static str {
        self.operation
    }
}

impl fmt::Display for StoreUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} store unavailable during {}: {}",
            self.layer, self.operation, self.source
        )
    }
}

impl Error for StoreUnavailable {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// A header was present but could not be understood.
///
/// Parsers return it instead of panicking; layers treat a malformed header as absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderError {
    header: &'static str,
    reason: &'static str,
}

impl HeaderError {
    pub(crate) const fn new(header: &'static str, reason: &'static str) -> Self {
        Self { header, reason }
    }

    /// The name of the header that was malformed.
    pub const fn header(&self) -> &'static str {
        self.header
    }

    /// What was wrong with it.
    pub const fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed {} header: {}", self.header, self.reason)
    }
}

impl Error for HeaderError {}

/// Whether `error`, or any error in its [`source`](Error::source) chain, is a rejection by a
/// tollway layer ([`RateLimited`], [`CircuitOpen`], [`BudgetExhausted`] or
/// [`StoreUnavailable`]): the request never reached the upstream.
pub fn is_local_rejection(error: &(dyn Error + 'static)) -> bool {
    find_in_chain(error, |e| {
        e.is::<RateLimited>()
            || e.is::<CircuitOpen>()
            || e.is::<BudgetExhausted>()
            || e.is::<StoreUnavailable>()
    })
    .is_some()
}

/// The first error in `error`'s source chain (itself included) of type `E`.
pub fn find_cause<'a, E: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a E> {
    find_in_chain(error, |e| e.is::<E>()).and_then(|e| e.downcast_ref::<E>())
}

fn find_in_chain<'a>(
    error: &'a (dyn Error + 'static),
    mut matches: impl FnMut(&(dyn Error + 'static)) -> bool,
) -> Option<&'a (dyn Error + 'static)> {
    let mut current = Some(error);
    while let Some(e) = current {
        if matches(e) {
            return Some(e);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn rejections_are_found_through_wrappers() {
        let err: BoxError = Box::new(Wrapper(Box::new(CircuitOpen::new(Duration::from_secs(3)))));
        assert!(is_local_rejection(&*err));
        let open = find_cause::<CircuitOpen>(&*err).expect("found");
        assert_eq!(open.retry_after(), Duration::from_secs(3));
        let store = StoreUnavailable::new("budget", "reserve", std::io::Error::other("down"));
        assert!(is_local_rejection(&store));
        assert_eq!(
            store.to_string(),
            "budget store unavailable during reserve: down"
        );
        let io: BoxError = Box::new(std::io::Error::other("boom"));
        assert!(!is_local_rejection(&*io));
    }

    #[test]
    fn budget_display_names_reason() {
        let e = BudgetExhausted::new(ExhaustedReason::Upstream402, None);
        assert_eq!(
            e.to_string(),
            "credit budget exhausted: upstream answered 402"
        );
    }
}
