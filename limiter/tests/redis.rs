//! Fleet mode against a real `redis-server`: `TOLLWAY_REDIS_URL` if set, else a server this file
//! starts on a free loopback port. Without either the tests print a notice and pass, unless
//! `TOLLWAY_REQUIRE_REDIS=1`. Every test uses its own random key prefix. Redis keeps its own
//! clock, so these run on real time, with margins a correct implementation never misses.
#![cfg(feature = "redis")]
#![allow(clippy::print_stderr)]

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tollway_core::RateLimited;
use tollway_limiter::fleet::FleetLimiter;
use tollway_limiter::redis;
use tollway_limiter::redis::aio::ConnectionManager;
use tollway_limiter::{LimiterLayer, Quota, RateLimiter, RateLimiterBuilder, StoreUnavailable};
use tollway_test_support::{TestRedis, random_prefix};
use tower::{Layer, Service, ServiceExt, service_fn};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// A one-shot check through Redis: a limiter with `max_wait(0)` never waits, so `acquire`
/// answers at once with the permit or with Redis's retry-after.
fn no_wait(
    builder: RateLimiterBuilder<tollway_limiter::QuantaClock>,
) -> RateLimiterBuilder<tollway_limiter::QuantaClock> {
    builder.max_wait(Duration::ZERO)
}

async fn try_once(limiter: &FleetLimiter) -> Result<(), RateLimited> {
    limiter.acquire().await
}

async fn keys(raw: &mut ConnectionManager, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}}}*"))
        .query_async(raw)
        .await
        .unwrap();
    keys.sort();
    keys
}

async fn get(raw: &mut ConnectionManager, key: &str) -> Option<i64> {
    redis::cmd("GET").arg(key).query_async(raw).await.unwrap()
}

#[tokio::test]
async fn burst_and_retry_after_agree_with_the_in_memory_gcra() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let quota = Quota::per_second(10).burst(5);
    let memory = RateLimiter::new(quota);
    let fleet = no_wait(RateLimiter::builder(quota)).redis(server.connect().await, random_prefix());

    let started = Instant::now();
    let mut admitted = (0, 0);
    for _ in 0..8 {
        admitted.0 += usize::from(memory.check().is_ok());
        admitted.1 += usize::from(try_once(&fleet).await.is_ok());
    }
    assert_eq!(admitted, (5, 5), "the burst");
    let local = memory.check().unwrap_err().retry_after();
    let remote = try_once(&fleet).await.unwrap_err().retry_after();
    // The sixth fits one interval (100 ms) after the burst began, on either clock.
    let elapsed = started.elapsed();
    for wait in [local, remote] {
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(
            wait + elapsed >= Duration::from_millis(95),
            "{wait:?} after {elapsed:?}"
        );
    }
    // A synchronous check cannot ask Redis: it refuses and points at `acquire`.
    assert!(fleet.check().is_err());
    assert_eq!(fleet.available(), 0);

    tokio::time::sleep(remote + Duration::from_millis(20)).await;
    assert!(
        try_once(&fleet).await.is_ok(),
        "one more after the retry-after"
    );
    let again = try_once(&fleet).await.unwrap_err().retry_after();
    assert!(
        again > Duration::from_millis(50) && again <= Duration::from_millis(100),
        "{again:?}"
    );
}

#[tokio::test]
async fn two_connections_with_one_prefix_share_one_limit() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let quota = Quota::per_minute(60).burst(4);
    let a = no_wait(RateLimiter::builder(quota)).redis(server.connect().await, &prefix);
    let b = no_wait(RateLimiter::builder(quota)).redis(server.connect().await, &prefix);
    let mut admitted = 0;
    for i in 0..10 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        admitted += usize::from(try_once(limiter).await.is_ok());
    }
    assert_eq!(admitted, 4);
    let other_prefix = format!("{prefix}-other");
    let other = no_wait(RateLimiter::builder(quota)).redis(server.connect().await, other_prefix);
    assert!(
        try_once(&other).await.is_ok(),
        "another prefix is another limit"
    );
}

