//! Server-side metrics through the `metrics` facade (feature `metrics`); no-ops without it.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `tollway_limiter_tracked_keys` | gauge | | keys remembered by the rate limits |
//! | `tollway_limiter_server_rejected_total` | counter | `reason` | requests refused (`rate`, `concurrency`, `queue`, `store`) |
//! | `tollway_limiter_shadow_would_reject_total` | counter | `reason` | refusals shadow mode let through |
//! | `tollway_limiter_near_limit_total` | counter | `policy` | admitted requests that left a policy at or below 10% |

use super::rejection::RejectionKind;

#[cfg(feature = "metrics")]
pub(crate) const ENABLED: bool = true;
#[cfg(not(feature = "metrics"))]
pub(crate) const ENABLED: bool = false;

fn reason(kind: RejectionKind) -> &'static str {
    match kind {
        RejectionKind::RateLimited => "rate",
        RejectionKind::Concurrency => "concurrency",
        RejectionKind::QueueFull => "queue",
        RejectionKind::StoreUnavailable => "store",
    }
}

#[cfg(feature = "metrics")]
mod imp {
    use super::{RejectionKind, reason};

    pub(crate) fn tracked_keys(keys: usize) {
        metrics::gauge!("tollway_limiter_tracked_keys").set(keys as f64);
    }

    pub(crate) fn rejected(kind: RejectionKind) {
        metrics::counter!("tollway_limiter_server_rejected_total", "reason" => reason(kind))
            .increment(1);
    }

    pub(crate) fn would_reject(kind: RejectionKind) {
        metrics::counter!("tollway_limiter_shadow_would_reject_total", "reason" => reason(kind))
            .increment(1);
    }

    pub(crate) fn near_limit(policy: &str) {
        metrics::counter!("tollway_limiter_near_limit_total", "policy" => policy.to_owned())
            .increment(1);
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use super::{RejectionKind, reason};

    #[inline(always)]
    pub(crate) fn tracked_keys(_keys: usize) {}

    #[inline(always)]
    pub(crate) fn rejected(kind: RejectionKind) {
        let _ = reason(kind);
    }

    #[inline(always)]
    pub(crate) fn would_reject(_kind: RejectionKind) {}

    #[inline(always)]
    pub(crate) fn near_limit(_policy: &str) {}
}

pub(crate) use imp::{near_limit, rejected, tracked_keys, would_reject};
