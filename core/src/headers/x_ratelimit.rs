use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::parse_u64_saturating;
use crate::HeaderError;

/// `X-RateLimit-Limit`.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

// Early drafts of the IETF document used the same three fields without the `X-` prefix.
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Reset values at or above this are unix timestamps in seconds (2001-09-09 onwards); below it
/// they are seconds from now. No API resets a window 31 years away.
const UNIX_SECONDS_FROM: u64 = 1_000_000_000;
/// Reset values at or above this are unix timestamps in milliseconds.
const UNIX_MILLIS_FROM: u64 = 1_000_000_000_000;

/// When a legacy rate-limit window resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// Seconds from now (`X-RateLimit-Reset: 30`).
    After(Duration),
    /// A point in time (`X-RateLimit-Reset: 1620537960`, a unix timestamp).
    At(SystemTime),
}

impl Reset {
    /// Parses a reset value. Numbers below 10⁹ are seconds from now; numbers from 10⁹ are unix
    /// timestamps in seconds, and from 10¹² in milliseconds. A timestamp the platform's
    /// `SystemTime` cannot hold (some have 32-bit seconds) is an error, never a panic.
    pub fn parse(value: &[u8]) -> Result<Self, HeaderError> {
        let n = parse_u64_saturating(value)
            .ok_or(HeaderError::new("x-ratelimit-reset", "not a whole number"))?;
        let since_epoch = if n >= UNIX_MILLIS_FROM {
            Duration::from_millis(n)
        } else if n >= UNIX_SECONDS_FROM {
            Duration::from_secs(n)
        } else {
            return Ok(Self::After(Duration::from_secs(n)));
        };
        SystemTime::UNIX_EPOCH
            .checked_add(since_epoch)
            .map(Self::At)
            .ok_or(HeaderError::new(
                "x-ratelimit-reset",
                "timestamp out of this platform's range",
            ))
    }

    /// How long from `now` until the reset; zero if it is past.
    pub fn delay_from(&self, now: SystemTime) -> Duration {
        match *self {
            Self::After(d) => d,
            Self::At(at) => at.duration_since(now).unwrap_or(Duration::ZERO),
        }
    }
}

/// The legacy `X-RateLimit-*` headers of a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XRateLimit {
    /// Requests allowed in the window.
    pub limit: Option<u64>,
    /// Requests left in the window.
    pub remaining: Option<u64>,
    /// When the window resets.
    pub reset: Option<Reset>,
}

impl XRateLimit {
    /// Reads the headers (also their unprefixed `RateLimit-Limit` forms from early IETF drafts).
    /// Malformed values count as absent; `None` when none of the three is usable.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let read = |primary: &HeaderName, fallback: &HeaderName| {
            headers
                .get(primary)
                .or_else(|| headers.get(fallback))
                .map(HeaderValue::as_bytes)
        };
        let parsed = Self {
            limit: read(&X_RATELIMIT_LIMIT, &RATELIMIT_LIMIT).and_then(parse_u64_saturating),
            remaining: read(&X_RATELIMIT_REMAINING, &RATELIMIT_REMAINING)
                .and_then(parse_u64_saturating),
            reset: read(&X_RATELIMIT_RESET, &RATELIMIT_RESET).and_then(|v| Reset::parse(v).ok()),
        };
        (parsed != Self::default()).then_some(parsed)
    }

    /// Whether the window is used up (`remaining` is zero).
    pub fn is_exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Writes the present fields into `headers`, replacing earlier values. The reset is written
    /// as it was given: seconds from now (rounded up) or a unix timestamp in seconds.
    pub fn write_to(&self, headers: &mut HeaderMap) {
        if let Some(limit) = self.limit {
            headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(limit));
        }
        if let Some(remaining) = self.remaining {
            headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(remaining));
        }
        if let Some(reset) = self.reset {
            let value = match reset {
                Reset::After(d) => super::whole_seconds_ceil(d),
                Reset::At(at) => super::whole_seconds_ceil(
                    at.duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default(),
                ),
            };
            headers.insert(X_RATELIMIT_RESET, HeaderValue::from(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_tells_delta_from_timestamp() {
        assert_eq!(
            Reset::parse(b"30"),
            Ok(Reset::After(Duration::from_secs(30)))
        );
        assert_eq!(
            Reset::parse(b"1620537960"),
            Ok(Reset::At(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_620_537_960)
            ))
        );
        assert_eq!(
            Reset::parse(b"1620537960123"),
            Ok(Reset::At(
                SystemTime::UNIX_EPOCH + Duration::from_millis(1_620_537_960_123)
            ))
        );
        assert!(Reset::parse(b"-5").is_err());
        // The largest values parse (or fail) without overflowing `SystemTime`.
        for huge in [&b"18446744073709551615"[..], b"99999999999999999999999999"] {
            if let Ok(Reset::At(at)) = Reset::parse(huge) {
                assert!(at > SystemTime::UNIX_EPOCH);
            }
        }
        assert!(Reset::parse(b"1.5").is_err());
    }

    #[test]
    fn reads_a_used_up_legacy_window() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit", "60".parse().unwrap());
        headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
        headers.insert("x-ratelimit-reset", "1620537960".parse().unwrap());
        let parsed = XRateLimit::from_headers(&headers).unwrap();
        assert_eq!(parsed.limit, Some(60));
        assert!(parsed.is_exhausted());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_620_537_950);
        assert_eq!(
            parsed.reset.unwrap().delay_from(now),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn malformed_fields_are_absent() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", "lots".parse().unwrap());
        assert_eq!(XRateLimit::from_headers(&headers), None);
        headers.insert("ratelimit-limit", "10".parse().unwrap());
        assert_eq!(XRateLimit::from_headers(&headers).unwrap().limit, Some(10));
    }

    #[test]
    fn write_then_read() {
        let original = XRateLimit {
            limit: Some(11),
            remaining: Some(3),
            reset: Some(Reset::After(Duration::from_secs(1))),
        };
        let mut headers = HeaderMap::new();
        original.write_to(&mut headers);
        assert_eq!(XRateLimit::from_headers(&headers), Some(original));
    }
}
