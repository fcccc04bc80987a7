//! Bad configuration. (The rejection, [`CircuitOpen`](crate::CircuitOpen), is `tollway-core`'s,
//! so that every layer recognises it; the crate root re-exports it.)

use std::error::Error;
use std::fmt;

/// A [`BreakerConfig`](crate::BreakerConfig) setting is out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    reason: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(reason: &'static str) -> Self {
        Self { reason }
    }

    /// What is wrong.
    pub const fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid breaker configuration: {}", self.reason)
    }
}

impl Error for ConfigError {}
