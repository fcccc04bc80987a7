//! The client stack's order, proven with a mock client on tokio's paused clock: a cache hit
//! takes no permit and no credit; a retry takes a new permit and a new reservation; an open
//! breaker ends the retries; a 402 latches and is not retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tollway::breaker::{BreakerConfig, BreakerLayer, OpenDuration, State};
use tollway::budget::{BudgetLayer, Ledger, Window};
use tollway::cache::{CacheLayer, CacheStatus};
use tollway::core::error::find_cause;
use tollway::core::{BoxError, BudgetExhausted, CircuitOpen, ExhaustedReason, TokioClock};
use tollway::limiter::{Quota, RateLimiter};
use tollway::retry::backoff::{Backoff, Jitter};
use tollway::retry::{Attempts, ReplayBody, RetryPolicy};
use tollway::{ClientStack, ClientStackLayer};
use tower::{Layer, Service, ServiceExt};

type Body = Full<Bytes>;

/// What the mock client saw on each call: when, and the ledger's reservations at that moment.
#[derive(Debug, Default)]
struct Recorder {
    calls: std::sync::Mutex<Vec<(Duration, u64)>>,
}

impl Recorder {
    fn calls(&self) -> Vec<(Duration, u64)> {
        self.calls.lock().unwrap().clone()
    }
}

/// A mock client answering the `n`th call (from 0) with `statuses[n]` (the last one repeats),
/// recording the time and the ledger's reservations at each call.
fn client(
    statuses: Vec<StatusCode>,
    ledger: Option<Ledger>,
    recorder: Arc<Recorder>,
) -> impl Service<
    Request<ReplayBody<Body>>,
    Response = Response<Body>,
    Error = std::io::Error,
    Future: Send,
> + Clone
+ Send
+ Sync
+ 'static {
    let start = Instant::now();
    let n = Arc::new(AtomicU32::new(0));
    tower::service_fn(move |_request: Request<ReplayBody<Body>>| {
        let i = n.fetch_add(1, Ordering::SeqCst) as usize;
        let reserved = ledger.as_ref().map_or(0, |l| l.snapshot().reserved);
        recorder
            .calls
            .lock()
            .unwrap()
            .push((start.elapsed(), reserved));
        let status = statuses[i.min(statuses.len() - 1)];
        async move {
            Ok(Response::builder()
                .status(status)
                .body(Full::new(Bytes::from_static(b"{\"page\": 1}")))
                .unwrap())
        }
    })
}

fn limiter(per_second: u32) -> RateLimiter<TokioClock> {
    RateLimiter::builder(Quota::per_second(per_second).burst(1))
        .clock(TokioClock)
        .build()
}

fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(max_attempts)
        .backoff(
            Backoff::exponential(Duration::from_millis(10), Duration::from_millis(10))
                .with_jitter(Jitter::None),
        )
        .no_budget()
        .build()
        .unwrap()
}

fn get() -> Request<Body> {
    Request::get("http://api.example/v2/user/followers?user_id=1&page_id=")
        .header("x-access-key", "key")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn spent(ledger: &Ledger) -> u64 {
    ledger.snapshot().windows[0].spent
}

#[tokio::test(start_paused = true)]
async fn a_cache_hit_takes_no_permit_and_no_credit() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::new(10, Window::lifetime());
    let recorder = Arc::new(Recorder::default());
    let layer = ClientStackLayer::builder(limiter(1))
        .budget(BudgetLayer::new(ledger.clone()))
        .cache(
            CacheLayer::builder(dir.path())
                .ttl(Duration::from_secs(60))
                .build()
                .unwrap(),
        )
        .build();
    let stack = layer.layer(client(
        vec![StatusCode::OK],
        Some(ledger.clone()),
        Arc::clone(&recorder),
    ));

    let first = stack.clone().oneshot(get()).await.unwrap();
    assert_eq!(
        CacheStatus::from_headers(first.headers()),
        Some(CacheStatus::Miss)
    );
    assert_eq!(spent(&ledger), 1);
    // The limiter's one permit per second is now taken: a request that needed one would wait.
    assert!(layer.limiter().peek().is_err());

    let started = Instant::now();
    for _ in 0..3 {
        let hit = stack.clone().oneshot(get()).await.unwrap();
        assert_eq!(
            CacheStatus::from_headers(hit.headers()),
            Some(CacheStatus::Hit)
        );
        assert_eq!(
            hit.into_body().collect().await.unwrap().to_bytes(),
            "{\"page\": 1}"
        );
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "hits never wait for a permit"
    );
    assert_eq!(recorder.calls().len(), 1, "hits never reach the client");
    assert_eq!(spent(&ledger), 1, "hits cost no credit");
    assert_eq!(ledger.snapshot().reserved, 0);
}

