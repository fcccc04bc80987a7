//! Metrics (behind the `metrics` feature) and the tracing events of giving up.
//!
//! The per-attempt counters are registered once, when the policy is built, so that an attempt
//! costs an increment, not a lookup in the recorder. Install the recorder before building
//! policies.

use crate::extensions::StopReason;

/// The policy's counters; nothing without the `metrics` feature.
#[derive(Clone, Debug, Default)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    attempts: Option<metrics::Counter>,
    #[cfg(feature = "metrics")]
    retries: Option<metrics::Counter>,
}

impl Metrics {
    /// Registers the counters with the recorder installed now.
    pub(crate) fn register() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            attempts: Some(metrics::counter!("tollway_retry_attempts_total")),
            #[cfg(feature = "metrics")]
            retries: Some(metrics::counter!("tollway_retry_retries_total")),
        }
    }

    /// One send of a request, the first included.
    #[inline]
    pub(crate) fn attempt(&self) {
        #[cfg(feature = "metrics")]
        if let Some(counter) = &self.attempts {
            counter.increment(1);
        }
    }

    /// One resend.
    #[inline]
    pub(crate) fn retry(&self) {
        #[cfg(feature = "metrics")]
        if let Some(counter) = &self.retries {
            counter.increment(1);
        }
    }
}

/// A retryable outcome that was returned without another attempt.
pub(crate) fn give_up(
    _metrics: &Metrics,
    reason: &'static str,
    attempts: u32,
    outcome: &'static str,
) {
    // Rare: looked up in the recorder each time, one label value per reason.
    #[cfg(feature = "metrics")]
    metrics::counter!("tollway_retry_give_ups_total", "reason" => reason).increment(1);
    match reason {
        "budget_exhausted" | "body_not_replayable" | "body_oversize" | "retry_after_too_long" => {
            tracing::warn!(
                reason,
                attempts,
                outcome,
                "http.request.resend_count" = attempts.saturating_sub(1),
                "retryable failure not retried"
            );
        }
        _ => tracing::debug!(
            reason,
            attempts,
            outcome,
            "http.request.resend_count" = attempts.saturating_sub(1),
            "retryable failure not retried"
        ),
    }
}

pub(crate) fn stop(metrics: &Metrics, reason: StopReason, attempts: u32, outcome: &'static str) {
    give_up(metrics, reason.as_str(), attempts, outcome);
}
