//! tollway-limiter's server side side by side with tower-governor: the admission path of one
//! request through the tower service (key from the peer IP, bucket check, inner call), with
//! 10,000 client addresses active.
//!
//! Run with `cargo bench -p tollway-benches --bench limiter_server`. Ids (group/function):
//! `limiter_server` (no rate-limit headers, tower-governor's default) and
//! `limiter_server_headers` (legacy `x-ratelimit-*` headers on allowed responses, as
//! tower-governor's `use_headers` writes them), each with `tollway` and `tower_governor`, plus
//! `limiter_server_headers/tollway_ietf_and_legacy` (every header tollway writes). Both limiters always admit (a huge burst), so only the admission path is
//! timed; building the request happens outside the timed section.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;

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

criterion_group!(benches, admission, admission_with_headers);
criterion_main!(benches);
