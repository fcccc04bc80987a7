//! tollway-limiter's fleet mode: one permit per round trip to Redis over loopback, beside a
//! bare `PING` round trip on the same connection (the floor any Redis-backed limiter pays).
//!
//! Run with `cargo bench -p tollway-benches --bench redis_limiter`. Ids (group/function):
//! `redis_limiter/acquire`, `redis_limiter/acquire_leased` (8 permits per round trip) and
//! `redis_limiter/ping`. Redis is `TOLLWAY_REDIS_URL`, or a
//! `redis-server` started here on a free loopback port; without either the bench prints a notice
//! and measures nothing.
#![allow(clippy::print_stderr)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tollway_limiter::redis::aio::ConnectionManager;
use tollway_limiter::{Quota, RateLimiter};
use tollway_test_support::TestRedis;

fn redis_limiter(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let Some(server) = runtime.block_on(TestRedis::shared_or_own()) else {
        eprintln!("redis_limiter: no Redis; nothing measured");
        return;
    };
    let url = server.url().to_owned();
    let Some(connection) = runtime.block_on(async {
        let client = tollway_limiter::redis::Client::open(url.as_str()).ok()?;
        ConnectionManager::new(client).await.ok()
    }) else {
        eprintln!("redis_limiter: Redis at {url} does not answer; nothing measured");
        return;
    };
    // Never refuses: every acquire is exactly one script run.
    let max = NonZeroU32::MAX;
    let limiter = RateLimiter::builder(Quota::per_second(max.get()).burst(max.get()))
        .redis(connection.clone(), format!("bench-{}", std::process::id()));

    let mut group = c.benchmark_group("redis_limiter");
    group.bench_function("acquire", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(limiter.acquire().await).expect("always admitted");
                }
                start.elapsed()
            })
        });
    });
    // Eight permits per round trip: the cost of a permit spent from a local lease.
    let leased = RateLimiter::builder(Quota::per_second(max.get()).burst(max.get()))
        .lease(NonZeroU32::new(8).unwrap(), Duration::from_millis(100))
        .redis(
            connection.clone(),
            format!("bench-leased-{}", std::process::id()),
        );
    group.bench_function("acquire_leased", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(leased.acquire().await).expect("always admitted");
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

criterion_group!(benches, redis_limiter);
criterion_main!(benches);
