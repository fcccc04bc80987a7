//! The retry layer's cost when the first attempt succeeds (the common case), side by side with
//! the bare service and tower's `Retry` with an equivalent policy (idempotent requests only,
//! tollway's classifier, a `TpsBudget`, exponential backoff).
//!
//! Run with `cargo bench -p tollway-benches --bench retry`.

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::Full;
use tokio::runtime::Builder;
use tollway_core::idempotency::is_safe_to_resend;
use tollway_core::{Classifier, Classify};
use tollway_retry::backoff::{Backoff, Jitter};
use tollway_retry::{RetryBudget, RetryLayer, RetryPolicy};
use tower::retry::backoff::{
    Backoff as _, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff,
};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::rng::HasherRng;
use tower::{Layer, Service, ServiceExt};

type Body = Full<Bytes>;

fn request() -> Request<Body> {
    Request::get("http://api.example/v2/user/followers?user_id=42&page_id=0")
        .header("x-access-key", "secret")
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

/// An upstream that answers 200 at once.
#[derive(Clone, Copy)]
struct Upstream;

impl<B> Service<Request<B>> for Upstream {
    type Response = Response<()>;
    type Error = std::io::Error;
    type Future = Ready<Result<Response<()>, std::io::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        drop(black_box(request));
        ready(Ok(Response::new(())))
    }
}

/// tower's retry with the same rules: idempotent requests, core's classifier, a budget,
/// exponential backoff with jitter, three attempts.
#[derive(Clone)]
struct TowerPolicy {
    budget: Arc<TpsBudget>,
    classifier: Classifier,
    backoff: ExponentialBackoff,
    attempts_left: u32,
}

impl TowerPolicy {
    fn new() -> Self {
        let mut maker = ExponentialBackoffMaker::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
            0.99,
            HasherRng::default(),
        )
        .expect("valid backoff");
        Self {
            budget: Arc::new(TpsBudget::default()),
            classifier: Classifier::default(),
            backoff: maker.make_backoff(),
            attempts_left: 2,
        }
    }
}

impl tower::retry::Policy<Request<Body>, Response<()>, std::io::Error> for TowerPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut Request<Body>,
        result: &mut Result<Response<()>, std::io::Error>,
    ) -> Option<Self::Future> {
        let outcome = match result {
            Ok(response) => self.classifier.classify(response),
            Err(error) => self.classifier.classify_error(error),
        };
        if !outcome.is_retryable() {
            self.budget.deposit();
            return None;
        }
        if self.attempts_left == 0 || !self.budget.withdraw() {
            return None;
        }
        self.attempts_left -= 1;
        Some(self.backoff.next_backoff())
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        is_safe_to_resend(request).then(|| request.clone())
    }
}

/// Every future here is ready at once (first-try success), so it is polled once in place of a
/// runtime's `block_on`, whose cost would drown the layers'. The runtime is entered for
/// tokio's clock.
fn once<F: Future>(future: F) -> F::Output {
    future
        .now_or_never()
        .expect("first-try success completes at once")
}

fn bench_retry(c: &mut Criterion) {
    let runtime = Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("retry");

    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .backoff(
            Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10))
                .with_jitter(Jitter::Full),
        )
        .budget(RetryBudget::default())
        .build()
        .expect("valid policy");
    let mut tollway = RetryLayer::new(policy).layer(Upstream);
    group.bench_function("success_path", |b| {
        b.iter_batched(
            request,
            |request| {
                once(async {
                    let response = ServiceExt::<Request<Body>>::ready(&mut tollway)
                        .await
                        .unwrap()
                        .call(request)
                        .await;
                    black_box(response.unwrap())
                })
            },
            BatchSize::SmallInput,
        );
    });

    let mut bare = Upstream;
    group.bench_function("bare", |b| {
        b.iter_batched(
            request,
            |request| {
                once(async {
                    let response = ServiceExt::<Request<Body>>::ready(&mut bare)
                        .await
                        .unwrap()
                        .call(request)
                        .await;
                    black_box(response.unwrap())
                })
            },
            BatchSize::SmallInput,
        );
    });

    let mut tower_retry = tower::retry::RetryLayer::new(TowerPolicy::new()).layer(Upstream);
    group.bench_function("tower_retry", |b| {
        b.iter_batched(
            request,
            |request| {
                once(async {
                    let response = tower_retry.ready().await.unwrap().call(request).await;
                    black_box(response.unwrap())
                })
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_retry);
criterion_main!(benches);
