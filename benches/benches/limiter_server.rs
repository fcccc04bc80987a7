//! tollway-limiter's server side side by side with tower-governor: the admission path of one
//! request through the tower service (key from the peer IP, bucket check, inner call), with
//! 10,000 client addresses active.
//!
//! Run with `cargo bench -p tollway-benches --bench limiter_server`. Ids (group/function):
//! `limiter_server` (no rate-limit headers, tower-governor's default) and
//! `limiter_server_headers` (legacy `x-ratelimit-*` headers on allowed responses, as
//! tower-governor's `use_headers` writes them), each with `tollway` and `tower_governor`, plus
//! `limiter_server_headers/tollway_ietf_and_legacy` (every header tollway writes). Both
//! limiters always admit (a huge burst), so only the admission path is timed; building the
//! request happens outside the timed section.
//!
//! `limiter_server/flood_filling` and `limiter_server/flood_full`: a flood of distinct client
//! addresses (one IPv6 /64 each) against an hourly quota, so no key is ever idle: the cost of
//! a new key while the key map fills, and once it is full (each new key then evicts one).
//!
//! `limiter_server_redis/tollway_redis`: the same layer with its limits in Redis (a server
//! fleet: one script run per request), 10,000 keys, beside `tollway_memory` and a bare `ping`
//! round trip on the same connection. Redis is `TOLLWAY_REDIS_URL`, or a server started here;
//! without one the group is skipped.

#![allow(clippy::print_stderr)]

use std::convert::Infallible;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use tollway_limiter::Quota;
use tollway_limiter::server::{HeaderOptions, Limit, PeerIp, ServerLimiterLayer};
use tower::{Layer, Service, service_fn};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;

const KEYS: u32 = 10_000;

fn request(i: u32) -> Request<Body> {
    let mut request = Request::get("/hello").body(Body::empty()).unwrap();
    let ip = IpAddr::V4(Ipv4Addr::from_bits(0x0A00_0000 + i % KEYS));
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
    request
}

fn inner() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Body>, Infallible>>,
> + Clone {
    service_fn(|_req: Request<Body>| std::future::ready(Ok(Response::new(Body::empty()))))
}

/// Times `call` + completion of `service` on requests from 10,000 addresses in turn, after one
/// warm-up round that creates every key.
fn bench_service<S>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    mut service: S,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    for i in 0..KEYS {
        let response = service.call(request(i)).now_or_never().unwrap().unwrap();
        assert!(
            response.status().is_success(),
            "{id} refused during warm-up"
        );
    }
    let mut next = 0u32;
    c.bench_function(id, |b| {
        b.iter_batched(
            || {
                next = next.wrapping_add(1);
                request(next)
            },
            |request| {
                let response = service.call(request).now_or_never();
                black_box(response)
            },
            BatchSize::SmallInput,
        );
    });
}

fn tollway_layer(headers: HeaderOptions) -> ServerLimiterLayer {
    let quota = Quota::per_second(100).burst(u32::MAX);
    ServerLimiterLayer::builder()
        .limit(Limit::new("per-ip", PeerIp::new(), quota))
        .max_keys(NonZeroUsize::new(2 * KEYS as usize).unwrap())
        .headers(headers)
        .build()
        .unwrap()
}

fn admission(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter_server");
    bench_service(
        &mut group,
        "tollway",
        tollway_layer(HeaderOptions::none()).layer(inner()),
    );
    let config = GovernorConfigBuilder::default()
        .per_millisecond(10)
        .burst_size(u32::MAX)
        .finish()
        .unwrap();
    bench_service(
        &mut group,
        "tower_governor",
        GovernorLayer::new(config).layer(inner()),
    );
    group.finish();
}

fn admission_with_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter_server_headers");
    bench_service(
        &mut group,
        "tollway",
        tollway_layer(HeaderOptions::none().legacy(true).on_allowed(true)).layer(inner()),
    );
    bench_service(
        &mut group,
        "tollway_ietf_and_legacy",
        tollway_layer(HeaderOptions::all()).layer(inner()),
    );
    let config = GovernorConfigBuilder::default()
        .per_millisecond(10)
        .burst_size(u32::MAX)
        .use_headers()
        .finish()
        .unwrap();
    bench_service(
        &mut group,
        "tower_governor",
        GovernorLayer::new(config).layer(inner()),
    );
    group.finish();
}

