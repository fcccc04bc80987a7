use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderValue, RETRY_AFTER};

use crate::HeaderError;

/// A parsed `Retry-After` header (RFC 9110 §10.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: 120`: wait this long.
    Delay(Duration),
    /// `Retry-After: Fri, 31 Dec 1999 23:59:59 GMT`: wait until then.
    Date(SystemTime),
}

impl RetryAfter {
    /// Parses a header value: delta-seconds (a non-negative decimal is tolerated and kept exact),
    /// or an IMF-fixdate, RFC 850 or asctime date.
    pub fn parse(value: &[u8]) -> Result<Self, HeaderError> {
        let value = value.trim_ascii();
        if value.is_empty() {
            return Err(HeaderError::new("retry-after", "empty"));
        }
        if value[0].is_ascii_digit() {
            return parse_seconds(value).map(Self::Delay);
        }
        let text =
            std::str::from_utf8(value).map_err(|_| HeaderError::new("retry-after", "not ASCII"))?;
        httpdate::parse_http_date(text)
            .map(Self::Date)
            .map_err(|_| HeaderError::new("retry-after", "neither delta-seconds nor an HTTP-date"))
    }

    /// The `Retry-After` of a response, if present and well-formed.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        Self::parse(headers.get(RETRY_AFTER)?.as_bytes()).ok()
    }

    /// How long to wait from `now`. Never negative: a date in the past means zero. A date is
    /// rounded up to whole seconds, since HTTP-dates carry no fraction and waking early costs a
    /// rejected request.
    pub fn delay_from(&self, now: SystemTime) -> Duration {
        match *self {
            Self::Delay(delay) => delay,
            Self::Date(at) => at
                .duration_since(now)
                .map(|d| Duration::from_secs(whole_seconds_ceil(d)))
                .unwrap_or(Duration::ZERO),
        }
    }

    /// [`delay_from`](Self::delay_from), at most `cap`.
    pub fn delay_capped(&self, now: SystemTime, cap: Duration) -> Duration {
        self.delay_from(now).min(cap)
    }

    /// The header value that says this, as delta-seconds rounded up (a date is turned into the
    /// delay from `now`).
    pub fn to_header_value(&self, now: SystemTime) -> HeaderValue {
        format_retry_after(self.delay_from(now))
    }
}

/// Formats a wait as `Retry-After` delta-seconds, rounded up: 300 ms is `1`, never `0`.
pub fn format_retry_after(wait: Duration) -> HeaderValue {
    HeaderValue::from(whole_seconds_ceil(wait))
}

/// Whole seconds in `d`, rounded up.
pub fn whole_seconds_ceil(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

fn parse_seconds(value: &[u8]) -> Result<Duration, HeaderError> {
    let (whole, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], Some(&value[dot + 1..])),
        None => (value, None),
    };
    let secs = super::parse_u64_saturating(whole)
        .ok_or(HeaderError::new("retry-after", "not a number of seconds"))?;
    let nanos = match fraction {
        None => 0,
        Some(f) if f.is_empty() || !f.iter().all(u8::is_ascii_digit) => {
            return Err(HeaderError::new("retry-after", "not a number of seconds"));
        }
        Some(f) => {
            // Keep nanosecond precision; further digits round the result up.
            let mut nanos = 0u32;
            for i in 0..9 {
                nanos = nanos * 10 + f.get(i).map_or(0, |d| u32::from(d - b'0'));
            }
            let rest_nonzero = f.iter().skip(9).any(|&d| d != b'0');
            nanos + u32::from(rest_nonzero)
        }
    };
    if nanos >= 1_000_000_000 {
        return Ok(Duration::from_secs(secs.saturating_add(1)));
    }
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(
            RetryAfter::parse(b"120"),
            Ok(RetryAfter::Delay(Duration::from_secs(120)))
        );
        assert_eq!(
            RetryAfter::parse(b" 0 "),
            Ok(RetryAfter::Delay(Duration::ZERO))
        );
        assert_eq!(
            RetryAfter::parse(b"1.5"),
            Ok(RetryAfter::Delay(Duration::from_millis(1500)))
        );
        assert_eq!(
            RetryAfter::parse(b"99999999999999999999999"),
            Ok(RetryAfter::Delay(Duration::from_secs(u64::MAX)))
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b""[..],
            b"-1",
            b"1e3",
            b"soon",
            b"1.",
            b"1.x",
            b"\xff\xfe",
            b"12 34",
        ] {
            assert!(RetryAfter::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn all_three_http_date_forms() {
        // 1994-11-06 08:49:37 UTC, from RFC 9110 §5.6.7.
        let expected = at(784_111_777);
        for form in [
            &b"Sun, 06 Nov 1994 08:49:37 GMT"[..],
            b"Sunday, 06-Nov-94 08:49:37 GMT",
            b"Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                RetryAfter::parse(form),
                Ok(RetryAfter::Date(expected)),
                "{form:?}"
            );
        }
    }

    #[test]
    fn dates_round_up_and_never_go_negative() {
        let date = RetryAfter::Date(at(100));
        assert_eq!(date.delay_from(at(90)), Duration::from_secs(10));
        assert_eq!(
            date.delay_from(at(90) + Duration::from_millis(500)),
            Duration::from_secs(10)
        );
        assert_eq!(date.delay_from(at(200)), Duration::ZERO);
        assert_eq!(
            date.delay_capped(at(0), Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn formats_rounded_up() {
        assert_eq!(format_retry_after(Duration::from_millis(300)), "1");
        assert_eq!(format_retry_after(Duration::from_secs(2)), "2");
        assert_eq!(format_retry_after(Duration::from_millis(2001)), "3");
        assert_eq!(format_retry_after(Duration::ZERO), "0");
    }
}
