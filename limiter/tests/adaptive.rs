//! The adaptive limiter against models of the windows real upstreams enforce, on tokio's
//! paused clock: it learns the stated limit, uses every window without pausing on the
//! `Remaining: 0` that pacing at the limit leads to, pauses when the upstream contradicts its
//! schedule (and only until the moment it says), and AIMD finds a limit it is never told.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use parking_lot::Mutex;
use tokio::time::Instant;
use tollway_core::TokioClock;
use tollway_limiter::{Adaptive, AdaptiveLimiterLayer, Aimd, Quota, RateLimiter};
use tower::{Layer, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);

/// How a model upstream counts.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// At most `rate` in any second.
    Sliding,
    /// At most `rate` in each second counted from the start.
    Fixed,
    /// A bucket of `burst` tokens refilled at `rate` per second.
    Token { burst: u32 },
    /// One request per `1/rate`, with this much tolerance; refused requests count too.
    Leaky { tolerance: Duration },
}

/// Which rate-limit headers a model upstream writes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fields {
    Legacy,
    Ietf,
    /// Only `Retry-After` on a 429.
    None,
}

struct State {
    kind: Kind,
    rate: u32,
    fields: Fields,
    start: Instant,
    admitted: VecDeque<Instant>,
    fixed: (u64, u32),
    tokens: (f64, Instant),
    tat: Instant,
    log: Vec<(Duration, u16)>,
}

/// What an admission or a refusal reports: requests left, time to reset, the policy `(q, w)`.
struct Report {
    remaining: u64,
    reset: Duration,
    quota: u64,
    window: u64,
}

#[derive(Clone)]
struct Model(Arc<Mutex<State>>);

impl Model {
    fn new(kind: Kind, rate: u32, fields: Fields) -> Self {
        let now = Instant::now();
        let burst = match kind {
            Kind::Token { burst } => f64::from(burst),
            _ => 0.0,
        };
        Self(Arc::new(Mutex::new(State {
            kind,
            rate,
            fields,
            start: now,
            admitted: VecDeque::new(),
            fixed: (0, 0),
            tokens: (burst, now),
            tat: now,
            log: Vec::new(),
        })))
    }

    fn set_rate(&self, rate: u32) {
        self.0.lock().rate = rate;
    }

    fn log(&self) -> Vec<(Duration, u16)> {
        self.0.lock().log.clone()
    }

    fn answer(&self) -> Response<()> {
        let mut s = self.0.lock();
        let now = Instant::now();
        let rate = s.rate;
        let interval = SECOND / rate;
        let (admitted, report, retry) = match s.kind {
            Kind::Sliding => {
                while s.admitted.front().is_some_and(|&t| now - t >= SECOND) {
                    s.admitted.pop_front();
                }
                let full = s.admitted.len() >= rate as usize;
                if !full {
                    s.admitted.push_back(now);
                }
                let oldest = *s.admitted.front().unwrap();
                let report = Report {
                    remaining: u64::from(rate).saturating_sub(s.admitted.len() as u64),
                    reset: oldest + SECOND - now,
                    quota: rate.into(),
                    window: 1,
                };
                (!full, report, oldest + SECOND - now)
            }
            Kind::Fixed => {
                let elapsed = now - s.start;
                let second = elapsed.as_secs();
                if s.fixed.0 != second {
                    s.fixed = (second, 0);
                }
                let full = s.fixed.1 >= rate;
                if !full {
                    s.fixed.1 += 1;
                }
                let reset = Duration::from_secs(second + 1) - elapsed;
                let report = Report {
                    remaining: u64::from(rate.saturating_sub(s.fixed.1)),
                    reset,
                    quota: rate.into(),
                    window: 1,
                };
                (!full, report, reset)
            }
            Kind::Token { burst } => {
                let (tokens, at) = s.tokens;
                let tokens =
                    (tokens + (now - at).as_secs_f64() * f64::from(rate)).min(f64::from(burst));
                let ok = tokens >= 1.0;
                let tokens = if ok { tokens - 1.0 } else { tokens };
                s.tokens = (tokens, now);
                let to_full = (f64::from(burst) - tokens) / f64::from(rate);
                let report = Report {
                    remaining: tokens as u64,
                    reset: Duration::from_secs_f64(to_full),
                    quota: burst.into(),
                    window: u64::from(burst.div_ceil(rate)),
                };
                let retry = Duration::from_secs_f64((1.0 - tokens).max(0.0) / f64::from(rate));
                (ok, report, retry)
            }
            Kind::Leaky { tolerance } => {
                let ok = s.tat <= now + tolerance;
                // Admitted or not, the request counts; a flood is locked out for a second
                // at most.
                s.tat = (s.tat.max(now) + interval).min(now + SECOND);
                let report = Report {
                    remaining: u64::from(s.tat <= now + tolerance),
                    reset: s.tat - now,
                    quota: rate.into(),
                    window: 1,
                };
                (ok, report, s.tat.saturating_duration_since(now + tolerance))
            }
        };
        let status = if admitted { 200 } else { 429 };
        let at = now - s.start;
        s.log.push((at, status));
        let mut response = Response::builder().status(status).body(()).unwrap();
        let headers = response.headers_mut();
        let secs = |d: Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
        if !admitted {
            headers.insert("retry-after", secs(retry).max(1).into());
        }
        match s.fields {
            Fields::Legacy => {
                headers.insert("x-ratelimit-limit", report.quota.into());
                headers.insert("x-ratelimit-remaining", report.remaining.into());
                headers.insert("x-ratelimit-reset", secs(report.reset).into());
            }
            Fields::Ietf => {
                let policy = format!("\"default\";q={};w={}", report.quota, report.window);
                let status = format!(
                    "\"default\";r={};t={}",
                    report.remaining,
                    secs(report.reset)
                );
                headers.insert("ratelimit-policy", policy.parse().unwrap());
                headers.insert("ratelimit", status.parse().unwrap());
            }
            Fields::None => {}
        }
        response
    }
}

