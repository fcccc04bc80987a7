//! The tower layers on tokio's paused clock: sharing, tower's readiness contract, adaptation to
//! the upstream's answers, AIMD convergence against a simulated server, keyed mode.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use parking_lot::Mutex;
use tokio::time::Instant;
use tollway_core::{BoxError, RateLimited, TokioClock};
use tollway_limiter::{
    Adaptive, AdaptiveLimiterLayer, Aimd, KeyedLimiterLayer, LimiterLayer, Quota, RateLimiter,
    RateLimiterBuilder,
};
use tower::{Layer, Service, ServiceExt, service_fn};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

const MS: Duration = Duration::from_millis(1);

fn builder(rate: u32) -> RateLimiterBuilder<TokioClock> {
    RateLimiter::builder(Quota::per_second(rate).burst(1)).clock(TokioClock)
}

fn ok_service()
-> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone {
    service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) })
}

/// A service that answers with the responses queued in `script`, then 200s.
fn scripted(
    script: Vec<Response<()>>,
) -> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone {
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    service_fn(move |_: Request<()>| {
        let next = script.lock().pop_front();
        async move { Ok::<_, Infallible>(next.unwrap_or_else(|| Response::new(()))) }
    })
}

fn response(status: u16, headers: &[(&'static str, &'static str)]) -> Response<()> {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_limiter() {
    let layer = LimiterLayer::from_limiter(builder(10).build());
    let a = layer.clone().layer(ok_service());
    let b = layer.layer(ok_service());
    let c = a.clone();
    let start = Instant::now();
    a.oneshot(Request::new(())).await.unwrap();
    b.oneshot(Request::new(())).await.unwrap();
    c.oneshot(Request::new(())).await.unwrap();
    assert!(
        start.elapsed() >= 200 * MS,
        "three requests share one 10/s bucket"
    );
}

#[tokio::test(start_paused = true)]
async fn a_ready_service_dropped_unused_returns_its_permit() {
    let limiter = builder(10).build();
    let mut service = LimiterLayer::from_limiter(limiter.clone()).layer(ok_service());
    service.ready().await.unwrap();
    assert_eq!(limiter.available(), 0, "poll_ready took the permit");
    drop(service);
    assert_eq!(limiter.available(), 1, "dropping the service gave it back");

    let mut service = LimiterLayer::from_limiter(limiter.clone()).layer(ok_service());
    service.ready().await.unwrap();
    let inner = service.into_inner();
    drop(inner);
    assert_eq!(limiter.available(), 1, "into_inner gives it back too");
}

#[tokio::test(start_paused = true)]
async fn call_without_poll_ready_takes_a_free_permit_or_refuses() {
    let mut service = LimiterLayer::from_limiter(builder(10).build()).layer(ok_service());
    assert!(service.call(Request::new(())).await.is_ok());
    let error = service.call(Request::new(())).await.unwrap_err();
    let refused = error.downcast_ref::<RateLimited>().expect("RateLimited");
    assert_eq!(refused.retry_after(), 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn past_max_wait_the_call_fails_fast_and_the_service_stays_usable() {
    let limiter = builder(1).max_wait(Duration::from_millis(500)).build();
    let mut service = LimiterLayer::from_limiter(limiter).layer(ok_service());
    service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    let start = Instant::now();
    let error = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "no waiting");
    assert_eq!(
        error.downcast_ref::<RateLimited>().unwrap().retry_after(),
        Duration::from_secs(1)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .is_ok()
    );
}

/// Sends one request, then measures how long the next one waits.
async fn wait_after(first: Response<()>, limiter: RateLimiter<TokioClock>) -> Duration {
    let mut service = AdaptiveLimiterLayer::new(limiter).layer(scripted(vec![first]));
    service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    let start = Instant::now();
    service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn upstream_hints_pause_the_limiter() {
    let adaptive = || builder(100).adaptive(Adaptive::new()).build();
    let cases = [
        (response(429, &[("retry-after", "2")]), 2_000),
        (response(429, &[]), 1_000), // no hint: the default pause
        (response(503, &[("retry-after", "3")]), 3_000),
        (
            response(
                200,
                &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "4")],
            ),
            4_000,
        ),
        (
            response(200, &[("ratelimit", "\"default\";r=0;t=5")]),
            5_000,
        ),
        (response(200, &[("x-ratelimit-remaining", "7")]), 10),
        (response(500, &[]), 10),
    ];
    for (first, expected_ms) in cases {
        let status = first.status();
        let waited = wait_after(first, adaptive()).await;
        let expected = Duration::from_millis(expected_ms);
        assert!(
            waited >= expected && waited <= expected + MS,
            "{status}: waited {waited:?}, expected {expected:?}"
        );
    }
    // Without `adaptive`, a 429 changes nothing.
    let waited = wait_after(response(429, &[("retry-after", "2")]), builder(100).build()).await;
    assert!(waited <= 11 * MS, "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_every_caller_and_wakes_them_spread_out() {
    let limiter = builder(10).adaptive(Adaptive::new()).build();
    let service = AdaptiveLimiterLayer::new(limiter.clone())
        .layer(scripted(vec![response(429, &[("retry-after", "1")])]));
    service.clone().oneshot(Request::new(())).await.unwrap();
    assert!(limiter.paused_for().is_some());
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let service = service.clone();
        let times = Arc::clone(&times);
        tasks.push(tokio::spawn(async move {
            service.oneshot(Request::new(())).await.unwrap();
            times.lock().push(start.elapsed());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let times = times.lock().clone();
    for (k, at) in times.iter().enumerate() {
        let due = Duration::from_secs(1) + 100 * MS * k as u32;
        assert!(
            *at >= due && *at <= due + MS,
            "caller {k} at {at:?}, due {due:?}"
        );
    }
}

/// A server that admits `limit` requests in any one-second window (an exact sliding window,
/// like the upstream simulator) and answers 429 with `Retry-After` otherwise.
#[derive(Clone)]
struct SlidingServer {
    limit: usize,
    admitted: Arc<Mutex<VecDeque<Instant>>>,
    log: Arc<Mutex<Vec<(Instant, u16)>>>,
}

impl SlidingServer {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            admitted: Arc::default(),
            log: Arc::default(),
        }
    }

    fn answer(&self) -> Response<()> {
        let now = Instant::now();
        let mut admitted = self.admitted.lock();
        while admitted
            .front()
            .is_some_and(|&t| now - t >= Duration::from_secs(1))
        {
            admitted.pop_front();
        }
        let status = if admitted.len() < self.limit {
            admitted.push_back(now);
            200
        } else {
            429
        };
        self.log.lock().push((now, status));
        if status == 429 {
            let wait = *admitted.front().unwrap() + Duration::from_secs(1) - now;
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut refused = response(429, &[]);
            refused
                .headers_mut()
                .insert("retry-after", secs.max(1).to_string().parse().unwrap());
            return refused;
        }
        response(200, &[])
    }
}

#[tokio::test(start_paused = true)]
async fn aimd_converges_to_a_server_limit_below_the_configured_rate() {
    let server = SlidingServer::new(10);
    let limiter = builder(30)
        .adaptive(Adaptive::new().aimd(Aimd::new()))
        .build();
    let upstream = {
        let server = server.clone();
        service_fn(move |_: Request<()>| {
            let answer = server.answer();
            async move {
                tokio::time::sleep(5 * MS).await; // latency
                Ok::<_, Infallible>(answer)
            }
        })
    };
    let service = AdaptiveLimiterLayer::new(limiter.clone()).layer(upstream);
    let start = Instant::now();
    // Three concurrent callers, 60 simulated seconds.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < Duration::from_secs(60) {
                service.clone().oneshot(Request::new(())).await?;
            }
            Ok::<_, BoxError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let log = server.log.lock().clone();
    let rejected = log.iter().filter(|&&(_, s)| s == 429).count();
    let ok_last_half = log
        .iter()
        .filter(|&&(t, s)| s == 200 && t - start >= Duration::from_secs(30))
        .count();
    // Without adaptation, 30/s against 10/s would be refused two times in three.
    assert!(
        rejected * 20 <= log.len(),
        "{rejected} of {} refused",
        log.len()
    );
    assert!(
        ok_last_half >= 30 * 6,
        "only {ok_last_half} admitted in the last 30 s"
    );
    assert!(
        limiter.current_rate() <= 12.0,
        "rate {}",
        limiter.current_rate()
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_by_host_limits_each_host_on_its_own() {
    let limiters = builder(1).build_keyed::<String>(NonZeroUsize::new(100).unwrap());
    let mut service = KeyedLimiterLayer::by_host(limiters.clone()).layer(ok_service());
    let to = |host: &str| Request::get(format!("http://{host}/x")).body(()).unwrap();
    let start = Instant::now();
    for host in ["a.example", "b.example", "A.EXAMPLE"] {
        service.ready().await.unwrap().call(to(host)).await.unwrap();
    }
    // a and b went at once; the third is host a again (case-insensitive) and waited 1 s.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took <= Duration::from_secs(1) + MS,
        "{took:?}"
    );
    assert_eq!(limiters.len(), 2);

    // A user-computed key.
    let by_path = KeyedLimiterLayer::new(
        builder(1)
            .max_wait(Duration::ZERO)
            .build_keyed::<String>(NonZeroUsize::new(10).unwrap()),
        |r: &Request<()>| r.uri().path().to_owned(),
    );
    let mut service = by_path.layer(ok_service());
    let get = |p: &str| Request::get(p).body(()).unwrap();
    assert!(service.ready().await.unwrap().call(get("/a")).await.is_ok());
    assert!(service.ready().await.unwrap().call(get("/b")).await.is_ok());
    let refused = service
        .ready()
        .await
        .unwrap()
        .call(get("/a"))
        .await
        .unwrap_err();
    assert!(refused.downcast_ref::<RateLimited>().is_some());
}

#[tokio::test(start_paused = true)]
async fn keyed_store_stays_bounded_and_forgets_idle_keys_first() {
    let limiters = builder(1).build_keyed::<u32>(NonZeroUsize::new(64).unwrap());
    for key in 0..1_000 {
        assert!(limiters.check(&key).is_ok(), "a new key has a full bucket");
    }
    assert!(limiters.len() <= 64, "{} keys kept", limiters.len());
    tokio::time::sleep(Duration::from_secs(2)).await;
    limiters.forget_idle();
    assert!(limiters.is_empty());
    // A key that is still owed is not forgotten as idle.
    assert!(limiters.check(&7).is_ok());
    limiters.forget_idle();
    assert_eq!(limiters.len(), 1);
    assert!(limiters.check(&7).is_err());
}

#[tokio::test(start_paused = true)]
async fn stacks_under_a_concurrency_limit() {
    let service = tower::ServiceBuilder::new()
        .concurrency_limit(2)
        .layer(LimiterLayer::from_limiter(builder(100).build()))
        .service(service_fn(|_: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, Infallible>(Response::new(()))
        }));
    let start = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(service.clone().oneshot(Request::new(()))))
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Two at a time, one second each: two seconds (plus the 10 ms interval).
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(2_100),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_that_starts_waiting_keeps_its_debt_and_its_quota_changes() {
    let limiters = RateLimiter::builder(Quota::per_second(10).burst(2))
        .clock(TokioClock)
        .build_keyed::<&'static str>(NonZeroUsize::new(100).unwrap());
    assert!(limiters.check(&"a").is_ok());
    assert!(limiters.check(&"a").is_ok());
    assert!(limiters.check(&"a").is_err());
    // The bare bucket moves into a full limiter for waiting: the debt comes with it.
    let start = Instant::now();
    limiters.acquire(&"a").await.unwrap();
    assert_eq!(start.elapsed(), 100 * MS);
    assert!(
        limiters.check(&"a").is_err(),
        "the full limiter answers from now on"
    );
    // Quota changes reach bare keys and full limiters alike, debt kept in requests.
    assert!(limiters.check(&"b").is_ok());
    assert!(limiters.check(&"b").is_ok());
    limiters
        .set_quota(0, Quota::per_second(1).burst(2))
        .unwrap();
    assert_eq!(
        limiters.check(&"b").unwrap_err().retry_after(),
        Duration::from_secs(1)
    );
    assert_eq!(
        limiters.check(&"a").unwrap_err().retry_after(),
        Duration::from_secs(1)
    );
    assert!(
        limiters
            .set_quota(1, Quota::per_second(1).burst(1))
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_limiters_with_several_quotas_are_all_or_nothing_per_key() {
    let limiters = RateLimiter::builder(Quota::per_second(10).burst(5))
        .quota(Quota::per_minute(3).burst(3))
        .clock(TokioClock)
        .build_keyed::<u8>(NonZeroUsize::new(100).unwrap());
    for _ in 0..3 {
        assert!(limiters.check(&1).is_ok());
    }
    assert!(limiters.check(&1).is_err());
    assert!(limiters.check(&2).is_ok(), "keys are independent");
    assert_eq!(
        limiters.check_n(&2, nz(6)).unwrap_err().burst(),
        3,
        "the smallest burst bounds the cost"
    );
}

#[test]
fn keyed_available_reads_without_taking() {
    let limiters = RateLimiter::builder(Quota::per_second(10).burst(3))
        .clock(tollway_core::FakeClock::new())
        .build_keyed::<u8>(NonZeroUsize::new(10).unwrap());
    assert_eq!(limiters.available(&1), 3, "a new key has a full bucket");
    assert!(limiters.is_empty(), "reading does not remember the key");
    limiters.check(&1).unwrap();
    assert_eq!(limiters.available(&1), 2);
    assert_eq!(limiters.available(&1), 2);
    let _full = limiters.limiter(&1);
    assert_eq!(
        limiters.available(&1),
        2,
        "the full limiter took over the state"
    );
}
