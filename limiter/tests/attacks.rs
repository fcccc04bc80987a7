//! Tests that attack the limiter's guarantees where adversarial review broke them: lock order
//! under fair locks, rate changes during a pause, refunds after a quota change, unspent
//! permits given back over another caller's, and services that are not HTTP.

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::time::Instant;
use tollway_core::{FakeClock, TokioClock};
use tollway_limiter::{Adaptive, Aimd, BoxError, LimiterLayer, Quota, RateLimited, RateLimiter};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// Finding: `available()` on an unseen key of a keyed limiter with several quotas held a shard
/// read lock while taking the template lock, and `set_quota` held the template lock while
/// asking for shard locks; with fair locks a reader queued behind the pending writer, and the
/// three threads below stopped for good. They must all finish.
#[test]
fn available_set_quota_and_check_never_deadlock() {
    let limiters = RateLimiter::builder(Quota::per_second(1_000).burst(10))
        .quota(Quota::per_hour(1_000_000).burst(1_000))
        .clock(FakeClock::new())
        .build_keyed::<u64>(NonZeroUsize::new(64).unwrap());
    let (done, finished) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for role in 0..3 {
        let (limiters, done, stop) = (limiters.clone(), done.clone(), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while i < 20_000 && !stop.load(Relaxed) {
                match role {
                    // Unseen keys, every time.
                    0 => drop(limiters.available(&(1_000_000 + i))),
                    1 => {
                        let rate = 500 + (i % 1_000) as u32;
                        limiters
                            .set_quota(0, Quota::per_second(rate).burst(10))
                            .unwrap();
                    }
                    _ => drop(limiters.check(&(i % 100))),
                }
                i += 1;
            }
            done.send(()).unwrap();
        }));
    }
    for _ in 0..3 {
        if finished.recv_timeout(Duration::from_secs(60)).is_err() {
            stop.store(true, Relaxed);
            panic!("deadlock: available, set_quota and check stopped");
        }
    }
    for thread in threads {
        thread.join().unwrap();
    }
}

fn too_many_requests(retry_after: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static(retry_after));
    headers
}

/// Finding: with AIMD on, `Retry-After: 2` stalled callers 4 s while `paused_for()` said
/// nothing: halving the rate rescaled the pause as if it were debt. The pause stays 2 s, and
/// the halved rate applies after it.
#[tokio::test(start_paused = true)]
async fn aimd_never_stretches_a_pause_the_server_ordered() {
    let limiter = RateLimiter::builder(Quota::per_second(10).burst(1))
        .adaptive(Adaptive::new().aimd(Aimd::new()))
        .clock(TokioClock)
        .build();
    limiter.check().unwrap();
    limiter.observe_response(StatusCode::TOO_MANY_REQUESTS, &too_many_requests("2"));
    assert!((limiter.current_rate() - 5.0).abs() < 1e-9, "halved");
    let left = limiter.paused_for().expect("a pause in force");
    assert!(left > Duration::from_millis(1_999), "{left:?}");
    let start = Instant::now();
    limiter.acquire().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    // Then the halved rate: one every 200 ms.
    limiter.acquire().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(2_200));
}

/// Finding: a refund after `set_quota` used the new interval on debt taken at the old one.
/// The debt is kept in requests across the change, so a refund of one request gives back
/// exactly one request at the new rate: never more than was taken.
#[test]
fn a_refund_after_a_quota_change_returns_exactly_what_was_taken() {
    let limiter = RateLimiter::builder(Quota::per_second(1).burst(3))
        .clock(FakeClock::new())
        .build();
    for _ in 0..3 {
        limiter.check().unwrap();
    }
    // Three requests owed at 1/s; the same three at 1,000/s after the change.
    limiter
        .set_quota(0, Quota::per_second(1_000).burst(3))
        .unwrap();
    assert_eq!(limiter.available(), 0);
    limiter.refund(1);
    assert_eq!(
        limiter.available(),
        1,
        "one request back, not one second's worth"
    );
    limiter.refund(10);
    assert_eq!(limiter.available(), 3, "never more than the burst");
}

