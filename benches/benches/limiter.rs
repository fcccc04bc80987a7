//! tollway-limiter side by side with governor (and tower's `RateLimit` for the layer).
//!
//! Run with `cargo bench -p tollway-benches --bench limiter`. Ids (group/function):
//! `limiter_acquire`, `limiter_deny`, `limiter_contended_2t`, `limiter_keyed_10k` with
//! `tollway` and `governor`; `layer_overhead` with `bare`, `tollway`, `tower_rate_limit`.
//! Both limiters read their default (TSC-based) clocks, as users run them.

use std::convert::Infallible;
use std::hint::black_box;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Barrier;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::task::noop_waker_ref;
use std::future::Future;
use tollway_limiter::{LimiterLayer, Quota, RateLimiter};
use tower::{Layer, Service, service_fn};

const KEYS: u64 = 10_000;

fn always_allow() -> (Quota, governor::Quota) {
    let max = NonZeroU32::MAX;
    (
        Quota::per_second(max.get()).burst(max.get()),
        governor::Quota::per_second(max),
    )
}

fn always_deny() -> (Quota, governor::Quota) {
    let one = NonZeroU32::MIN;
    (Quota::per_hour(1).burst(1), governor::Quota::per_hour(one))
}

fn acquire(c: &mut Criterion) {
    let (ours, theirs) = always_allow();
    let tollway = RateLimiter::new(ours);
    let governor = governor::RateLimiter::direct(theirs);
    let mut group = c.benchmark_group("limiter_acquire");
    group.bench_function("tollway", |b| {
        b.iter(|| black_box(tollway.check()).is_ok());
    });
    group.bench_function("governor", |b| {
        b.iter(|| black_box(governor.check()).is_ok());
    });
    group.finish();
}

fn deny(c: &mut Criterion) {
    let (ours, theirs) = always_deny();
    let tollway = RateLimiter::new(ours);
    let governor = governor::RateLimiter::direct(theirs);
    assert!(tollway.check().is_ok() && tollway.check().is_err());
    assert!(governor.check().is_ok() && governor.check().is_err());
    let mut group = c.benchmark_group("limiter_deny");
    group.bench_function("tollway", |b| {
        b.iter(|| black_box(tollway.check()).is_err());
    });
    group.bench_function("governor", |b| {
        b.iter(|| black_box(governor.check()).is_err());
    });
    group.finish();
}

/// Two threads, each doing `iters` operations on one shared limiter; the time reported is the
/// wall time divided by `iters` (time per operation per thread).
fn two_threads(iters: u64, op: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                barrier.wait();
                for _ in 0..iters {
                    op();
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn contended(c: &mut Criterion) {
    let (ours, theirs) = always_allow();
    let tollway = RateLimiter::new(ours);
    let governor = governor::RateLimiter::direct(theirs);
    let mut group = c.benchmark_group("limiter_contended_2t");
    group.bench_function("tollway", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                let _ = black_box(tollway.check());
            })
        });
    });
    group.bench_function("governor", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                let _ = black_box(governor.check());
            })
        });
    });
    group.finish();
}

/// A fixed pseudo-random sequence of keys (xorshift), the same for both limiters.
fn random_keys() -> Vec<u64> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..65_536)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % KEYS
        })
        .collect()
}

fn keyed(c: &mut Criterion) {
    let (ours, theirs) = always_allow();
    let tollway = RateLimiter::builder(ours)
        .build_keyed::<u64>(NonZeroUsize::new(2 * KEYS as usize).unwrap());
    let governor = governor::RateLimiter::keyed(theirs);
    for key in 0..KEYS {
        assert!(tollway.check(&key).is_ok());
        assert!(governor.check_key(&key).is_ok());
    }
    let keys = random_keys();
    let mut group = c.benchmark_group("limiter_keyed_10k");
    group.bench_function("tollway", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 65_535;
            black_box(tollway.check(&keys[i])).is_ok()
        });
    });
    group.bench_function("governor", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 65_535;
            black_box(governor.check_key(&keys[i])).is_ok()
        });
    });
    group.finish();
}

/// `poll_ready` + `call` + polling the (ready) response future once.
fn ready_call<S>(service: &mut S)
where
    S: Service<http::Request<()>, Response = http::Response<()>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(noop_waker_ref());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the benchmark's service must be ready"),
    }
    // Polled where it lies, as a caller's `.await` would: moving the future by value into a
    // helper (`now_or_never`) costs every implementation a copy that no real caller pays.
    let response = std::pin::pin!(service.call(http::Request::new(())));
    match response.poll(&mut cx) {
        Poll::Ready(result) => black_box(result.expect("ok")),
        Poll::Pending => panic!("the benchmark's service must answer at once"),
    };
}

fn layer_overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let noop =
        service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(())) });
    let mut group = c.benchmark_group("layer_overhead");
    group.bench_function("bare", |b| {
        let mut service = noop;
        b.iter(|| ready_call(&mut service));
    });
    group.bench_function("tollway", |b| {
        let mut service = LimiterLayer::new(always_allow().0).layer(noop);
        b.iter(|| ready_call(&mut service));
    });
    group.bench_function("tower_rate_limit", |b| {
        let rate = tower::limit::rate::Rate::new(u64::MAX, Duration::from_secs(1));
        let mut service = tower::limit::RateLimit::new(noop, rate);
        b.iter(|| ready_call(&mut service));
    });
    group.finish();
}

fn bench_all(c: &mut Criterion) {
    acquire(c);
    deny(c);
    contended(c);
    keyed(c);
    layer_overhead(c);
}

criterion_group!(benches, bench_all);
criterion_main!(benches);
