//! Metrics (behind the `metrics` feature) and the tracing events of giving up.

use crate::extensions::StopReason;

/// One send of a request, the first included.
pub(crate) fn attempt() {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollway_retry_attempts_total").increment(1);
}

/// One resend.
pub(crate) fn retry() {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollway_retry_retries_total").increment(1);
}

/// A retryable outcome that was returned without another attempt.
pub(crate) fn give_up(reason: &'static str, attempts: u32, outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tollway_retry_give_ups_total", "reason" => reason).increment(1);
    match reason {
        "budget_exhausted"
        | "body_not_replayable"
        | "body_not_fully_read"
        | "retry_after_too_long" => {
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

pub(crate) fn stop(reason: StopReason, attempts: u32, outcome: &'static str) {
    give_up(reason.as_str(), attempts, outcome);
}