#[tokio::test(start_paused = true)]
async fn a_retry_takes_a_new_permit_and_a_new_reservation() {
    let ledger = Ledger::new(10, Window::lifetime());
    let recorder = Arc::new(Recorder::default());
    let layer = ClientStackLayer::builder(limiter(1))
        .retry(quick_retries(3))
        .budget(BudgetLayer::new(ledger.clone()))
        .build();
    let stack = layer.layer(client(
        vec![StatusCode::INTERNAL_SERVER_ERROR, StatusCode::OK],
        Some(ledger.clone()),
        Arc::clone(&recorder),
    ));

    let response = stack.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
    let calls = recorder.calls();
    assert_eq!(calls.len(), 2);
    // The backoff is 10 ms, but the second attempt waited for a second permit at 1/s.
    assert!(calls[1].0 >= Duration::from_millis(999), "{calls:?}");
    // Each attempt held exactly its own reservation: the 500's was refunded, a new one made.
    assert_eq!(calls[0].1, 1);
    assert_eq!(calls[1].1, 1);
    assert_eq!(spent(&ledger), 1, "only the 200 is charged");
    assert_eq!(ledger.snapshot().reserved, 0);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_ends_the_retries() {
    let recorder = Arc::new(Recorder::default());
    let breaker = BreakerLayer::new(
        BreakerConfig::builder()
            .consecutive_failures(2)
            .open_duration(OpenDuration::fixed(Duration::from_secs(30)))
            .build()
            .unwrap(),
    );
    let layer = ClientStackLayer::builder(limiter(100))
        .retry(quick_retries(10))
        .breaker(breaker)
        .build();
    let stack = layer.layer(client(
        vec![StatusCode::BAD_GATEWAY],
        None,
        Arc::clone(&recorder),
    ));

    let outcome = stack.clone().oneshot(get()).await;
    assert_eq!(
        recorder.calls().len(),
        2,
        "two failures open the breaker; the third attempt is refused, not sent"
    );
    assert_eq!(layer.breaker().unwrap().state(), State::Open);
    match outcome {
        Err(error) => assert!(find_cause::<CircuitOpen>(&*error).is_some(), "{error}"),
        Ok(response) => assert_eq!(response.status(), StatusCode::BAD_GATEWAY),
    }

    // The next request fails fast, and is not retried either.
    let started = Instant::now();
    let error = stack.oneshot(get()).await.unwrap_err();
    assert!(find_cause::<CircuitOpen>(&*error).is_some(), "{error}");
    assert_eq!(recorder.calls().len(), 2);
    assert!(started.elapsed() < Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn a_402_latches_the_budget_and_is_not_retried() {
    let ledger = Ledger::new(100, Window::lifetime());
    let recorder = Arc::new(Recorder::default());
    let layer = ClientStackLayer::builder(limiter(1))
        .retry(quick_retries(5))
        .budget(BudgetLayer::new(ledger.clone()))
        .build();
    let stack = layer.layer(client(
        vec![StatusCode::PAYMENT_REQUIRED],
        Some(ledger.clone()),
        Arc::clone(&recorder),
    ));

    let response = stack.clone().oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(Attempts::of(&response), 1);
    assert_eq!(recorder.calls().len(), 1, "a 402 is never retried");
    assert!(ledger.is_latched());
    assert_eq!(spent(&ledger), 0);

    let started = Instant::now();
    let error = stack.oneshot(get()).await.unwrap_err();
    let exhausted = find_cause::<BudgetExhausted>(&*error).expect("refused by the budget");
    assert_eq!(exhausted.reason(), ExhaustedReason::Upstream402);
    assert_eq!(recorder.calls().len(), 1, "nothing more reaches the API");
    // The budget decides before the limiter below it is asked for a permit: refused at once,
    // without waiting the second the next permit is away.
    assert_eq!(started.elapsed(), Duration::ZERO, "refused before any wait");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        layer.limiter().check().is_ok(),
        "the refused request took no permit"
    );
}

#[tokio::test(start_paused = true)]
async fn without_optional_layers_the_body_passes_through() {
    let recorder = Arc::new(Recorder::default());
    let layer = ClientStackLayer::builder(limiter(10)).build();
    assert!(layer.breaker().is_none() && layer.ledger().is_none() && layer.cache().is_none());
    let mut stack: ClientStack<_, _> =
        layer.layer(client(vec![StatusCode::OK], None, Arc::clone(&recorder)));
    let _: &_ = stack.get_ref();
    let _: &mut _ = stack.get_mut();
    let response = stack.ready().await.unwrap().call(get()).await.unwrap();
    assert!(response.headers().get("x-tollway-cache").is_none());
    let body = response.into_body();
    assert!(!body.is_buffered());
    assert_eq!(body.collect().await.unwrap().to_bytes(), "{\"page\": 1}");
}

/// The rustc limitation: a client whose error is a `BoxError`, awaited in `tokio::spawn`.
#[tokio::test(start_paused = true)]
async fn the_boxed_stack_runs_inside_tokio_spawn_over_a_box_error_client() {
    let dir = tempfile::tempdir().unwrap();
    let layer = ClientStackLayer::builder(limiter(10))
        .retry(quick_retries(3))
        .breaker(BreakerLayer::new(BreakerConfig::default()))
        .budget(BudgetLayer::new(Ledger::new(10, Window::lifetime())))
        .cache(CacheLayer::builder(dir.path()).build().unwrap())
        .build();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let boxed_error_client = tower::service_fn(move |_: Request<ReplayBody<Body>>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                return Err::<Response<Body>, BoxError>("connection reset".into());
            }
            Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    });
    let stack = layer.layer(boxed_error_client).boxed();
    let handle = tokio::spawn(async move { stack.oneshot(get()).await });
    let response = handle.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn clones_of_the_layer_share_every_layer() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::new(5, Window::lifetime());
    let layer = ClientStackLayer::builder(limiter(10))
        .breaker(BreakerLayer::new(BreakerConfig::default()))
        .budget(BudgetLayer::new(ledger.clone()))
        .cache(CacheLayer::builder(dir.path()).build().unwrap())
        .build();
    let clone = layer.clone();
    clone.breaker().unwrap().force_open();
    assert_eq!(layer.breaker().unwrap().state(), State::Open);
    clone.limiter().set_rate(Quota::per_second(3));
    assert_eq!(layer.limiter().quotas()[0], Quota::per_second(3).burst(1));
    clone.ledger().unwrap().latch();
    assert!(ledger.is_latched());
    assert_eq!(clone.cache().unwrap().dir(), layer.cache().unwrap().dir());
    assert!(format!("{layer:?}").contains("ClientStackLayer"));
}

