//! The errors the retry layer itself raises. ([`RetryAfterTooLong`](crate::RetryAfterTooLong)
//! is `tollway-core`'s, so that every layer recognises it; the crate root re-exports it.)

use std::error::Error;
use std::fmt;

use tollway_core::BoxError;

use crate::extensions::StopReason;

/// A request ended in an error after `attempts` sends: the last attempt's error is its
/// [`source`](Error::source) (find a particular one with
/// [`find_cause`](tollway_core::error::find_cause)).
///
/// Every error from the inner service comes back wrapped in it, so a caller always learns how
/// many times the request was sent and, for a retryable failure, why it was not sent again.
/// Refusals by other tollway layers (`RateLimited`, `CircuitOpen`, `BudgetExhausted`,
/// `StoreUnavailable`) are returned as they are, so that they can be downcast directly; they
/// are never retried.
#[derive(Debug)]
pub struct RequestFailed {
    attempts: u32,
    stopped: Option<StopReason>,
    source: BoxError,
}

impl RequestFailed {
    pub(crate) fn new(attempts: u32, stopped: Option<StopReason>, source: BoxError) -> Self {
        Self {
            attempts,
            stopped,
            source,
        }
    }

    /// How many times the request was sent, the first included.
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Why the last error, which was retryable, was not retried; `None` when it was not
    /// retryable at all.
    pub const fn stopped(&self) -> Option<StopReason> {
        self.stopped
    }

    /// The last attempt's error.
    pub fn last_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.source
    }

    /// The last attempt's error, unwrapped.
    pub fn into_last_error(self) -> BoxError {
        self.source
    }
}

impl fmt::Display for RequestFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request failed after {} attempt", self.attempts)?;
        if self.attempts != 1 {
            f.write_str("s")?;
        }
        if let Some(reason) = self.stopped {
            write!(f, " (not retried: {reason})")?;
        }
        write!(f, ": {}", self.source)
    }
}

impl Error for RequestFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// A retry policy or budget was configured with a value it cannot work with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    setting: &'static str,
    reason: &'static str,
}

impl InvalidConfig {
    pub(crate) const fn new(setting: &'static str, reason: &'static str) -> Self {
        Self { setting, reason }
    }

    /// The setting that was wrong.
    pub const fn setting(&self) -> &'static str {
        self.setting
    }

    /// What was wrong with it.
    pub const fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid retry setting `{}`: {}",
            self.setting, self.reason
        )
    }
}

impl Error for InvalidConfig {}