/// A permit a service took in `poll_ready` and never spent is given back when the service is
/// dropped, but only if nothing was admitted on top of it: a late refund by subtraction would
/// hand the next caller a slot that another request already holds.
#[tokio::test(start_paused = true)]
async fn an_unspent_permit_is_returned_exactly_or_not_at_all() {
    let ok = service_fn(|x: u32| async move { Ok::<_, Infallible>(x) });
    let limiter = RateLimiter::builder(Quota::per_second(1).burst(1))
        .clock(TokioClock)
        .build();
    let layer = LimiterLayer::from_limiter(limiter.clone());

    // Nothing in between: returned.
    let mut idle = layer.layer(ok);
    idle.ready().await.unwrap();
    assert!(limiter.peek().is_err());
    drop(idle);
    assert!(limiter.peek().is_ok(), "returned");

    // Another request admitted later, on top of it: not returned.
    let mut early = layer.layer(ok);
    early.ready().await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    limiter
        .check()
        .expect("the bucket refilled: another caller takes the next slot");
    drop(early);
    assert!(
        limiter.check().is_err(),
        "two requests at once on a burst of 1"
    );
}

/// Rename-issue item 3: the limiter works around any `tower::Service`, not only HTTP ones.
#[tokio::test(start_paused = true)]
async fn the_layer_wraps_any_service() {
    let limiter = RateLimiter::builder(Quota::per_second(2).burst(1))
        .clock(TokioClock)
        .build();
    let double = service_fn(|x: u32| async move { Ok::<_, Infallible>(x * 2) });
    let service = ServiceBuilder::new()
        .layer(LimiterLayer::from_limiter(limiter))
        .service(double);
    let start = Instant::now();
    for x in 0..3u32 {
        assert_eq!(service.clone().oneshot(x).await.unwrap(), 2 * x);
    }
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "two intervals of 500 ms"
    );

    // Errors of any kind come out boxed, next to the limiter's own.
    let failing = service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("down")) });
    let mut service = LimiterLayer::new(Quota::per_second(1).burst(1)).layer(failing);
    let error: BoxError = service.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(error.is::<std::io::Error>());
    let refused = service.call(()).await.unwrap_err();
    assert!(
        refused.is::<RateLimited>(),
        "call without poll_ready and no permit"
    );
}

/// A `max_wait` on the service bounds every wait, however long the pause ahead: the call
/// fails at once with the time left.
#[tokio::test(start_paused = true)]
async fn a_service_max_wait_bounds_a_long_pause() {
    let limiter = RateLimiter::builder(Quota::per_second(10).burst(1))
        .clock(TokioClock)
        .build();
    limiter.pause(Duration::from_secs(120));
    let echo = service_fn(|x: u32| async move { Ok::<_, Infallible>(x) });
    let mut service = LimiterLayer::from_limiter(limiter)
        .max_wait(Duration::from_secs(30))
        .layer(echo);
    let start = Instant::now();
    let error = service.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    let refused = error.downcast_ref::<RateLimited>().expect("RateLimited");
    assert!(
        refused.retry_after() > Duration::from_secs(119),
        "{refused:?}"
    );
}

/// Several quotas under two threads on a frozen clock: exactly what the tightest quota allows,
/// however the commits and undos interleave (the model check explores the small cases
/// exhaustively; this runs the real thing at size).
#[test]
fn two_threads_never_admit_more_than_the_tightest_quota() {
    for round in 0..50 {
        let limiter = RateLimiter::builder(Quota::per_second(1_000).burst(40))
            .quota(Quota::per_hour(25).burst(25))
            .quota(Quota::per_minute(1_000).burst(30))
            .clock(FakeClock::new())
            .build();
        let admitted = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        if limiter.check().is_ok() {
                            admitted.fetch_add(1, Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Relaxed), 25, "round {round}");
    }
}

