//! Header parsing and classification: what every layer pays per response.
//!
//! Run with `cargo bench -p tollway-benches --bench core`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, StatusCode};
use tollway_core::headers::{RateLimitHint, RateLimitStatus, RetryAfter, request_authority};
use tollway_core::{Classifier, Classify};

fn bench_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_headers");
    group.bench_function("retry_after_seconds", |b| {
        b.iter(|| RetryAfter::parse(black_box(b"120")));
    });
    group.bench_function("retry_after_date", |b| {
        b.iter(|| RetryAfter::parse(black_box(b"Sun, 06 Nov 1994 08:49:37 GMT")));
    });
    group.bench_function("ratelimit_field", |b| {
        b.iter(|| RateLimitStatus::parse(black_box(br#""burst";r=50;t=30, "day";r=900;t=3600"#)));
    });
    // The whole RFC 9651 grammar: an inner list, a date, a display string, a byte sequence.
    group.bench_function("ratelimit_field_full_grammar", |b| {
        b.iter(|| {
            RateLimitStatus::parse(black_box(
                br#"("a" "b"), "burst";r=0;t=30;at=@1700000000;why=%"slow";pk=:YWJj:"#,
            ))
        });
    });
    let server_side = http::Request::get("/v2")
        .header("host", "API.Example:8443")
        .body(())
        .expect("valid request");
    group.bench_function("request_authority_host", |b| {
        b.iter(|| request_authority(black_box(&server_side)).map(|a| a.len()));
    });
    group.finish();
}

fn bench_classify(c: &mut Criterion) {
    let classifier = Classifier::default();
    let mut throttled = HeaderMap::new();
    throttled.insert("retry-after", "2".parse().expect("valid"));
    let plain = HeaderMap::new();
    let mut group = c.benchmark_group("core_classify");
    group.bench_function("ok", |b| {
        b.iter(|| classifier.classify_response(black_box(StatusCode::OK), black_box(&plain)));
    });
    group.bench_function("too_many_requests", |b| {
        b.iter(|| {
            classifier.classify_response(black_box(StatusCode::TOO_MANY_REQUESTS), &throttled)
        });
    });
    group.bench_function("hint_absent", |b| {
        b.iter(|| RateLimitHint::from_headers(black_box(&plain)));
    });
    group.finish();
}

criterion_group!(benches, bench_headers, bench_classify);
criterion_main!(benches);
