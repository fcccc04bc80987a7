//! tollway-breaker side by side with tower-resilience's circuit breaker.
//!
//! Run with `cargo bench -p tollway-benches --bench breaker`. Ids (group/function):
//! `breaker/bare` (the ready no-op inner service alone), `breaker/closed_path` (tollway's
//! breaker, closed, default configuration), `breaker/tower_resilience` (tower-resilience 0.13,
//! closed, the same thresholds: 50% over the last 100 calls once 20 are seen);
//! `breaker_open/tollway` and `breaker_open/tower_resilience`: a forced-open breaker rejecting.
//! Each iteration is `poll_ready` + `call` + one poll of the (ready) response future.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::task::noop_waker_ref;
use tollway_breaker::{BreakerConfig, BreakerLayer};
use tower::{Layer, Service, service_fn};
use tower_resilience::circuitbreaker::CircuitBreakerLayer;

/// `poll_ready` + `call` + polling the response future once; whether it succeeded.
fn ready_call<S>(service: &mut S) -> bool
where
    S: Service<http::Request<()>, Response = http::Response<()>>,
{
    let mut cx = Context::from_waker(noop_waker_ref());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the benchmark's service must be ready"),
    }
    // Polled where it lies, as a caller's `.await` would: moving the future by value into a
    // helper costs every implementation a copy that no real caller pays.
    let response = std::pin::pin!(service.call(http::Request::new(())));
    match response.poll(&mut cx) {
        Poll::Ready(result) => black_box(result).is_ok(),
        Poll::Pending => panic!("the benchmark's service must answer at once"),
    }
}

fn tower_resilience_layer() -> (
    CircuitBreakerLayer,
    tower_resilience::circuitbreaker::CircuitBreakerHandle,
) {
    CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .minimum_number_of_calls(20)
        .build_with_handle()
        .expect("valid tower-resilience config")
}

fn closed(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let noop =
        service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(())) });
    let mut group = c.benchmark_group("breaker");
    group.bench_function("bare", |b| {
        let mut service = noop;
        b.iter(|| assert!(ready_call(&mut service)));
    });
    group.bench_function("closed_path", |b| {
        let layer = BreakerLayer::new(BreakerConfig::default());
        let mut service = layer.layer(noop);
        b.iter(|| assert!(ready_call(&mut service)));
    });
    group.bench_function("tower_resilience", |b| {
        let (layer, _handle) = tower_resilience_layer();
        let mut service = layer.layer(noop);
        b.iter(|| assert!(ready_call(&mut service)));
    });
    group.finish();
}

fn open(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let noop =
        service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(())) });
    let mut group = c.benchmark_group("breaker_open");
    group.bench_function("tollway", |b| {
        let layer = BreakerLayer::new(BreakerConfig::default());
        layer.handle().force_open();
        let mut service = layer.layer(noop);
        b.iter(|| assert!(!ready_call(&mut service)));
    });
    group.bench_function("tower_resilience", |b| {
        let (layer, handle) = tower_resilience_layer();
        runtime.block_on(handle.force_open());
        let mut service = layer.layer(noop);
        b.iter(|| assert!(!ready_call(&mut service)));
    });
    group.finish();
}

fn bench_all(c: &mut Criterion) {
    closed(c);
    open(c);
}

criterion_group!(benches, bench_all);
criterion_main!(benches);
