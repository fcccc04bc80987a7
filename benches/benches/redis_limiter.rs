//! tollway-limiter's fleet mode: one permit per round trip to Redis over loopback, beside a
//! bare `PING` round trip on the same connection (the floor any Redis-backed limiter pays), on
//! one server and on a 3-node Redis Cluster.
//!
//! Run with `cargo bench -p tollway-benches --bench redis_limiter`. Ids (group/function):
//! `redis_limiter/acquire`, `redis_limiter/acquire_leased` (16 permits per round trip),
//! `redis_limiter/ping`, and the same under `redis_limiter_cluster/`. After each group it
//! prints the round trips (script runs, from the server's own command statistics) per permit
//! of both. Redis is `TOLLWAY_REDIS_URL` / `TOLLWAY_REDIS_CLUSTER_URLS`, or servers started
//! here on free loopback ports; without them the bench prints a notice and measures nothing.
#![allow(clippy::print_stderr)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tollway_limiter::redis::aio::ConnectionLike;
use tollway_limiter::{Quota, RateLimiter};
use tollway_test_support::{TestCluster, TestRedis};

/// How many scripts the servers at `urls` ran so far (`EVALSHA` and `EVAL`).
fn script_runs(runtime: &Runtime, urls: &[String]) -> u64 {
    runtime.block_on(async {
        let mut total = 0;
        for url in urls {
            let mut connection = tollway_test_support::connect(url).await;
            let info: String = tollway_limiter::redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut connection)
                .await
                .expect("INFO");
            total += info
                .lines()
                .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
                .filter_map(|l| l.split("calls=").nth(1))
                .filter_map(|rest| rest.split(',').next())
                .filter_map(|calls| calls.parse::<u64>().ok())
                .sum::<u64>();
        }
        total
    })
}

fn bench_group<Conn>(
    c: &mut Criterion,
    runtime: &Runtime,
    group_name: &str,
    connection: &Conn,
    urls: &[String],
) where
    Conn: ConnectionLike + Clone + Send + Sync + 'static,
{
    // Never refuses: every acquire is exactly one script run.
    let max = NonZeroU32::MAX;
    let plain = RateLimiter::builder(Quota::per_second(max.get()).burst(max.get())).redis(
        connection.clone(),
        format!("bench-{group_name}-{}", std::process::id()),
    );
    // Sixteen permits per round trip: the cost of a permit spent from a local lease.
    let leased = RateLimiter::builder(Quota::per_second(max.get()).burst(max.get()))
        .lease(NonZeroU32::new(16).unwrap(), Duration::from_millis(100))
        .redis(
            connection.clone(),
            format!("bench-leased-{group_name}-{}", std::process::id()),
        );
    let mut group = c.benchmark_group(group_name);
    let mut permits = [0_u64; 2];
    let mut runs = [0_u64; 2];
    for (index, (id, limiter)) in [("acquire", &plain), ("acquire_leased", &leased)]
        .into_iter()
        .enumerate()
    {
        let before = script_runs(runtime, urls);
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                permits[index] += iters;
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(limiter.acquire().await).expect("always admitted");
                    }
                    start.elapsed()
                })
            });
        });
        runs[index] = script_runs(runtime, urls) - before;
    }
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
    let per_permit = |i: usize| runs[i] as f64 / permits[i].max(1) as f64;
    eprintln!(
        "{group_name}: round trips per permit: acquire {:.3}, acquire_leased {:.3} ({:.1}x fewer)",
        per_permit(0),
        per_permit(1),
        per_permit(0) / per_permit(1).max(f64::MIN_POSITIVE)
    );
}

fn redis_limiter(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(TestRedis::shared_or_own()) {
        Some(server) => {
            let connection = runtime.block_on(server.connect());
            bench_group(
                c,
                &runtime,
                "redis_limiter",
                &connection,
                &[server.url().to_owned()],
            );
        }
        None => eprintln!("redis_limiter: no Redis; nothing measured"),
    }
    match runtime.block_on(TestCluster::shared_or_own()) {
        Some(cluster) => {
            let connection = runtime.block_on(cluster.connect());
            bench_group(
                c,
                &runtime,
                "redis_limiter_cluster",
                &connection,
                cluster.urls(),
            );
        }
        None => eprintln!("redis_limiter_cluster: no Redis Cluster; nothing measured"),
    }
}

criterion_group!(benches, redis_limiter);
criterion_main!(benches);
