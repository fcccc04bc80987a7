//! Every header parser against hostile input: arbitrary bytes, and strings over the alphabet of
//! RFC 9651 structured fields (where parsers get deep before they fail). The assertion is that
//! nothing panics, and that a field that parses has the shape its parser promises.
//!
//! A normal `cargo test` runs a few hundred cases per property. CI's fuzz step runs a million
//! each, in release mode with overflow checks and debug assertions on:
//!
//! ```text
//! PROPTEST_CASES=1000000 CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true \
//!     CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true \
//!     cargo test -p tollway-core --release --test header_fuzz
//! ```

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tollway_core::headers::{
    RateLimitHint, RateLimitPolicy, RateLimitStatus, Reset, RetryAfter, XRateLimit,
    request_authority,
};
use tollway_core::{Classifier, Classify};

/// The fields a rate-limited API answers with, and `Host`.
const FIELDS: [&str; 9] = [
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-remaining",
    "ratelimit-reset",
    "host",
];

/// Runs every parser on `bytes`, alone and as the value of every field at once.
fn every_parser(bytes: &[u8], now: SystemTime, status: u16) {
    if let Ok(wait) = RetryAfter::parse(bytes) {
        let _ = wait.delay_from(now);
        let _ = wait.to_header_value(now);
    }
    if let Ok(reset) = Reset::parse(bytes) {
        let _ = reset.delay_from(now);
    }
    if let Ok(policies) = RateLimitPolicy::parse(bytes) {
        // What parses can be written back, and reads the same.
        let value = RateLimitPolicy::header_value(&policies);
        assert_eq!(
            RateLimitPolicy::parse(value.as_bytes()).unwrap().len(),
            policies.len()
        );
    }
    if let Ok(states) = RateLimitStatus::parse(bytes) {
        let value = RateLimitStatus::header_value(&states);
        assert_eq!(
            RateLimitStatus::parse(value.as_bytes()).unwrap().len(),
            states.len()
        );
    }
    let Ok(value) = HeaderValue::from_bytes(bytes) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for name in FIELDS {
        headers.append(name, value.clone());
        // A repeated field is joined into one list.
        headers.append(name, value.clone());
    }
    if let Some(hint) = RateLimitHint::from_headers(&headers) {
        let _ = hint.delay_from(now);
    }
    if let Some(legacy) = XRateLimit::from_headers(&headers) {
        legacy.write_to(&mut HeaderMap::new());
    }
    let status = StatusCode::from_u16(status).expect("in range");
    let _ = Classifier::default()
        .classify_response(status, &headers)
        .retry_delay(now);
    let mut request = Request::new(());
    *request.headers_mut() = headers;
    if let Some(authority) = request_authority(&request) {
        assert!(!authority.bytes().any(|b| b.is_ascii_uppercase()));
    }
}

fn config() -> ProptestConfig {
    // The case count comes from PROPTEST_CASES (CI's fuzz step sets a million); failures are
    // kept next to this file so that a found input is replayed first next time.
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

fn now() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        Just(SystemTime::UNIX_EPOCH),
        Just(SystemTime::now()),
        (0u64..8_000_000_000).prop_map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..96),
        now in now(),
        status in 100u16..1000,
    ) {
        every_parser(&bytes, now, status);
    }

    #[test]
    fn structured_field_alphabet(
        s in r#"[a-zA-Z0-9"\\;=,:?*.@%()/+_ \t-]{0,80}"#,
        now in now(),
        status in prop_oneof![Just(429u16), Just(503), Just(200), 100u16..600],
    ) {
        every_parser(s.as_bytes(), now, status);
    }

    #[test]
    fn plausible_rate_limit_fields(
        members in proptest::collection::vec(
            (
                r#"("[a-z ]{0,6}"|[a-z*][a-z0-9:/]{0,5}|\([a-z "]{0,8}\)|-?[0-9]{1,17}(\.[0-9]{1,4})?)"#,
                proptest::collection::vec(
                    (
                        "(q|r|t|w|qu|pk|[a-z*][a-z0-9_.*-]{0,3})",
                        r#"(-?[0-9]{1,17}|[0-9]{1,13}\.[0-9]{1,4}|"[ -!#-\[\]-~]{0,6}"|:[A-Za-z0-9+/=]{0,9}:|\?[01]|@-?[0-9]{1,12}|%"[a-z%0-9]{0,6}"|[a-z*][a-z0-9]{0,4})"#,
                    ),
                    0..4,
                ),
            ),
            0..4,
        ),
        now in now(),
    ) {
        let value = members
            .iter()
            .map(|(bare, params)| {
                let params: String = params.iter().map(|(k, v)| format!(";{k}={v}")).collect();
                format!("{bare}{params}")
            })
            .collect::<Vec<_>>()
            .join(", ");
        every_parser(value.as_bytes(), now, 429);
    }
}