#[tokio::test]
async fn several_quotas_admit_all_or_nothing() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let limiter = no_wait(
        RateLimiter::builder(Quota::per_second(100).burst(10)).quota(Quota::per_minute(3).burst(3)),
    )
    .redis(server.connect().await, &prefix);
    let mut raw = server.connect().await;

    limiter.acquire_n(nz(3)).unwrap().await.unwrap();
    let key_names = keys(&mut raw, &prefix).await;
    assert_eq!(
        key_names,
        [format!("{{{prefix}}}:0"), format!("{{{prefix}}}:1")]
    );
    let before = (
        get(&mut raw, &key_names[0]).await,
        get(&mut raw, &key_names[1]).await,
    );

    // The minute quota is spent: a cost of 2 is refused by it, and the second quota's refusal
    // leaves the first one untouched.
    let refused = limiter.acquire_n(nz(2)).unwrap().await.unwrap_err();
    let wait = refused.retry_after();
    // Two requests of the minute quota: 40 s from the first admission.
    assert!(
        wait > Duration::from_secs(39) && wait <= Duration::from_secs(40),
        "{wait:?}"
    );
    let after = (
        get(&mut raw, &key_names[0]).await,
        get(&mut raw, &key_names[1]).await,
    );
    assert_eq!(before, after, "a refusal writes nothing");

    // The in-memory limiter says the same.
    let memory = RateLimiter::builder(Quota::per_second(100).burst(10))
        .quota(Quota::per_minute(3).burst(3))
        .build();
    assert!(memory.check_n(nz(3)).unwrap().is_ok());
    let local = memory.check_n(nz(2)).unwrap().unwrap_err().retry_after();
    assert!(local > Duration::from_secs(39) && local <= Duration::from_secs(40));
    // A cost above a burst never fits, in Redis as in memory.
    assert_eq!(limiter.acquire_n(nz(4)).unwrap_err().burst(), 3);
}

#[tokio::test]
async fn keys_expire_when_their_bucket_is_full_again() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let limiter = no_wait(RateLimiter::builder(Quota::per_second(10).burst(5)))
        .redis(server.connect().await, &prefix);
    let mut raw = server.connect().await;
    for _ in 0..3 {
        try_once(&limiter).await.unwrap();
    }
    let key = format!("{{{prefix}}}:0");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    // Three requests' worth of time at 10/s: the bucket is full 300 ms after the first.
    assert!(ttl > 100 && ttl <= 300, "{ttl}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(keys(&mut raw, &prefix).await.is_empty());
    // A fresh key is a full bucket again.
    for _ in 0..5 {
        try_once(&limiter).await.unwrap();
    }
    assert!(try_once(&limiter).await.is_err());
}

#[tokio::test]
async fn a_flushed_script_cache_is_reloaded() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let limiter = no_wait(RateLimiter::builder(Quota::per_minute(60).burst(3)))
        .redis(server.connect().await, random_prefix());
    let mut raw = server.connect().await;
    for _ in 0..3 {
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut raw)
            .await
            .unwrap();
        try_once(&limiter).await.expect("loaded again and admitted");
    }
    // The state survived the flushes: the burst of 3 is spent.
    assert!(try_once(&limiter).await.unwrap_err().retry_after() > Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_spaces_requests_of_two_processes_and_queues_fairly() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let quota = Quota::per_second(20).burst(1);
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for process in 0..2 {
        let limiter = RateLimiter::builder(quota).redis(server.connect().await, &prefix);
        let counted = Arc::clone(&calls);
        let service = LimiterLayer::from_limiter(limiter).layer(service_fn(move |_: ()| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(http::Response::new(())) }
        }));
        for _ in 0..5 {
            let service = service.clone();
            tasks.push(tokio::spawn(async move {
                service.oneshot(()).await.map(|_| process)
            }));
        }
    }
    for task in tasks {
        task.await
            .unwrap()
            .expect("no bound on waiting: every call goes through");
    }
    // Ten requests at 20/s with a burst of 1: nine intervals of 50 ms, whichever process.
    let elapsed = started.elapsed();
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    assert!(elapsed >= Duration::from_millis(445), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[tokio::test]
async fn redis_down_fails_closed_with_a_typed_error() {
    // This test stops its server, so it always runs its own.
    let Some(server) = TestRedis::own().await else {
        return;
    };
    let limiter = RateLimiter::builder(Quota::per_second(100).burst(1))
        .redis(server.connect().await, random_prefix());
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let mut service =
        LimiterLayer::from_limiter(limiter.clone()).layer(service_fn(move |_: ()| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(http::Response::new(())) }
        }));
    service.ready().await.unwrap().call(()).await.unwrap();

    let mut raw = server.connect().await;
    let _ = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async::<()>(&mut raw)
        .await;

    for round in 0..3 {
        let started = Instant::now();
        let err = service.ready().await.unwrap().call(()).await.unwrap_err();
        let unavailable = err
            .downcast_ref::<StoreUnavailable>()
            .unwrap_or_else(|| panic!("expected StoreUnavailable, got {err}"));
        // The first meets the failure (within the store timeout, 1 s); the next ones are
        // answered at once while the store is taken as down.
        let expected = if round == 0 {
            "acquire"
        } else {
            "acquire (store down)"
        };
        assert_eq!(unavailable.operation(), expected);
        let limit = if round == 0 { 3_000 } else { 100 };
        assert!(
            started.elapsed() < Duration::from_millis(limit),
            "{:?}",
            started.elapsed()
        );
    }
    // Fail closed: nothing more reached the inner service.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let mut acquire = limiter.acquire();
    assert!((&mut acquire).await.is_err());
    assert!(acquire.take_store_error().is_some());
}

