//! Metrics through the `metrics` facade (feature `metrics`); no-ops without it.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `tollgate_limiter_admitted` | counter | permits granted without waiting |
//! | `tollgate_limiter_waited` | counter | permits granted after waiting in the queue |
//! | `tollgate_limiter_rejected` | counter | requests refused (max wait, max queue, or no wait allowed) |
//! | `tollgate_limiter_wait_seconds` | histogram | how long each waiter waited |
//! | `tollgate_limiter_paused` | counter | pauses ordered by the upstream (429, 503, used-up window) |

#[cfg(feature = "metrics")]
mod imp {
    use std::time::Duration;

    #[inline]
    pub(crate) fn admitted() {
        metrics::counter!("tollgate_limiter_admitted").increment(1);
    }

    pub(crate) fn waited(wait: Duration) {
        metrics::counter!("tollgate_limiter_waited").increment(1);
        metrics::histogram!("tollgate_limiter_wait_seconds").record(wait.as_secs_f64());
    }

    pub(crate) fn rejected() {
        metrics::counter!("tollgate_limiter_rejected").increment(1);
    }

    pub(crate) fn paused() {
        metrics::counter!("tollgate_limiter_paused").increment(1);
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
