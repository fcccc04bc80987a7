use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::{RateLimitStatus, Reset, RetryAfter, XRateLimit};

/// Where a [`RateLimitHint`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HintSource {
    /// `Retry-After`.
    RetryAfter,
    /// The IETF `RateLimit` field: a policy with `r=0` and a `t`.
    RateLimit,
    /// Legacy `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset`.
    XRateLimit,
}

/// The upstream's answer to "when may I send again?", from whichever header says it.
///
/// `Retry-After` wins (the draft says so); then the longest reset among the IETF `RateLimit`
/// policies that are used up; then the legacy `X-RateLimit-Reset` when `X-RateLimit-Remaining`
/// is zero. Headers that report quota left give no hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitHint {
    wait: RetryAfter,
    source: HintSource,
}

impl RateLimitHint {
    /// The hint in `headers`, if any header asks the client to hold off.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        if let Some(wait) = RetryAfter::from_headers(headers) {
            return Some(Self {
                wait,
                source: HintSource::RetryAfter,
            });
        }
        let longest_exhausted = RateLimitStatus::from_headers(headers)
            .iter()
            .filter(|s| s.remaining() == 0)
            .filter_map(RateLimitStatus::reset)
            .max();
        if let Some(reset) = longest_exhausted {
            return Some(Self {
                wait: RetryAfter::Delay(reset),
                source: HintSource::RateLimit,
            });
        }
        let legacy = XRateLimit::from_headers(headers)?;
        if !legacy.is_exhausted() {
            return None;
        }
        let wait = match legacy.reset? {
            Reset::After(d) => RetryAfter::Delay(d),
            Reset::At(at) => RetryAfter::Date(at),
        };
        Some(Self {
            wait,
            source: HintSource::XRateLimit,
        })
    }

    /// The wait, as a delay or a date.
    pub fn wait(&self) -> RetryAfter {
        self.wait
    }

    /// Which header the hint came from.
    pub fn source(&self) -> HintSource {
        self.source
    }

    /// How long to wait from `now` (never negative).
    pub fn delay_from(&self, now: SystemTime) -> Duration {
        self.wait.delay_from(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn precedence() {
        let now = SystemTime::now();
        let all = headers(&[
            ("retry-after", "2"),
            ("ratelimit", "\"s\";r=0;t=5"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "9"),
        ]);
        let hint = RateLimitHint::from_headers(&all).unwrap();
        assert_eq!(
            (hint.source(), hint.delay_from(now)),
            (HintSource::RetryAfter, Duration::from_secs(2))
        );

        let ietf = headers(&[(
            "ratelimit",
            "\"s\";r=0;t=5, \"h\";r=0;t=50, \"d\";r=3;t=900",
        )]);
        let hint = RateLimitHint::from_headers(&ietf).unwrap();
        assert_eq!(
            (hint.source(), hint.delay_from(now)),
            (HintSource::RateLimit, Duration::from_secs(50))
        );

        let legacy = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "9")]);
        let hint = RateLimitHint::from_headers(&legacy).unwrap();
        assert_eq!(
            (hint.source(), hint.delay_from(now)),
            (HintSource::XRateLimit, Duration::from_secs(9))
        );
    }

    #[test]
    fn quota_left_is_no_hint() {
        assert!(RateLimitHint::from_headers(&headers(&[("ratelimit", "\"s\";r=4;t=5")])).is_none());
        assert!(
            RateLimitHint::from_headers(&headers(&[
                ("x-ratelimit-remaining", "3"),
                ("x-ratelimit-reset", "9")
            ]))
            .is_none()
        );
        assert!(RateLimitHint::from_headers(&headers(&[("retry-after", "soon")])).is_none());
    }
}