/// A client from its own IPv6 /64.
fn flood_request(i: u64) -> Request<Body> {
    let ip = IpAddr::V6(Ipv6Addr::from_bits(
        0x2001_0db8_u128 << 96 | u128::from(i) << 64,
    ));
    let mut request = Request::get("/hello").body(Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
    request
}

fn flood_layer(max_keys: usize) -> ServerLimiterLayer {
    ServerLimiterLayer::builder()
        .limit(Limit::new(
            "per-ip",
            PeerIp::new(),
            Quota::per_hour(1).burst(1),
        ))
        .max_keys(NonZeroUsize::new(max_keys).unwrap())
        .headers(HeaderOptions::none())
        .build()
        .unwrap()
}

/// Sends `iters` requests from new addresses starting at `*next`, timing only the calls
/// (requests are built 1,024 at a time outside the timed part).
fn time_new_keys<S>(service: &mut S, next: &mut u64, iters: u64) -> Duration
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(1_024);
        let requests: Vec<_> = (*next..*next + n).map(flood_request).collect();
        *next += n;
        left -= n;
        let start = Instant::now();
        for request in requests {
            black_box(service.call(request).now_or_never());
        }
        total += start.elapsed();
    }
    total
}

fn flood(c: &mut Criterion) {
    const FULL_AT: usize = 100_000;
    let mut group = c.benchmark_group("limiter_server");
    group.bench_function("flood_filling", |b| {
        b.iter_custom(|iters| {
            // A fresh map each sample, large enough never to fill during it.
            let mut service = flood_layer(iters as usize + 1).layer(inner());
            time_new_keys(&mut service, &mut 0, iters)
        });
    });
    let layer = flood_layer(FULL_AT);
    let mut service = layer.layer(inner());
    let mut next = 0;
    time_new_keys(&mut service, &mut next, 3 * FULL_AT as u64);
    assert!(layer.tracked_keys() > FULL_AT * 9 / 10, "the map is full");
    group.bench_function("flood_full", |b| {
        b.iter_custom(|iters| time_new_keys(&mut service, &mut next, iters));
    });
    group.finish();
}

/// The layer with its limits in Redis (a server fleet), 10,000 keys, beside the same layer in
/// memory and a bare `PING` round trip on the same connection: one script run per request.
fn admission_in_redis(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let Some(server) = runtime.block_on(tollway_test_support::TestRedis::shared_or_own()) else {
        eprintln!("limiter_server_redis: no Redis; nothing measured");
        return;
    };
    let connection = runtime.block_on(server.connect());
    let quota = Quota::per_second(100).burst(u32::MAX);
    let layer = ServerLimiterLayer::builder()
        .limit(Limit::new("per-ip", PeerIp::new(), quota))
        .headers(HeaderOptions::none())
        .redis(
            connection.clone(),
            format!("bench-server-{}", std::process::id()),
        )
        .build()
        .unwrap();
    let mut service = layer.layer(inner());
    let mut group = c.benchmark_group("limiter_server_redis");
    runtime.block_on(async {
        for i in 0..KEYS {
            let response = service.call(request(i)).await.unwrap();
            assert!(response.status().is_success(), "refused during warm-up");
        }
    });
    let mut next = 0_u32;
    group.bench_function("tollway_redis", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    next = next.wrapping_add(1);
                    black_box(service.call(request(next)).await.unwrap());
                }
                start.elapsed()
            })
        });
    });
    let mut memory = tollway_layer(HeaderOptions::none()).layer(inner());
    group.bench_function("tollway_memory", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    next = next.wrapping_add(1);
                    black_box(memory.call(request(next)).await.unwrap());
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("ping", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut connection = connection.clone();
                let start = Instant::now();
                for _ in 0..iters {
                    let pong: String = tollway_limiter::redis::cmd("PING")
                        .query_async(&mut connection)
                        .await
                        .expect("PONG");
                    black_box(pong);
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    admission,
    admission_with_headers,
    flood,
    admission_in_redis
);
criterion_main!(benches);
