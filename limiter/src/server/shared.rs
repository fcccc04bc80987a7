//! [`Shared`]: what every [`ServerLimiter`](super::ServerLimiter) made by one layer shares.

use std::sync::Arc;

use super::concurrency::{ConcurrencyLimit, InFlight};
use super::headers::HeaderOptions;
use super::limits::Limits;
use super::priority::{Admission, PriorityAdmission};
use super::rejection::Rejection;
use super::remote::RemoteLimits;
use crate::clock::LimiterClock;

/// The layer's configuration and state; services hold it in an `Arc`.
pub(crate) struct Shared<C: LimiterClock> {
    pub(crate) limits: Limits<C>,
    pub(crate) headers: HeaderOptions,
    pub(crate) rejection: Rejection,
    pub(crate) concurrency: Option<(ConcurrencyLimit, Arc<InFlight>)>,
    pub(crate) priority: Option<(PriorityAdmission, Arc<Admission>)>,
    pub(crate) shadow: bool,
    pub(crate) clock: C,
    /// A fleet's store, which decides the rate limits instead of `limits` (their key maps then
    /// stay empty).
    pub(crate) remote: Option<Arc<dyn RemoteLimits>>,
}

/// What shadow mode saw: refusals it let through, and admissions that left a policy nearly
/// used up (at or below 10% of its quota).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShadowReport {
    /// Requests that enforcement would have refused (rate, concurrency or queue).
    pub would_reject: u64,
    /// Admitted requests after which some policy had at most 10% left.
    pub near_limit: u64,
}
