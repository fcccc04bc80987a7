//! The errors the retry layer itself raises.

use std::error::Error;
use std::fmt;

pub use tollway_core::RetryAfterTooLong;

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