#[tokio::test]
async fn redis_down_fails_open_to_the_local_quota_when_asked() {
    let Some(server) = TestRedis::own().await else {
        return;
    };
    let limiter = RateLimiter::builder(Quota::per_second(1_000).burst(1))
        .fail_open_to_local(Quota::per_second(5).burst(2))
        .redis(server.connect().await, random_prefix());
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let service = LimiterLayer::from_limiter(limiter.clone()).layer(service_fn(move |_: ()| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(http::Response::new(())) }
    }));
    // Up: Redis's quota (1000/s) admits 20 at once.
    let started = Instant::now();
    for _ in 0..20 {
        service.clone().oneshot(()).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_millis(500));

    let mut raw = server.connect().await;
    let _ = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async::<()>(&mut raw)
        .await;

    // Down: the local quota (5/s, burst 2) admits 2 at once, then one every 200 ms.
    let started = Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|_| tokio::spawn(service.clone().oneshot(())))
        .collect();
    for task in tasks {
        task.await.unwrap().expect("admitted locally, not refused");
    }
    let elapsed = started.elapsed();
    assert_eq!(calls.load(Ordering::SeqCst), 25);
    assert!(elapsed >= Duration::from_millis(590), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // While the store is down, even the synchronous check answers from the local quota.
    assert!(limiter.check().is_err(), "the local burst is spent");
}

/// How many times Redis ran a script (`EVALSHA`, and `EVAL`/`SCRIPT LOAD` if any) so far.
async fn script_runs(raw: &mut ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(raw)
        .await
        .unwrap();
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| line.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next())
        .map(|calls| calls.parse::<u64>().unwrap())
        .sum()
}

/// `tasks` callers of one limiter take `permits` permits in all; returns when each was granted,
/// in order, and how many scripts Redis ran meanwhile.
async fn take_concurrently(
    limiter: &FleetLimiter,
    raw: &mut ConnectionManager,
    tasks: usize,
    permits: usize,
) -> (Vec<Instant>, u64) {
    let before = script_runs(raw).await;
    let left = Arc::new(AtomicUsize::new(permits));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (limiter, left) = (limiter.clone(), Arc::clone(&left));
            tokio::spawn(async move {
                let mut granted = Vec::new();
                while left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    limiter.acquire().await.expect("no bound on waiting");
                    granted.push(Instant::now());
                }
                granted
            })
        })
        .collect();
    let mut granted = Vec::new();
    for handle in handles {
        granted.extend(handle.await.unwrap());
    }
    granted.sort();
    let runs = script_runs(raw).await - before;
    (granted, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_cuts_round_trips_and_never_bunches_requests() {
    // Counts the server's script runs, so it runs its own server.
    let Some(server) = TestRedis::own().await else {
        return;
    };
    let mut raw = server.connect().await;
    let quota = Quota::per_second(20).burst(1);
    const PERMITS: usize = 24;

    let plain = RateLimiter::builder(quota).redis(server.connect().await, random_prefix());
    let (_, plain_runs) = take_concurrently(&plain, &mut raw, 8, PERMITS).await;

    let leased = RateLimiter::builder(quota)
        .lease(nz(8), Duration::from_millis(400))
        .redis(server.connect().await, random_prefix());
    let (granted, leased_runs) = take_concurrently(&leased, &mut raw, 8, PERMITS).await;

    eprintln!("script runs for {PERMITS} permits: {plain_runs} one by one, {leased_runs} leased");
    assert!(plain_runs >= PERMITS as u64, "{plain_runs}");
    // Up to 8 per round trip (those due within 400 ms), plus refusals when a lease runs out, and
    // plus the leased permits dropped when a loaded machine wakes a waiter past the 5 ms a permit
    // may be late: at least half the round trips are saved even then.
    assert!(leased_runs <= (PERMITS / 2) as u64, "{leased_runs}");
    // The rate holds: leased permits are spent at their own due times, 50 ms apart, never
    // stocked up and spent together.
    let span = granted[PERMITS - 1] - granted[0];
    assert!(
        span >= Duration::from_millis(50 * (PERMITS as u64 - 1) - 5),
        "{span:?}"
    );
    let closest = granted.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    assert!(closest >= Duration::from_millis(40), "{closest:?}");
}

#[tokio::test]
async fn a_pause_from_the_upstream_holds_this_process_before_it_asks_redis() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let limiter = RateLimiter::builder(Quota::per_second(1_000).burst(1))
        .redis(server.connect().await, random_prefix());
    limiter.acquire().await.unwrap();
    limiter.pause(Duration::from_millis(300));
    let started = Instant::now();
    limiter.acquire().await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(295), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn fleet_waiters_and_services_stay_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    use tollway_limiter::fleet::RedisStore;
    use tollway_limiter::{Acquire, Limiter, QuantaClock};
    send_sync::<Acquire<QuantaClock, RedisStore>>();
    send_sync::<
        Limiter<tower::util::BoxCloneSyncService<(), (), Infallible>, QuantaClock, RedisStore>,
    >();
    send_sync::<StoreUnavailable>();
}

