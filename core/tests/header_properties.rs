//! Property tests: no header parser panics on arbitrary bytes, and what we format we can parse.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;
use tollway_core::headers::{
    RateLimitHint, RateLimitPolicy, RateLimitStatus, Reset, RetryAfter, XRateLimit,
    format_retry_after,
};
use tollway_core::{Classifier, Classify};

fn visible_name() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ -~]{0,24}").expect("valid regex")
}

proptest! {
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = RetryAfter::parse(&bytes);
        let _ = Reset::parse(&bytes);
        let _ = RateLimitPolicy::parse(&bytes);
        let _ = RateLimitStatus::parse(&bytes);
    }

    #[test]
    fn header_readers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), status in 100u16..600) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let mut headers = HeaderMap::new();
            for name in ["retry-after", "ratelimit", "ratelimit-policy", "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-limit"] {
                headers.insert(name, value.clone());
            }
            let _ = RateLimitHint::from_headers(&headers);
            let _ = XRateLimit::from_headers(&headers);
            let status = StatusCode::from_u16(status).expect("in range");
            let _ = Classifier::default().classify_response(status, &headers);
        }
    }

    #[test]
    fn structured_lists_never_panic(s in "[a-z0-9\";=,:?*. \\-]{0,48}") {
        let _ = RateLimitPolicy::parse(s.as_bytes());
        let _ = RateLimitStatus::parse(s.as_bytes());
    }

    #[test]
    fn retry_after_round_trips(millis in 0u64..10_000_000) {
        let wait = Duration::from_millis(millis);
        let value = format_retry_after(wait);
        let parsed = RetryAfter::parse(value.as_bytes()).expect("we format valid values");
        let delay = parsed.delay_from(SystemTime::now());
        // Rounded up to a whole second, never down.
        prop_assert!(delay >= wait);
        prop_assert!(delay < wait + Duration::from_secs(1));
    }

    #[test]
    fn http_dates_round_trip(secs in 0u64..4_000_000_000, now_secs in 0u64..4_000_000_000) {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
        let parsed = RetryAfter::parse(httpdate::fmt_http_date(at).as_bytes()).expect("valid date");
        prop_assert_eq!(parsed, RetryAfter::Date(at));
        prop_assert_eq!(parsed.delay_from(now), Duration::from_secs(secs.saturating_sub(now_secs)));
    }

    #[test]
    fn policies_round_trip(
        entries in proptest::collection::vec((visible_name(), any::<u64>(), proptest::option::of(0u64..1_000_000)), 1..4)
    ) {
        let policies: Vec<RateLimitPolicy> = entries
            .iter()
            .map(|(name, quota, window)| {
                let p = RateLimitPolicy::new(name.clone(), (*quota).min(999_999_999_999_999)).expect("visible");
                match window {
                    Some(w) => p.with_window(Duration::from_secs(*w)),
                    None => p,
                }
            })
            .collect();
        let value = RateLimitPolicy::header_value(&policies);
        prop_assert_eq!(RateLimitPolicy::parse(value.as_bytes()).expect("parses"), policies);
    }

    #[test]
    fn statuses_round_trip(
        entries in proptest::collection::vec((visible_name(), 0u64..999_999_999_999_999, proptest::option::of(0u64..100_000)), 1..4)
    ) {
        let states: Vec<RateLimitStatus> = entries
            .iter()
            .map(|(name, remaining, reset)| {
                let s = RateLimitStatus::new(name.clone(), *remaining).expect("visible");
                match reset {
                    Some(t) => s.with_reset(Duration::from_secs(*t)),
                    None => s,
                }
            })
            .collect();
        let value = RateLimitStatus::header_value(&states);
        prop_assert_eq!(RateLimitStatus::parse(value.as_bytes()).expect("parses"), states);
    }

    #[test]
    fn legacy_headers_round_trip(limit in any::<u64>(), remaining in any::<u64>(), reset in 0u64..999_999_999) {
        let original = XRateLimit {
            limit: Some(limit),
            remaining: Some(remaining),
            reset: Some(Reset::After(Duration::from_secs(reset))),
        };
        let mut headers = HeaderMap::new();
        original.write_to(&mut headers);
        prop_assert_eq!(XRateLimit::from_headers(&headers), Some(original));
    }
}
