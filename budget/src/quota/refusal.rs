//! What a refused caller is told: a status, a body, and wording a person can read.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tollway_core::ExhaustedReason;

use super::key::QuotaKey;

/// Writes `duration` the way a person says it, rounded up so that it is never too soon:
/// `45 s`, `12 min 5 s`, `3 h 12 min`, `30 d 1 h`.
///
/// ```
/// use std::time::Duration;
/// use tollway_budget::quota::human_duration;
///
/// assert_eq!(human_duration(Duration::from_secs(11_520)), "3 h 12 min");
/// assert_eq!(human_duration(Duration::from_secs_f64(2_594_183.573)), "30 d 1 h");
/// assert_eq!(human_duration(Duration::from_millis(300)), "1 s");
/// ```
pub fn human_duration(duration: Duration) -> String {
    let secs = duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
        .max(1);
    let pair = |major: u64, major_name: &str, minor: u64, minor_name: &str| {
        if minor == 0 {
            format!("{major} {major_name}")
        } else {
            format!("{major} {major_name} {minor} {minor_name}")
        }
    };
    if secs < 60 {
        return format!("{secs} s");
    }
    if secs < 3_600 {
        return pair(secs / 60, "min", secs % 60, "s");
    }
    // Rounded up to the smaller unit shown; a carry may reach the next larger unit.
    let minutes = secs.div_ceil(60);
    if minutes < 24 * 60 {
        return pair(minutes / 60, "h", minutes % 60, "min");
    }
    let hours = secs.div_ceil(3_600);
    pair(hours / 24, "d", hours % 24, "h")
}

/// A refused request, as a custom [refusal body](super::KeyQuotaBuilder::refusal_body) sees
/// it.
#[derive(Debug, Clone, Copy)]
pub struct QuotaRefusal<'a> {
    pub(crate) key: &'a QuotaKey,
    pub(crate) reason: ExhaustedReason,
    pub(crate) retry_after: Option<Duration>,
}

impl QuotaRefusal<'_> {
    /// Whose quota it is (its `Display` is a fingerprint, never the API key).
    pub fn key(&self) -> &QuotaKey {
        self.key
    }

    /// Why: the quota is spent ([`ExhaustedReason::Window`]), or only its reserve for critical
    /// requests is left ([`ExhaustedReason::CriticalReserve`]).
    pub fn reason(&self) -> ExhaustedReason {
        self.reason
    }

    /// When the caller may try again, if the quota comes back by itself.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// [`retry_after`](Self::retry_after) in words: `3 h 12 min`.
    pub fn resets_in_words(&self) -> Option<String> {
        self.retry_after.map(human_duration)
    }

    /// A sentence for the caller: `the quota is used up; it resets in 3 h 12 min`.
    pub fn message(&self) -> String {
        let what = match self.reason {
            ExhaustedReason::CriticalReserve => {
                "only the part of the quota kept for critical requests is left"
            }
            ExhaustedReason::Upstream402 => "the quota is suspended",
            _ => "the quota is used up",
        };
        match self.resets_in_words() {
            Some(words) => format!("{what}; it resets in {words}"),
            None => what.to_owned(),
        }
    }

    /// The default body: `{"error": .., "message": .., "retry_after": seconds}`.
    pub(crate) fn json(&self) -> String {
        let error = match self.reason {
            ExhaustedReason::CriticalReserve => "reserved_for_critical",
            _ => "quota_exhausted",
        };
        let mut body = serde_json::json!({ "error": error, "message": self.message() });
        if let Some(wait) = self.retry_after {
            body["retry_after"] = serde_json::Value::from(
                wait.as_secs()
                    .saturating_add(u64::from(wait.subsec_nanos() > 0)),
            );
        }
        body.to_string()
    }
}

pub(crate) type BodyFn = dyn Fn(&QuotaRefusal<'_>) -> String + Send + Sync;

/// How refusals are answered.
#[derive(Clone)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) content_type: HeaderValue,
    pub(crate) body: Option<Arc<BodyFn>>,
}

impl Default for Refusal {
    fn default() -> Self {
        Self {
            status: StatusCode::PAYMENT_REQUIRED,
            content_type: HeaderValue::from_static("application/json"),
            body: None,
        }
    }
}

impl fmt::Debug for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refusal")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("custom_body", &self.body.is_some())
            .finish()
    }
}

impl Refusal {
    pub(crate) fn body(&self, refusal: &QuotaRefusal<'_>) -> String {
        match &self.body {
            Some(body) => body(refusal),
            None => refusal.json(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_wrote_them_and_never_too_soon() {
        let cases = [
            (0.0, "1 s"),
            (0.2, "1 s"),
            (1.0, "1 s"),
            (59.1, "1 min"),
            (60.0, "1 min"),
            (61.0, "1 min 1 s"),
            (725.0, "12 min 5 s"),
            (3_599.5, "1 h"),
            (3_600.0, "1 h"),
            (3_601.0, "1 h 1 min"),
            (11_520.0, "3 h 12 min"),
            (11_521.0, "3 h 13 min"),
            (86_399.0, "1 d"),
            (86_400.0, "1 d"),
            (90_000.0, "1 d 1 h"),
            (2_594_183.573, "30 d 1 h"),
        ];
        for (secs, words) in cases {
            assert_eq!(
                human_duration(Duration::from_secs_f64(secs)),
                words,
                "{secs}"
            );
        }
        // Absurd values still read.
        assert_eq!(human_duration(Duration::MAX), "213503982334601 d 8 h");
    }
}