/// A pause one process learns (a 429's `Retry-After`) holds every process of the fleet: the
/// other one, which saw no 429, waits it out too instead of drawing its own.
#[tokio::test]
async fn a_pause_in_one_process_holds_the_whole_fleet() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let quota = Quota::per_second(1_000).burst(1);
    let a = RateLimiter::builder(quota).redis(server.connect().await, &prefix);
    let b = RateLimiter::builder(quota).redis(server.connect().await, &prefix);
    a.acquire().await.unwrap();
    b.acquire().await.unwrap();
    a.pause(Duration::from_millis(400));
    // The pause reaches Redis in a task of its own: give it a moment (far less than the pause).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    b.acquire().await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "the other process went ahead after {waited:?}"
    );
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    // After the pause, one at a time at the steady rate again.
    let started = Instant::now();
    b.acquire().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(200));
}

/// The limiter on a 3-node cluster: its keys share a slot, the script survives a flushed
/// script cache (what a failover to a node that never ran it looks like), and two connections
/// with one prefix share one limit.
#[tokio::test]
async fn a_cluster_shares_one_limit_and_survives_a_script_flush() {
    let Some(cluster) = tollway_test_support::TestCluster::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let quota = Quota::per_minute(60).burst(4);
    let a = no_wait(RateLimiter::builder(quota).quota(Quota::per_hour(1_000).burst(100)))
        .redis(cluster.connect().await, &prefix);
    let b = no_wait(RateLimiter::builder(quota).quota(Quota::per_hour(1_000).burst(100)))
        .redis(cluster.connect().await, &prefix);
    for i in 0..4 {
        if i == 2 {
            cluster.flush_scripts().await;
        }
        let limiter = if i % 2 == 0 { &a } else { &b };
        limiter.acquire().await.expect("within the shared burst");
    }
    assert!(a.acquire().await.is_err());
    assert!(b.acquire().await.is_err());
}

/// A pause holds permits this process leased before it: they were granted before the upstream
/// said stop, and spending them would send requests into the pause.
#[tokio::test]
async fn a_pause_holds_leased_permits_too() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let limiter = RateLimiter::builder(Quota::per_second(1_000).burst(1))
        .lease(nz(8), Duration::from_millis(100))
        .redis(server.connect().await, random_prefix());
    // One round trip leases the next permits, due 1 ms apart.
    limiter.acquire().await.unwrap();
    limiter.pause(Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert!(
        limiter.check().is_err(),
        "a leased permit went into the pause"
    );
    let started = Instant::now();
    limiter.acquire().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

/// An endless pause (`pause(Duration::MAX)`, which the in-memory limiter clamps) goes to the
/// script as 2^63 microseconds, past what a Lua number holds exactly and near the integer
/// reply's limit: the other processes of the fleet still read it as far away, never as "retry
/// in a microsecond".
#[tokio::test]
async fn an_endless_pause_holds_the_fleet_far_away_not_for_a_microsecond() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let quota = Quota::per_second(1_000).burst(1);
    let a = RateLimiter::builder(quota).redis(server.connect().await, &prefix);
    let b = no_wait(RateLimiter::builder(quota)).redis(server.connect().await, &prefix);
    a.pause(Duration::MAX);
    // The pause reaches Redis in a task of its own: wait until it is there.
    let mut raw = server.connect().await;
    let key = format!("{{{prefix}}}:0");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tat: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        if tat.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the pause never reached Redis");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = try_once(&b)
        .await
        .expect_err("the fleet is paused for good");
    let year = Duration::from_secs(365 * 86_400);
    assert!(refused.retry_after() > 100 * year, "{refused:?}");
}
