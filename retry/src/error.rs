//! The errors the retry layer itself raises.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// The upstream asked us to wait longer than the policy's
/// [`max_retry_after`](crate::RetryPolicyBuilder::max_retry_after), so retrying stopped at once
/// instead of sleeping that long.
///
/// The retry service returns this error in place of the last response, so that callers see why
/// no further attempt was made and can schedule the work for later themselves. It is only raised
/// when a retry would otherwise have been made: a request that may not be resent, or one whose
/// attempts are used up, gets its last response back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfterTooLong {
    retry_after: Duration,
    max: Duration,
    attempts: u32,
}

impl RetryAfterTooLong {
    pub(crate) const fn new(retry_after: Duration, max: Duration, attempts: u32) -> Self {
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
