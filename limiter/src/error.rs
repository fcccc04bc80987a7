//! The limiter's own errors. A refusal is core's [`RateLimited`](tollway_core::RateLimited).

use std::error::Error;
use std::fmt;

/// A request costs more than a quota's burst: no amount of waiting admits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExceedsBurst {
    cost: u32,
    burst: u32,
}

impl ExceedsBurst {
    pub(crate) const fn new(cost: u32, burst: u32) -> Self {
        Self { cost, burst }
    }

    /// What the request would cost.
    pub const fn cost(&self) -> u32 {
        self.cost
    }

    /// The smallest burst among the limiter's quotas: the most one request may cost.
    pub const fn burst(&self) -> u32 {
        self.burst
    }
}

impl fmt::Display for ExceedsBurst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a request of cost {} can never fit a burst of {}",
            self.cost, self.burst
        )
    }
}

impl Error for ExceedsBurst {}

/// [`RateLimiter::set_quota`](crate::RateLimiter::set_quota) was given an index the limiter
/// has no quota at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSuchQuota {
    index: usize,
    len: usize,
}

impl NoSuchQuota {
    pub(crate) const fn new(index: usize, len: usize) -> Self {
        Self { index, len }
    }

    /// The index asked for.
    pub const fn index(&self) -> usize {
        self.index
    }
}

impl fmt::Display for NoSuchQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no quota at index {}: the limiter has {}",
            self.index, self.len
        )
    }
}

impl Error for NoSuchQuota {}