/// A client whose first answer, after 100 ms, is `429 Retry-After: 120`; then 200s.
fn pausing_client() -> impl Service<
    Request<ReplayBody<Body>>,
    Response = Response<Body>,
    Error = std::io::Error,
    Future: Send,
> + Clone
+ Send
+ Sync
+ 'static {
    let n = Arc::new(AtomicU32::new(0));
    tower::service_fn(move |_request: Request<ReplayBody<Body>>| {
        let first = n.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            let response = if first {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .header("retry-after", "120")
            } else {
                Response::builder().status(StatusCode::OK)
            };
            Ok(response.body(Full::new(Bytes::new())).unwrap())
        }
    })
}

/// Rename-issue item 6, the limiter side: a long pause the upstream orders never holds a
/// caller past the stack's `max_wait`. One already queued when the 429 arrives fails at its
/// turn, one that comes later fails at once; both get `RateLimited` with the time left.
#[tokio::test(start_paused = true)]
async fn a_long_upstream_pause_fails_callers_at_once_with_the_time_left() {
    let limiter = RateLimiter::builder(Quota::per_second(1).burst(1))
        .adaptive(tollway::limiter::Adaptive::new())
        .clock(TokioClock)
        .build();
    let layer = ClientStackLayer::builder(limiter)
        .retry(quick_retries(1))
        .max_wait(Duration::from_secs(10))
        .build();
    let stack = layer.layer(pausing_client());
    let start = Instant::now();
    let first = tokio::spawn(stack.clone().oneshot(get()));
    tokio::task::yield_now().await;
    // Queued behind the first (one a second) when the 429 comes back at 100 ms.
    let queued = tokio::spawn(stack.clone().oneshot(get()));
    let answer = first.await.unwrap().unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    let refused = queued.await.unwrap().unwrap_err();
    let refused = find_cause::<tollway::core::RateLimited>(&*refused).expect("RateLimited");
    assert!(
        refused.retry_after() > Duration::from_secs(119),
        "{refused:?}"
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "failed when the pause came"
    );

    let later = stack.clone().oneshot(get()).await.unwrap_err();
    let later = find_cause::<tollway::core::RateLimited>(&*later).expect("RateLimited");
    assert!(later.retry_after() > Duration::from_secs(119), "{later:?}");
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "no wait at all"
    );
    assert_eq!(layer.max_wait(), Duration::from_secs(10));
}

#[test]
fn waits_are_bounded_by_default() {
    let layer = ClientStackLayer::builder(RateLimiter::new(Quota::per_second(1).burst(1))).build();
    assert_eq!(layer.max_wait(), tollway::stack::DEFAULT_MAX_WAIT);
}
