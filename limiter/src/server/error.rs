//! [`InvalidPolicy`]: a server limiter that cannot be built.

use std::error::Error;
use std::fmt;

/// A rate-limit policy that cannot be reported in headers: its name is not visible ASCII, or
/// two policies of one layer share a name (a `RateLimit` member is paired with its
/// `RateLimit-Policy` member by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPolicy {
    name: String,
    reason: &'static str,
}

impl InvalidPolicy {
    pub(crate) fn new(name: &str, reason: &'static str) -> Self {
        Self {
            name: name.to_owned(),
            reason,
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate-limit policy {:?}: {}", self.name, self.reason)
    }
}

impl Error for InvalidPolicy {}
