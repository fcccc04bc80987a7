//! Parsing and formatting of the headers rate-limited APIs speak.
//!
//! - [`RetryAfter`]: `Retry-After` as delta-seconds or any of RFC 9110's three HTTP-date forms.
//! - [`XRateLimit`]: the legacy `X-RateLimit-Limit`, `-Remaining` and `-Reset`, where the reset is
//!   seconds from now or a unix timestamp ([`Reset`] tells them apart).
//! - [`RateLimitPolicy`] and [`RateLimitStatus`]: the IETF `RateLimit-Policy` and `RateLimit`
//!   structured fields of draft-ietf-httpapi-ratelimit-headers-10, parsed as RFC 9651 Lists by
//!   the `sfv` crate.
//! - [`RateLimitHint`]: all of the above reduced to one answer, "when may I send again?".
//! - [`request_authority`]: the lowercased authority (URI or `Host`) keyed layers group
//!   requests by.
//!
//! No parser panics on any input; a malformed header is a [`HeaderError`](crate::HeaderError)
//! from the `parse` functions and is ignored by the `from_headers` ones.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::HeaderMap;
//! use tollway_core::headers::{RateLimitHint, RetryAfter};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after", "3".parse().unwrap());
//! headers.insert("ratelimit", "\"burst\";r=0;t=10".parse().unwrap());
//!
//! // Retry-After wins over the RateLimit field's `t`.
//! let now = SystemTime::now();
//! let hint = RateLimitHint::from_headers(&headers).unwrap();
//! assert_eq!(hint.delay_from(now), Duration::from_secs(3));
//! assert_eq!(RetryAfter::parse(b"120").unwrap().delay_from(now), Duration::from_secs(120));
//! ```

mod authority;
mod hint;
mod ietf;
mod retry_after;
mod structured;
mod x_ratelimit;

pub use authority::request_authority;
pub use hint::{HintSource, RateLimitHint};
pub use ietf::{RATELIMIT, RATELIMIT_POLICY, RateLimitPolicy, RateLimitStatus};
pub use retry_after::{RetryAfter, format_retry_after, whole_seconds_ceil};
pub use x_ratelimit::{
    Reset, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET, XRateLimit,
};

use http::HeaderMap;
use http::header::HeaderName;

/// All values of the header `name`, joined as one comma-separated list (how HTTP combines
/// repeated list-valued fields). `None` when the header is absent or not visible ASCII.
fn joined_values(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut joined = first.as_bytes().to_vec();
    for value in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    Some(joined)
}

/// Parses an unsigned decimal integer with optional surrounding whitespace; saturates at
/// `u64::MAX` rather than failing on huge values.
fn parse_u64_saturating(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}