/// Sends `n` requests through `limiter` from `concurrency` callers against `model` (2 ms of
/// latency each); how long it took.
async fn crawl(
    model: &Model,
    limiter: &RateLimiter<TokioClock>,
    n: usize,
    concurrency: usize,
) -> Duration {
    let upstream = {
        let model = model.clone();
        service_fn(move |_: Request<()>| {
            let model = model.clone();
            async move {
                tokio::time::sleep(MS).await;
                let answer = model.answer();
                tokio::time::sleep(MS).await;
                Ok::<_, Infallible>(answer)
            }
        })
    };
    let service = AdaptiveLimiterLayer::new(limiter.clone()).layer(upstream);
    let left = Arc::new(Mutex::new(n));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (service, left) = (service.clone(), Arc::clone(&left));
        tasks.push(tokio::spawn(async move {
            loop {
                {
                    let mut left = left.lock();
                    if *left == 0 {
                        return;
                    }
                    *left -= 1;
                }
                let response = service.clone().oneshot(Request::new(())).await.unwrap();
                if response.status() == StatusCode::TOO_MANY_REQUESTS {
                    *left.lock() += 1; // tried again
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

fn limiter(configured: u32, adaptive: Adaptive) -> RateLimiter<TokioClock> {
    RateLimiter::builder(Quota::per_second(configured).burst(1))
        .adaptive(adaptive)
        .clock(TokioClock)
        .build()
}

fn refusals(model: &Model) -> usize {
    model.log().iter().filter(|&&(_, s)| s == 429).count()
}

#[tokio::test(start_paused = true)]
async fn every_window_kind_is_used_to_97_percent_without_a_refusal() {
    let kinds = [
        (Kind::Sliding, Fields::Legacy),
        (Kind::Sliding, Fields::Ietf),
        (Kind::Fixed, Fields::Legacy),
        (Kind::Fixed, Fields::Ietf),
        (Kind::Token { burst: 22 }, Fields::Ietf),
        (Kind::Leaky { tolerance: 5 * MS }, Fields::Legacy),
        (Kind::Leaky { tolerance: 5 * MS }, Fields::Ietf),
    ];
    let floor = Duration::from_secs(200) / 11;
    for (kind, fields) in kinds {
        // Configured at the right rate (the client read it from the API), and at wrong ones.
        for configured in [11, 5, 40] {
            let model = Model::new(kind, 11, fields);
            let limiter = limiter(configured, Adaptive::new());
            let took = crawl(&model, &limiter, 200, 8).await;
            let what = format!("{kind:?} {fields:?} configured at {configured}/s");
            assert_eq!(refusals(&model), 0, "{what}");
            assert!(
                took <= floor.mul_f64(1.03),
                "{what}: {took:?}, floor {floor:?}"
            );
            assert!(limiter.paused_for().is_none(), "{what}");
            let rate = limiter.current_rate();
            assert!((rate - 10.78).abs() < 0.01, "{what}: paces at {rate}");
        }
    }
}

/// The finding that started it: pausing until the reset on every `Remaining: 0` (what the
/// limiter did) took 20% longer than the window allows, paced at the limit.
#[tokio::test(start_paused = true)]
async fn a_full_window_the_schedule_fills_is_not_a_reason_to_stop() {
    let model = Model::new(Kind::Sliding, 11, Fields::Legacy);
    let limiter = limiter(11, Adaptive::new().learn(false));
    let took = crawl(&model, &limiter, 100, 8).await;
    assert_eq!(refusals(&model), 0);
    assert!(took < Duration::from_millis(9_100), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn the_limit_is_followed_when_the_plan_changes() {
    let model = Model::new(Kind::Sliding, 11, Fields::Ietf);
    let limiter = limiter(11, Adaptive::new());
    crawl(&model, &limiter, 50, 8).await;
    assert!((limiter.current_rate() - 10.78).abs() < 0.01);
    // An upgrade: the very next answer says so, and the rest goes at the new rate.
    model.set_rate(20);
    let took = crawl(&model, &limiter, 100, 8).await;
    assert!((limiter.current_rate() - 19.6).abs() < 0.01);
    assert!(took < Duration::from_millis(5_300), "{took:?}");
    assert_eq!(refusals(&model), 0, "an upgrade costs nothing");
    // A downgrade: the window holds more than the new limit, so a few are refused until the
    // first answer (the refusal itself) states the new limit and pauses everyone.
    model.set_rate(11);
    crawl(&model, &limiter, 100, 8).await;
    assert!((limiter.current_rate() - 10.78).abs() < 0.01);
    assert!(refusals(&model) <= 8, "{} refused", refusals(&model));
}

#[tokio::test(start_paused = true)]
async fn a_rate_set_by_hand_holds_until_the_upstream_states_another() {
    let model = Model::new(Kind::Sliding, 11, Fields::Legacy);
    let limiter = limiter(11, Adaptive::new());
    crawl(&model, &limiter, 5, 1).await;
    limiter.set_rate(Quota::per_second(4));
    crawl(&model, &limiter, 5, 1).await;
    assert!((limiter.current_rate() - 4.0).abs() < 1e-9);
    model.set_rate(12);
    crawl(&model, &limiter, 5, 1).await;
    assert!((limiter.current_rate() - 12.0 * 0.98).abs() < 0.01);
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                http::HeaderName::from_static(k),
                HeaderValue::try_from(v).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_spent_daily_quota_pauses_until_its_reset() {
    let limiter = limiter(11, Adaptive::new());
    limiter.observe_response(
        StatusCode::OK,
        &headers(&[
            (
                "ratelimit-policy",
                "\"second\";q=11;w=1, \"day\";q=1000;w=86400".into(),
            ),
            ("ratelimit", "\"second\";r=3;t=1, \"day\";r=0;t=40".into()),
        ]),
    );
    let left = limiter.paused_for().expect("paused");
    assert!(
        left > Duration::from_secs(39) && left <= Duration::from_secs(40),
        "{left:?}"
    );
    assert!(
        (limiter.current_rate() - 10.78).abs() < 0.01,
        "paced by the shortest window"
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_someone_else_used_up_pauses_until_its_reset() {
    // Pacing at 4/s, this client alone cannot empty an 11/s window.
    let limiter = limiter(4, Adaptive::new().learn(false));
    let used_up = headers(&[
        ("x-ratelimit-limit", "11".into()),
        ("x-ratelimit-remaining", "0".into()),
        ("x-ratelimit-reset", "1".into()),
    ]);
    limiter.observe_response(StatusCode::OK, &used_up);
    assert_eq!(limiter.paused_for(), Some(SECOND));
    // Paced at the limit, the same answer is the steady state.
    let at_limit = self::limiter(11, Adaptive::new());
    at_limit.observe_response(StatusCode::OK, &used_up);
    assert_eq!(at_limit.paused_for(), None);
    // A window whose limit is unknown, used up, with a reset after the next permit: paused.
    let unknown = self::limiter(11, Adaptive::new());
    unknown.observe_response(
        StatusCode::OK,
        &headers(&[
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", "3".into()),
        ]),
    );
    assert_eq!(unknown.paused_for(), Some(3 * SECOND));
}

#[tokio::test(start_paused = true)]
async fn a_reset_given_to_the_millisecond_pauses_to_the_millisecond() {
    let limiter = limiter(11, Adaptive::new().learn(false));
    let reset = SystemTime::now() + Duration::from_millis(300);
    let millis = reset.duration_since(UNIX_EPOCH).unwrap().as_millis();
    limiter.observe_response(
        StatusCode::OK,
        &headers(&[
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", millis.to_string()),
        ]),
    );
    let left = limiter.paused_for().expect("paused");
    assert!(
        left <= Duration::from_millis(300) && left > Duration::from_millis(290),
        "{left:?}"
    );
    // A reset that comes before the next permit orders nothing.
    let limiter = self::limiter(2, Adaptive::new().learn(false));
    limiter.check().unwrap();
    let soon = SystemTime::now() + Duration::from_millis(100);
    let millis = soon.duration_since(UNIX_EPOCH).unwrap().as_millis();
    limiter.observe_response(
        StatusCode::OK,
        &headers(&[
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", millis.to_string()),
        ]),
    );
    assert_eq!(limiter.paused_for(), None);
}

#[tokio::test(start_paused = true)]
async fn absurd_stated_limits_stay_within_bounds() {
    let limiter = limiter(11, Adaptive::new().max_pause(Duration::from_secs(60)));
    for (limit, reset) in [
        ("99999999999999999999", "1"),
        ("1", "59"),
        ("0", "1"),
        ("7", "99999999999"),
    ] {
        limiter.observe_response(
            StatusCode::OK,
            &headers(&[
                ("x-ratelimit-limit", limit.into()),
                ("x-ratelimit-remaining", "1".into()),
                ("x-ratelimit-reset", reset.into()),
            ]),
        );
        let interval = limiter.quotas()[0].interval();
        assert!(
            interval > Duration::ZERO && interval <= Duration::from_secs(60),
            "{interval:?}"
        );
    }
    limiter.observe_response(
        StatusCode::OK,
        &headers(&[("ratelimit-policy", "\"a\";q=1;w=99999999999999".into())]),
    );
    assert!(limiter.quotas()[0].interval() <= Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn aimd_settles_just_under_a_limit_it_is_never_told() {
    // Configured at three times the real rate; the upstream answers 429 with Retry-After only.
    let model = Model::new(Kind::Sliding, 11, Fields::None);
    let limiter = limiter(33, Adaptive::new().aimd(Aimd::new()));
    let upstream = {
        let model = model.clone();
        service_fn(move |_: Request<()>| {
            let answer = model.answer();
            async move {
                tokio::time::sleep(2 * MS).await;
                Ok::<_, Infallible>(answer)
            }
        })
    };
    let service = AdaptiveLimiterLayer::new(limiter.clone()).layer(upstream);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < Duration::from_secs(120) {
                service.clone().oneshot(Request::new(())).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let log = model.log();
    let refused = refusals(&model);
    assert!(
        refused * 50 < log.len(),
        "{refused} of {} refused",
        log.len()
    );
    let admitted = |from: u64, to: u64| {
        let (from, to) = (Duration::from_secs(from), Duration::from_secs(to));
        log.iter()
            .filter(|&&(t, s)| s == 200 && t >= from && t < to)
            .count()
    };
    // Within 5 s, every 5 s hold 95% of what the upstream allows, until the first probe
    // (after the 30 s hold) ...
    for from in (5..30).step_by(5) {
        let ok = admitted(from, from + 5);
        assert!(ok * 100 >= 95 * 55, "{ok} in {from}s..{}s", from + 5);
    }
    // ... and from 5 s on, 95% of it, probes and their pauses included.
    let total = admitted(5, 120);
    assert!(
        total * 100 >= 95 * 11 * 115,
        "{total} admitted from 5 s to 120 s"
    );
    assert!(
        limiter.current_rate() >= 0.95 * 11.0,
        "{}",
        limiter.current_rate()
    );
}
