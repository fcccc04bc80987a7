use super::*;
use crate::{BudgetExhausted, ExhaustedReason};

fn classify(status: u16, headers: &[(&'static str, &'static str)]) -> Outcome {
    let headers: HeaderMap = headers
        .iter()
        .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
        .collect();
    Classifier::default().classify_response(StatusCode::from_u16(status).unwrap(), &headers)
}

#[test]
fn default_statuses() {
    assert_eq!(classify(200, &[]).kind(), OutcomeKind::Success);
    assert_eq!(classify(204, &[]).kind(), OutcomeKind::Success);
    assert_eq!(classify(304, &[]).kind(), OutcomeKind::Success);
    assert_eq!(classify(402, &[]).kind(), OutcomeKind::CreditsExhausted);
    assert_eq!(classify(404, &[]).kind(), OutcomeKind::ClientError);
    assert_eq!(classify(408, &[]).kind(), OutcomeKind::Timeout);
    assert_eq!(classify(500, &[]).kind(), OutcomeKind::ServerError);
    assert_eq!(
        classify(503, &[("retry-after", "3")]).kind(),
        OutcomeKind::ServerError
    );
}

#[test]
fn rate_limit_carries_hint() {
    let outcome = classify(429, &[("retry-after", "7")]);
    assert_eq!(outcome.kind(), OutcomeKind::RateLimited);
    assert_eq!(
        outcome.retry_delay(SystemTime::now()),
        Some(Duration::from_secs(7))
    );
    let legacy = classify(
        429,
        &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "4")],
    );
    assert_eq!(
        legacy.retry_delay(SystemTime::now()),
        Some(Duration::from_secs(4))
    );
    assert_eq!(
        classify(429, &[("retry-after", "nope")]).retry_after(),
        None
    );
    assert_eq!(classify(200, &[("retry-after", "7")]).retry_after(), None);
}

/// Finding (goodput): a 500 from an upstream that adds `X-RateLimit-Remaining: 0` and a
/// reset to every answer was retried only after the reset, a whole second; the last page of
/// a run waited for it.
#[test]
fn a_failure_says_when_to_retry_with_retry_after_alone() {
    let window = [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "4")];
    assert_eq!(classify(500, &window).retry_after(), None);
    assert_eq!(classify(408, &window).retry_after(), None);
    let told = classify(500, &[("retry-after", "2"), window[0], window[1]]);
    assert_eq!(
        told.retry_delay(SystemTime::now()),
        Some(Duration::from_secs(2))
    );
    // A 503 may be a rate limit by another name; a 402's reset says when credit returns.
    for status in [503, 402] {
        assert_eq!(
            classify(status, &window).retry_delay(SystemTime::now()),
            Some(Duration::from_secs(4)),
            "{status}"
        );
    }
}

#[test]
fn never_retry_402_or_4xx() {
    assert!(!classify(402, &[]).is_retryable());
    assert!(!classify(400, &[]).is_retryable());
    assert!(classify(429, &[]).is_retryable());
    assert!(classify(502, &[]).is_retryable());
    assert!(!classify(429, &[]).is_upstream_failure());
    assert!(classify(500, &[]).is_upstream_failure());
}

#[test]
fn errors() {
    let c = Classifier::default();
    let rejected = BudgetExhausted::new(ExhaustedReason::Window, None);
    assert_eq!(c.classify_error(&rejected).kind(), OutcomeKind::Rejected);
    let timeout = std::io::Error::from(std::io::ErrorKind::TimedOut);
    assert_eq!(c.classify_error(&timeout).kind(), OutcomeKind::Timeout);
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert_eq!(c.classify_error(&refused).kind(), OutcomeKind::Transport);
    assert!(!c.classify_error(&rejected).is_retryable());
    assert!(c.classify_error(&refused).is_retryable());
    let too_long = RetryAfterTooLong::new(Duration::from_secs(3600), Duration::from_secs(60), 1);
    let outcome = c.classify_error(&too_long);
    assert_eq!(outcome.kind(), OutcomeKind::RateLimited);
    assert!(!outcome.is_upstream_failure());
    assert_eq!(
        outcome.retry_delay(SystemTime::now()),
        Some(Duration::from_secs(3600))
    );
}

#[tokio::test(start_paused = true)]
async fn tokio_elapsed_is_a_timeout() {
    let elapsed = tokio::time::timeout(Duration::from_millis(1), std::future::pending::<()>())
        .await
        .unwrap_err();
    assert_eq!(
        Classifier::default().classify_error(&elapsed).kind(),
        OutcomeKind::Timeout
    );
}

#[test]
fn custom_rules_win() {
    let c = Classifier::builder()
        .status(StatusCode::NOT_FOUND, OutcomeKind::Success)
        .response_rule(|status, headers| {
            (status == StatusCode::OK && headers.contains_key("x-quota-exceeded"))
                .then_some(OutcomeKind::RateLimited)
        })
        .error_rule(|_| Some(OutcomeKind::Timeout))
        .build();
    let mut headers = HeaderMap::new();
    assert_eq!(
        c.classify_response(StatusCode::NOT_FOUND, &headers).kind(),
        OutcomeKind::Success
    );
    headers.insert("x-quota-exceeded", "1".parse().unwrap());
    assert_eq!(
        c.classify_response(StatusCode::OK, &headers).kind(),
        OutcomeKind::RateLimited
    );
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert_eq!(c.classify_error(&refused).kind(), OutcomeKind::Timeout);
}
