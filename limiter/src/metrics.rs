//! Metrics through the `metrics` facade (feature `metrics`); no-ops without it.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `tollway_limiter_admitted_total` | counter | permits granted without waiting |
//! | `tollway_limiter_waited_total` | counter | permits granted after waiting in the queue |
//! | `tollway_limiter_rejected_total` | counter | requests refused (max wait, max queue, or no wait allowed) |
//! | `tollway_limiter_wait_seconds` | histogram | how long each waiter waited |
//! | `tollway_limiter_pauses_total` | counter | pauses ordered by the upstream (429, 503, used-up window) |

#[cfg(feature = "metrics")]
mod imp {
    use std::time::Duration;

    #[inline]
    pub(crate) fn admitted() {
        metrics::counter!("tollway_limiter_admitted_total").increment(1);
    }

    pub(crate) fn waited(wait: Duration) {
        metrics::counter!("tollway_limiter_waited_total").increment(1);
        metrics::histogram!("tollway_limiter_wait_seconds").record(wait.as_secs_f64());
    }

    pub(crate) fn rejected() {
        metrics::counter!("tollway_limiter_rejected_total").increment(1);
    }

    pub(crate) fn paused() {
        metrics::counter!("tollway_limiter_pauses_total").increment(1);
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use std::time::Duration;

    #[inline(always)]
    pub(crate) fn admitted() {}

    #[inline(always)]
    pub(crate) fn waited(_wait: Duration) {}

    #[inline(always)]
    pub(crate) fn rejected() {}

    #[inline(always)]
    pub(crate) fn paused() {}
}

pub(crate) use imp::{admitted, paused, rejected, waited};
