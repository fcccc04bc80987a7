//! Each retry rule, on tokio's paused clock against a scripted in-process upstream.

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::{Reply, Script};
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use tokio::time::Instant;
use tollway_core::error::find_cause;
use tollway_core::idempotency::IDEMPOTENCY_KEY;
use tollway_core::{BoxError, FakeClock, RateLimited, TokioClock};
use tollway_retry::backoff::{Backoff, Jitter};
use tollway_retry::{
    Attempts, JitterRng, RequestFailed, RetriesStopped, Retry, RetryAfterTooLong, RetryBudget,
    RetryLayer, RetryPolicy, RetryPolicyBuilder, StopReason,
};
use tower::{Layer, Service, ServiceExt};

const STEP: Duration = Duration::from_millis(100);

/// No jitter, no budget, 100 ms doubling: delays are exact.
fn policy() -> RetryPolicyBuilder {
    RetryPolicy::builder()
        .max_attempts(4)
        .backoff(Backoff::exponential(STEP, Duration::from_secs(10)).with_jitter(Jitter::None))
        .no_budget()
        .rng(JitterRng::seeded(1))
}

fn get() -> Request<Full<Bytes>> {
    Request::get("/v2/user/followers")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn send(
    script: &Script,
    policy: RetryPolicyBuilder,
    request: Request<Full<Bytes>>,
) -> Result<Response<()>, BoxError> {
    Retry::new(script.service(), policy.build().unwrap())
        .oneshot(request)
        .await
}

fn attempts(response: &Response<()>) -> u32 {
    Attempts::of(response)
}

fn stopped(response: &Response<()>) -> Option<StopReason> {
    response
        .extensions()
        .get::<RetriesStopped>()
        .map(|stopped| stopped.0)
}

fn gaps(script: &Script) -> Vec<Duration> {
    let seen = script.seen();
    seen.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test(start_paused = true)]
async fn retries_429_5xx_transport_and_timeouts_until_success() {
    let script = Script::new([
        Reply::Status(429),
        Reply::Status(503),
        Reply::Transport,
        Reply::Timeout,
    ]);
    let response = send(&script, policy().max_attempts(5), get())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(attempts(&response), 5);
    assert_eq!(stopped(&response), None);
    assert_eq!(
        gaps(&script),
        [STEP, STEP * 2, STEP * 4, STEP * 8],
        "exponential delays on the paused clock"
    );
}

#[tokio::test(start_paused = true)]
async fn first_try_success_is_one_attempt() {
    let script = Script::new([]);
    let response = send(&script, policy(), get()).await.unwrap();
    assert_eq!(attempts(&response), 1);
    // Nothing inserted for the common case: a first-try answer is as cheap as a bare call.
    assert!(response.extensions().get::<Attempts>().is_none());
    assert_eq!(script.calls(), 1);
    // A resent one carries its count.
    let script = Script::new([Reply::Status(503)]);
    let response = send(&script, policy(), get()).await.unwrap();
    assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
}

#[tokio::test(start_paused = true)]
async fn never_retries_402_or_other_4xx() {
    for code in [402, 400, 401, 403, 404, 409, 422] {
        let script = Script::new([Reply::Status(code)]);
        let response = send(&script, policy(), get()).await.unwrap();
        assert_eq!(response.status().as_u16(), code);
        assert_eq!(script.calls(), 1, "{code} was retried");
        assert_eq!(attempts(&response), 1);
        assert_eq!(stopped(&response), None, "{code} is final, not stopped");
    }
}

#[tokio::test(start_paused = true)]
async fn never_retries_a_local_rejection() {
    let script = Script::new([Reply::Rejected]);
    let error = send(&script, policy(), get()).await.unwrap_err();
    assert!(
        error.downcast_ref::<RateLimited>().is_some(),
        "another layer's refusal comes back as it is: {error}"
    );
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_the_last_response() {
    let script = Script::new([Reply::Status(500); 10]);
    let response = send(&script, policy().max_attempts(3), get())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(attempts(&response), 3);
    assert_eq!(stopped(&response), Some(StopReason::MaxAttempts));
    assert_eq!(script.calls(), 3);

    let script = Script::new([Reply::Transport; 10]);
    let error = send(&script, policy().max_attempts(2), get())
        .await
        .unwrap_err();
    let failed = error
        .downcast_ref::<RequestFailed>()
        .expect("attempts reported");
    assert_eq!(failed.attempts(), 2);
    assert_eq!(failed.stopped(), Some(StopReason::MaxAttempts));
    assert!(find_cause::<std::io::Error>(&*error).is_some());
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_request_reports_how_many_attempts_it_made() {
    // Retried and failed every time.
    let script = Script::new([Reply::Transport, Reply::Timeout, Reply::Transport]);
    let error = send(&script, policy().max_attempts(3), get())
        .await
        .unwrap_err();
    let failed = error
        .downcast_ref::<RequestFailed>()
        .expect("attempts reported");
    assert_eq!(
        (failed.attempts(), failed.stopped()),
        (3, Some(StopReason::MaxAttempts))
    );
    assert_eq!(
        find_cause::<std::io::Error>(&*error).map(std::io::Error::kind),
        Some(std::io::ErrorKind::ConnectionReset),
        "the last error is the source"
    );
    assert!(error.to_string().contains("after 3 attempts"), "{error}");

    // Never resendable: one attempt, and why.
    let script = Script::new([Reply::Transport]);
    let post = Request::post("/orders")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let error = send(&script, policy(), post).await.unwrap_err();
    let failed = error
        .downcast_ref::<RequestFailed>()
        .expect("attempts reported");
    assert_eq!(
        (failed.attempts(), failed.stopped()),
        (1, Some(StopReason::NotIdempotent))
    );

    // An error no retry would help with: one attempt, no reason.
    let classifier = tollway_core::Classifier::builder()
        .error_rule(|_| Some(tollway_core::OutcomeKind::ClientError))
        .build();
    let script = Script::new([Reply::Transport]);
    let error = send(&script, policy().classifier(classifier), get())
        .await
        .unwrap_err();
    let failed = error
        .downcast_ref::<RequestFailed>()
        .expect("attempts reported");
    assert_eq!((failed.attempts(), failed.stopped()), (1, None));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_out_never_earlier() {
    let script = Script::new([
        Reply::StatusWith(429, "retry-after", "2"),
        Reply::StatusWith(503, "retry-after", "1.5005"),
    ]);
    let response = send(&script, policy(), get()).await.unwrap();
    assert_eq!(attempts(&response), 3);
    let gaps = gaps(&script);
    // The hint wins over the shorter backoff; fractions round up to the next millisecond.
    assert!(gaps[0] >= Duration::from_secs(2), "{gaps:?}");
    assert!(gaps[0] < Duration::from_millis(2010), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(1501), "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn backoff_longer_than_retry_after_wins() {
    let script = Script::new([
        Reply::StatusWith(429, "retry-after", "0"),
        Reply::StatusWith(429, "retry-after", "0"),
    ]);
    send(&script, policy(), get()).await.unwrap();
    assert_eq!(gaps(&script), [STEP, STEP * 2]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_a_date_reads_the_policy_clock() {
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    // 2001-09-09T01:46:40Z is the epoch above; the hint is 5 s later.
    let script = Script::new([Reply::StatusWith(
        503,
        "retry-after",
        "Sun, 09 Sep 2001 01:46:45 GMT",
    )]);
    let clock = FakeClock::starting_at(epoch);
    send(&script, policy().clock(clock), get()).await.unwrap();
    assert_eq!(gaps(&script), [Duration::from_secs(5)]);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_maximum_ends_retries_with_a_typed_error() {
    let script = Script::new([Reply::StatusWith(429, "retry-after", "3600")]);
    let started = Instant::now();
    let error = send(
        &script,
        policy().max_retry_after(Duration::from_secs(60)),
        get(),
    )
    .await
    .unwrap_err();
    let too_long = error
        .downcast_ref::<RetryAfterTooLong>()
        .expect("RetryAfterTooLong");
    assert_eq!(too_long.retry_after(), Duration::from_secs(3600));
    assert_eq!(too_long.max(), Duration::from_secs(60));
    assert_eq!(too_long.attempts(), 1);
    assert_eq!(script.calls(), 1);
    assert_eq!(started.elapsed(), Duration::ZERO, "no sleeping for an hour");
}

#[tokio::test(start_paused = true)]
async fn a_retry_the_deadline_cannot_cover_is_skipped() {
    // Delays 1 s then 2 s; at 1 s elapsed, a 2 s delay would end at 3 s > 2.5 s.
    let script = Script::new([Reply::Status(503); 10]);
    let started = Instant::now();
    let response = send(
        &script,
        policy()
            .max_attempts(10)
            .backoff(
                Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60))
                    .with_jitter(Jitter::None),
            )
            .deadline(Duration::from_millis(2500)),
        get(),
    )
    .await
    .unwrap();
    assert_eq!(script.calls(), 2);
    assert_eq!(stopped(&response), Some(StopReason::Deadline));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "returned at once"
    );
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_requests_are_sent_once_unless_keyed_or_opted_in() {
    let post = || {
        Request::post("/orders")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    };
    let script = Script::new([Reply::Status(503)]);
    let response = send(&script, policy(), post()).await.unwrap();
    assert_eq!(script.calls(), 1);
    assert_eq!(attempts(&response), 1);
    assert_eq!(stopped(&response), Some(StopReason::NotIdempotent));

    // With an Idempotency-Key the request is resent, with the same key.
    let script = Script::new([Reply::Status(503), Reply::Status(502)]);
    let keyed = Request::post("/orders")
        .header(IDEMPOTENCY_KEY, "order-42")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = send(&script, policy(), keyed).await.unwrap();
    assert_eq!(attempts(&response), 3);
    let keys: Vec<_> = script
        .seen()
        .iter()
        .map(|s| s.headers[&IDEMPOTENCY_KEY].clone())
        .collect();
    assert_eq!(keys, ["order-42"; 3]);

    // Opted in with generated keys: one fresh key, identical on every attempt.
    let script = Script::new([Reply::Status(503)]);
    let response = send(
        &script,
        policy()
            .resend_non_idempotent(true)
            .generate_idempotency_keys(true),
        post(),
    )
    .await
    .unwrap();
    assert_eq!(attempts(&response), 2);
    let seen = script.seen();
    let key = seen[0].headers[&IDEMPOTENCY_KEY].to_str().unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(seen[1].headers[&IDEMPOTENCY_KEY], key);

    // Opted in without keys: resent as is.
    let script = Script::new([Reply::Status(503)]);
    send(&script, policy().resend_non_idempotent(true), post())
        .await
        .unwrap();
    assert_eq!(script.calls(), 2);
    assert!(!script.seen()[1].headers.contains_key(IDEMPOTENCY_KEY));
}

#[tokio::test(start_paused = true)]
async fn in_memory_bodies_are_replayed_byte_for_byte() {
    let script = Script::new([Reply::Status(503), Reply::Transport]);
    let put = Request::put("/items/7")
        .body(Full::new(Bytes::from_static(b"{\"name\":\"seven\"}")))
        .unwrap();
    let response = send(&script, policy(), put).await.unwrap();
    assert_eq!(attempts(&response), 3);
    for seen in script.seen() {
        assert_eq!(seen.body.as_deref(), Some(&b"{\"name\":\"seven\"}"[..]));
    }
}

type Chunks = Vec<Result<Frame<Bytes>, std::io::Error>>;

#[tokio::test(start_paused = true)]
async fn streaming_bodies_of_unknown_length_are_sent_once_visibly() {
    let script = Script::new([Reply::Status(503)]);
    let chunks: Chunks = vec![Ok(Frame::data(Bytes::from_static(b"abc")))];
    let request = Request::put("/upload")
        .body(StreamBody::new(stream::iter(chunks)))
        .unwrap();
    let response = Retry::new(script.service(), policy().build().unwrap())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts(&response), 1);
    assert_eq!(stopped(&response), Some(StopReason::BodyNotReplayable));
    assert_eq!(script.seen()[0].body.as_deref(), Some(&b"abc"[..]));
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_replay_limit_are_sent_once() {
    let script = Script::new([Reply::Status(503)]);
    let request = Request::put("/upload")
        .body(Full::new(Bytes::from(vec![7u8; 2048])))
        .unwrap();
    let response = send(&script, policy().max_replay_bytes(1024), request)
        .await
        .unwrap();
    assert_eq!(stopped(&response), Some(StopReason::BodyNotReplayable));
    assert_eq!(script.calls(), 1);
    assert_eq!(script.seen()[0].body.as_ref().map(Bytes::len), Some(2048));
}

#[tokio::test(start_paused = true)]
async fn a_body_the_upstream_never_read_is_resent_whole() {
    // A refused connection and an early 503 fail before the upstream reads a byte: the body was
    // read into memory before the first send, so each resend carries all of it.
    let script = Script::new([Reply::RefusedUnread, Reply::StatusUnread(503)]);
    let put = || {
        Request::put("/items/7")
            .body(Full::new(Bytes::from_static(b"{\"name\":\"seven\"}")))
            .unwrap()
    };
    let response = send(&script, policy(), put()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(attempts(&response), 3);
    assert_eq!(
        script.seen()[2].body.as_deref(),
        Some(&b"{\"name\":\"seven\"}"[..])
    );

    // A keyed POST too, and an early 429.
    let script = Script::new([Reply::StatusUnread(429)]);
    let post = Request::post("/payments")
        .header(IDEMPOTENCY_KEY, "k-1")
        .body(Full::new(Bytes::from_static(b"amount=5")))
        .unwrap();
    let response = send(&script, policy(), post).await.unwrap();
    assert_eq!(attempts(&response), 2);
    assert_eq!(script.seen()[1].body.as_deref(), Some(&b"amount=5"[..]));

    // Never a bare transport error where a retry was promised.
    let script = Script::new([Reply::RefusedUnread; 4]);
    let error = send(&script, policy(), put()).await.unwrap_err();
    assert_eq!(
        error
            .downcast_ref::<RequestFailed>()
            .map(RequestFailed::attempts),
        Some(4)
    );
}

/// A body whose size hint promises `declared` bytes and that sends `chunks`.
struct Liar {
    declared: u64,
    chunks: std::collections::VecDeque<Bytes>,
}

impl http_body::Body for Liar {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.declared)
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_larger_than_declared_is_sent_once_and_reported_as_oversize() {
    let script = Script::new([Reply::Status(503)]);
    let body = Liar {
        declared: 4,
        chunks: [&b"abc"[..], b"defg", b"h"].map(Bytes::from_static).into(),
    };
    let request = Request::put("/items/7").body(body).unwrap();
    let response = Retry::new(script.service(), policy().build().unwrap())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stopped(&response), Some(StopReason::BodyOversize));
    assert_eq!(attempts(&response), 1);
    assert_eq!(
        script.seen()[0].body.as_deref(),
        Some(&b"abcdefgh"[..]),
        "sent as it came"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_fails_while_read_is_the_callers_error_and_nothing_is_sent() {
    let script = Script::new([]);
    let chunks: Chunks = vec![
        Ok(Frame::data(Bytes::from_static(b"ab"))),
        Err(std::io::Error::other("disk gone")),
    ];
    let body = http_body_util::StreamBody::new(stream::iter(chunks));
    // Declares its length, as a file upload does.
    let body = http_body_util::BodyExt::boxed(SizedBody {
        inner: body,
        len: 4,
    });
    let request = Request::put("/upload").body(body).unwrap();
    let error = Retry::new(script.service(), policy().build().unwrap())
        .oneshot(request)
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "disk gone");
    assert_eq!(script.calls(), 0);
}

/// Gives a body an exact size hint.
struct SizedBody<B> {
    inner: B,
    len: u64,
}

impl<B: http_body::Body + Unpin> http_body::Body for SizedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.len)
    }
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_means_no_retry_and_says_so() {
    let budget = RetryBudget::builder()
        .min_per_second(0)
        .retry_ratio(0.5)
        .clock(TokioClock)
        .build()
        .unwrap();
    let layer = RetryLayer::new(policy().budget(budget.clone()).build().unwrap());
    let script = Script::new([Reply::Status(503); 4]);
    let mut first = layer.layer(script.service());
    let second = first.clone();

    // The first request earns half a retry: not enough.
    let response = first.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(stopped(&response), Some(StopReason::BudgetExhausted));
    assert_eq!(attempts(&response), 1);
    // The second (on a clone, sharing the budget) completes a whole retry and takes it.
    let response = second.oneshot(get()).await.unwrap();
    assert_eq!(attempts(&response), 2);
    assert_eq!(stopped(&response), Some(StopReason::BudgetExhausted));
    assert_eq!(budget.available(), 0);
    assert_eq!(script.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn one_attempt_policies_never_retry() {
    let script = Script::new([Reply::Status(503)]);
    let response = send(&script, policy().max_attempts(1), get())
        .await
        .unwrap();
    assert_eq!(stopped(&response), Some(StopReason::MaxAttempts));
    assert_eq!(script.calls(), 1);
    assert!(RetryPolicy::builder().max_attempts(0).build().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_decides_what_is_retried() {
    // This API says "slow down" with 200 + a header.
    let classifier = tollway_core::Classifier::builder()
        .response_rule(|_, headers| {
            headers
                .contains_key("x-quota-exceeded")
                .then_some(tollway_core::OutcomeKind::RateLimited)
        })
        .build();
    let script = Script::new([Reply::StatusWith(200, "x-quota-exceeded", "1")]);
    let response = send(&script, policy().classifier(classifier), get())
        .await
        .unwrap();
    assert_eq!(attempts(&response), 2);
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_while_waiting_gives_its_retry_back() {
    let budget = RetryBudget::builder()
        .min_per_second(0)
        .retry_ratio(1.0)
        .build()
        .unwrap();
    let script = Script::new([Reply::Status(503), Reply::Status(503)]);
    let service = Retry::new(
        script.service(),
        policy()
            .backoff(
                Backoff::exponential(Duration::from_secs(1), Duration::from_secs(1))
                    .with_jitter(Jitter::None),
            )
            .budget(budget.clone())
            .build()
            .unwrap(),
    );
    // An outer timeout gives up during the 1 s backoff.
    let cut_short =
        tokio::time::timeout(Duration::from_millis(500), service.clone().oneshot(get())).await;
    assert!(cut_short.is_err());
    assert_eq!(script.calls(), 1);
    assert_eq!(budget.available(), 1, "the unused retry came back");

    // A retry that was sent is not given back.
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(attempts(&response), 2);
    assert_eq!(script.calls(), 3);
    assert_eq!(budget.available(), 1, "two deposits, one retry spent");
}