/// Absurd numbers never panic: an endless pause, a quota change under it, a `Retry-After`
/// of twenty digits, the largest costs and bursts.
#[test]
fn absurd_durations_and_costs_never_panic() {
    let clock = FakeClock::new();
    let limiter = RateLimiter::builder(Quota::per_second(u32::MAX).burst(u32::MAX))
        .quota(Quota::per(1, Duration::from_secs(86_400 * 365 * 100)).burst(1))
        .adaptive(Adaptive::new().aimd(Aimd::new()))
        .clock(clock.clone())
        .build();
    let cost = std::num::NonZeroU32::MIN;
    assert!(limiter.check_n(cost).unwrap().is_ok());
    limiter.pause(Duration::MAX);
    limiter.set_quota(0, Quota::per_second(1).burst(1)).unwrap();
    let refused = limiter.check().unwrap_err();
    assert!(refused.retry_after() > Duration::from_secs(86_400 * 365));
    assert!(limiter.paused_for().is_some());
    let mut headers = HeaderMap::new();
    headers.insert(
        "retry-after",
        HeaderValue::from_static("99999999999999999999"),
    );
    limiter.observe_response(StatusCode::TOO_MANY_REQUESTS, &headers);
    limiter.refund(u32::MAX);
    clock.advance(Duration::from_secs(1));
    assert!(limiter.check().is_err(), "the endless pause holds");
    assert_eq!(limiter.available(), 0);
}

/// Finding: a waiter's cost was checked against the burst only when it queued. A quota change
/// that lowered the burst under the cost of the queue's head left it asking for a permit no
/// bucket can ever hold: without `max_wait` it slept and retried for good, and everyone queued
/// behind it (and every `check`, which never jumps the queue) waited with it. The head is
/// refused as soon as its cost exceeds the burst, and the queue moves on.
#[tokio::test(start_paused = true)]
async fn a_burst_lowered_under_a_queued_cost_refuses_it_and_frees_the_queue() {
    let limiter = RateLimiter::builder(Quota::per_second(1).burst(5))
        .clock(TokioClock)
        .build();
    let five = std::num::NonZeroU32::new(5).unwrap();
    assert!(limiter.check_n(five).unwrap().is_ok());
    let big = tokio::spawn(limiter.acquire_n(five).unwrap());
    tokio::task::yield_now().await;
    let small = tokio::spawn({
        let limiter = limiter.clone();
        async move { limiter.acquire().await }
    });
    tokio::task::yield_now().await;
    assert_eq!(limiter.queued(), 2);
    limiter.set_quota(0, Quota::per_second(1).burst(2)).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(60), big)
        .await
        .expect("the head never resolved: the queue is stuck")
        .unwrap();
    let refused = outcome.unwrap_err();
    assert_eq!(refused.retry_after(), Duration::MAX, "never, like peek_n");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(60), small)
        .await
        .expect("the waiter behind it was never served")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() <= Duration::from_secs(5));
    assert_eq!(limiter.queued(), 0);
}

/// Finding: when every key the eviction hand looked at was held (a caller waiting on it, a
/// response on its way back), the map still made room by forgetting one of them. The caller
/// kept the forgotten limiter while the next request for that key started a new, full one:
/// two buckets for one key, and the key admitted past its quota. A held key is in use and is
/// never forgotten; the map holds it beyond its bound until it is let go.
#[tokio::test(start_paused = true)]
async fn a_held_key_is_never_forgotten_to_make_room() {
    let limiters = RateLimiter::builder(Quota::per_second(1).burst(1))
        .clock(TokioClock)
        .build_keyed::<u32>(NonZeroUsize::new(1).unwrap());
    let start = Instant::now();
    limiters.check(&0).unwrap();
    // A caller waits on key 0 (its permit is due in a second).
    let waiter = tokio::spawn({
        let limiters = limiters.clone();
        async move {
            limiters.acquire(&0).await.unwrap();
            Instant::now()
        }
    });
    tokio::task::yield_now().await;
    // Another key arrives while the map is full of the held one.
    limiters.check(&1).unwrap();
    // Key 0 is still owed: nothing more before its waiter's turn.
    assert!(
        limiters.check(&0).is_err(),
        "key 0 was forgotten while held: a second bucket admitted it at once"
    );
    let served = waiter.await.unwrap();
    assert!(served - start >= Duration::from_secs(1));
    assert!(limiters.check(&0).is_err(), "one permit a second");
}
