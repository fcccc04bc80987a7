//! Every state transition, through the service, on tokio's paused clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Mock, Reply, open_for, send};
use http::{Request, StatusCode};
use parking_lot::Mutex;
use tollway_breaker::{
    Breaker, BreakerConfig, BreakerConfigBuilder, BreakerLayer, Mode, OpenDuration, Reason, State,
    StateChange,
};
use tollway_core::{Classifier, OutcomeKind};
use tower::{Layer, Service, ServiceExt};

const SEC: Duration = Duration::from_secs(1);

fn base() -> BreakerConfigBuilder {
    BreakerConfig::builder()
        .consecutive_failures(3)
        .without_failure_rate()
        .open_duration(OpenDuration::fixed(Duration::from_secs(10)))
}

fn breaker(config: BreakerConfigBuilder) -> (Breaker<Mock>, Mock) {
    let mock = Mock::new();
    let service = Breaker::new(mock.clone(), config.build().expect("valid config"));
    (service, mock)
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_and_open_fails_fast_without_touching_inner() {
    let (mut svc, mock) = breaker(base());
    let handle = svc.handle();
    mock.push([Reply::Status(500), Reply::Status(502)]);
    assert_eq!(send(&mut svc).await.unwrap(), 500);
    assert_eq!(send(&mut svc).await.unwrap(), 502);
    // A success resets the run.
    assert_eq!(send(&mut svc).await.unwrap(), 200);
    assert_eq!(handle.counts().consecutive_failures, 0);
    mock.push([
        Reply::Status(503),
        Reply::Io(std::io::ErrorKind::ConnectionRefused),
        Reply::Io(std::io::ErrorKind::TimedOut),
    ]);
    assert_eq!(send(&mut svc).await.unwrap(), 503);
    assert!(send(&mut svc).await.is_err());
    assert_eq!(handle.state(), State::Closed);
    assert!(send(&mut svc).await.is_err());
    assert_eq!(handle.state(), State::Open);

    let (calls, polls) = (mock.calls(), mock.polls());
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(open_for(send(&mut svc).await), Duration::from_secs(6));
    assert_eq!(
        mock.calls(),
        calls,
        "open breaker must not call the inner service"
    );
    assert_eq!(mock.polls(), polls, "nor drive its poll_ready");
}

#[tokio::test(start_paused = true)]
async fn throttling_billing_and_client_errors_are_not_failures() {
    let (mut svc, mock) = breaker(base().consecutive_failures(1));
    mock.push([429, 402, 404, 400, 401].map(Reply::Status));
    for _ in 0..5 {
        send(&mut svc).await.unwrap();
    }
    assert_eq!(svc.handle().state(), State::Closed);
    assert_eq!(svc.handle().counts().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn failure_predicate_and_classifier_are_configurable() {
    // This API means "overloaded" by 429: count it.
    let (mut svc, mock) =
        breaker(base().consecutive_failures(2).failure_predicate(|o| {
            o.is_upstream_failure() || o.kind() == OutcomeKind::RateLimited
        }));
    mock.push([Reply::Status(429), Reply::Status(429)]);
    send(&mut svc).await.unwrap();
    send(&mut svc).await.unwrap();
    assert_eq!(svc.handle().state(), State::Open);

    // And one whose 404 means the backend is gone.
    let classifier = Classifier::builder()
        .status(StatusCode::NOT_FOUND, OutcomeKind::ServerError)
        .build();
    let (mut svc, mock) = breaker(base().consecutive_failures(1).classifier(classifier));
    mock.push([Reply::Status(404)]);
    send(&mut svc).await.unwrap();
    assert_eq!(svc.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn local_rejections_from_below_are_not_counted() {
    #[derive(Clone)]
    struct RejectsBelow;
    impl Service<Request<()>> for RejectsBelow {
        type Response = http::Response<()>;
        type Error = tollway_core::BoxError;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            std::future::ready(Err(Box::new(tollway_core::RateLimited::new(SEC))))
        }
    }
    let mut svc = Breaker::new(
        RejectsBelow,
        base()
            .consecutive_failures(1)
            .failure_rate(0.1)
            .minimum_calls(1)
            .build()
            .unwrap(),
    );
    for _ in 0..5 {
        assert!(send(&mut svc).await.is_err());
    }
    let counts = svc.handle().counts();
    assert_eq!(counts.state, State::Closed);
    assert_eq!(counts.window_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_count_window_waits_for_minimum_calls() {
    let (mut svc, mock) = breaker(
        base()
            .without_consecutive_failures()
            .failure_rate(0.5)
            .count_window(10)
            .minimum_calls(6),
    );
    let handle = svc.handle();
    // fail, ok, fail, ok, fail: 3 of 5 failed, but fewer than 6 calls seen.
    mock.push([500, 200, 500, 200, 500].map(Reply::Status));
    for _ in 0..5 {
        send(&mut svc).await.unwrap();
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.counts().window_failures, 3);
    // A sixth call, a success: 3 of 6 failed, but only a failure is evaluated.
    send(&mut svc).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    mock.push([Reply::Status(500)]);
    send(&mut svc).await.unwrap();
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn count_window_evicts_old_failures() {
    let (mut svc, mock) = breaker(
        base()
            .without_consecutive_failures()
            .failure_rate(0.5)
            .count_window(4)
            .minimum_calls(4),
    );
    let handle = svc.handle();
    mock.push([500, 200, 200, 200, 200, 200, 500].map(Reply::Status));
    for _ in 0..7 {
        send(&mut svc).await.unwrap();
    }
    // The first failure was evicted; the window holds 200, 200, 200, 500.
    assert_eq!(handle.counts().window_failures, 1);
    assert_eq!(handle.state(), State::Closed);
    mock.push([Reply::Status(500)]);
    send(&mut svc).await.unwrap();
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_time_window_forgets_old_seconds() {
    let (mut svc, mock) = breaker(
        base()
            .without_consecutive_failures()
            .failure_rate(0.6)
            .time_window(5)
            .minimum_calls(4),
    );
    let handle = svc.handle();
    mock.push([500, 500, 500].map(Reply::Status));
    for _ in 0..3 {
        send(&mut svc).await.unwrap();
    }
    assert_eq!(handle.counts().window_calls, 3);
    // Those failures age out of the 5 s window.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(handle.counts().window_calls, 0);
    mock.push([200, 200, 500].map(Reply::Status));
    for _ in 0..3 {
        send(&mut svc).await.unwrap();
    }
    tokio::time::advance(SEC).await;
    mock.push([Reply::Status(500)]);
    send(&mut svc).await.unwrap();
    // 2 of 4 in the window: below 60%.
    assert_eq!(handle.state(), State::Closed);
    mock.push([Reply::Status(500)]);
    send(&mut svc).await.unwrap();
    // 3 of 5.
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_trips() {
    let (mut svc, mock) = breaker(
        base()
            .without_consecutive_failures()
            .without_failure_rate()
            .slow_call_rate(Duration::from_millis(100), 0.5)
            .count_window(4)
            .minimum_calls(4),
    );
    let handle = svc.handle();
    let slow = Reply::After(Duration::from_millis(300), 200);
    let quick = Reply::After(Duration::from_millis(50), 200);
    mock.push([quick.clone(), slow.clone(), quick, slow]);
    for _ in 0..3 {
        send(&mut svc).await.unwrap();
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.counts().window_slow_calls, 1);
    send(&mut svc).await.unwrap();
    assert_eq!(handle.state(), State::Open);
}

fn recording(events: &Arc<Mutex<Vec<StateChange>>>) -> impl Fn(&StateChange) + use<> {
    let events = Arc::clone(events);
    move |change: &StateChange| events.lock().push(change.clone())
}

#[tokio::test(start_paused = true)]
async fn half_open_probe_success_closes_and_failure_reopens_for_longer() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let (mut svc, mock) = breaker(
        base()
            .consecutive_failures(1)
            .open_duration(
                OpenDuration::exponential(Duration::from_secs(2), Duration::from_secs(5))
                    .with_jitter(0.0),
            )
            .on_state_change(recording(&events)),
    );
    let handle = svc.handle();
    mock.push([Reply::Status(500)]);
    send(&mut svc).await.unwrap();
    assert_eq!(open_for(send(&mut svc).await), Duration::from_secs(2));

    // Probe fails: open again, twice as long.
    tokio::time::advance(Duration::from_secs(2)).await;
    mock.push([Reply::Status(500)]);
    assert_eq!(send(&mut svc).await.unwrap(), 500);
    assert_eq!(handle.state(), State::Open);
    assert_eq!(open_for(send(&mut svc).await), Duration::from_secs(4));

    // Third trip is capped at 5 s.
    tokio::time::advance(Duration::from_secs(4)).await;
    mock.push([Reply::Status(500)]);
    send(&mut svc).await.unwrap();
    assert_eq!(open_for(send(&mut svc).await), Duration::from_secs(5));
    assert_eq!(handle.counts().trips, 3);

    // Probe succeeds: closed, trips forgotten.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(send(&mut svc).await.unwrap(), 200);
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.counts().trips, 0);

    let seen: Vec<_> = events
        .lock()
        .iter()
        .map(|e| (e.from, e.to, e.reason))
        .collect();
    use {Reason::*, State::*};
    assert_eq!(
        seen,
        [
            (Closed, Open, ConsecutiveFailures),
            (Open, HalfOpen, OpenElapsed),
            (HalfOpen, Open, ProbeFailed),
            (Open, HalfOpen, OpenElapsed),
            (HalfOpen, Open, ProbeFailed),
            (Open, HalfOpen, OpenElapsed),
            (HalfOpen, Closed, ProbesSucceeded),
        ]
    );
    let generations: Vec<u64> = events.lock().iter().map(|e| e.generation).collect();
    assert_eq!(generations, (1..=7).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn upstream_retry_after_on_503_sets_open_duration_within_cap() {
    let (mut svc, mock) = breaker(base().consecutive_failures(1));
    mock.push([Reply::StatusWithRetryAfter(503, "42")]);
    send(&mut svc).await.unwrap();
    assert_eq!(open_for(send(&mut svc).await), Duration::from_secs(42));

    let (mut svc, mock) = breaker(
        base()
            .consecutive_failures(1)
            .honor_retry_after(Some(Duration::from_secs(20))),
    );
    mock.push([Reply::StatusWithRetryAfter(503, "3600")]);
    send(&mut svc).await.unwrap();
    assert_eq!(open_for(send(&mut svc).await), Duration::from_secs(20));

    let (mut svc, mock) = breaker(base().consecutive_failures(1).honor_retry_after(None));
    mock.push([Reply::StatusWithRetryAfter(503, "42")]);
    send(&mut svc).await.unwrap();
    assert_eq!(open_for(send(&mut svc).await), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_short_retry_after_never_shortens_the_open_duration() {
    // Configured: 30 s, doubling. The upstream says "Retry-After: 1" on every 503.
    let (mut svc, mock) = breaker(
        base().consecutive_failures(1).open_duration(
            OpenDuration::exponential(Duration::from_secs(30), Duration::from_secs(240))
                .with_jitter(0.0),
        ),
    );
    mock.push([Reply::StatusWithRetryAfter(503, "1")]);
    send(&mut svc).await.unwrap();
    assert_eq!(open_for(send(&mut svc).await), Duration::from_secs(30));
    // The probe fails the same way: the open duration still grows.
    tokio::time::advance(Duration::from_secs(30)).await;
    mock.push([Reply::StatusWithRetryAfter(503, "1")]);
    send(&mut svc).await.unwrap();
    assert_eq!(open_for(send(&mut svc).await), Duration::from_secs(60));
}

async fn tripped(config: BreakerConfigBuilder) -> (Breaker<Mock>, Mock) {
    let (mut svc, mock) = breaker(config.consecutive_failures(1));
    mock.push([Reply::Status(500)]);
    send(&mut svc).await.unwrap();
    assert_eq!(svc.handle().state(), State::Open);
    tokio::time::advance(Duration::from_secs(10)).await;
    (svc, mock)
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_max_probes_and_needs_enough_successes() {
    let (svc, mock) = tripped(base().max_probes(2).probes_to_close(3)).await;
    let handle = svc.handle();
    let delay = Reply::After(Duration::from_millis(100), 200);
    mock.push([delay.clone(), delay.clone(), delay]);
    let mut a = svc.clone();
    let mut b = svc.clone();
    let mut c = svc.clone();
    let first = tokio::spawn(async move { send(&mut a).await });
    let second = tokio::spawn(async move { send(&mut b).await });
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert_eq!(handle.counts().probes_in_flight, 2);
    // Third concurrent caller: no permit left.
    assert!(open_for(send(&mut c).await) <= Duration::from_secs(10));
    assert_eq!(first.await.unwrap().unwrap(), 200);
    assert_eq!(second.await.unwrap().unwrap(), 200);
    assert_eq!(handle.state(), State::HalfOpen);
    assert_eq!(handle.counts().probe_successes, 2);
    assert_eq!(send(&mut c).await.unwrap(), 200);
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(mock.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_future_gives_its_permit_back() {
    let (mut svc, mock) = tripped(base()).await;
    let handle = svc.handle();
    mock.push([Reply::Hang]);
    let future = svc.ready().await.unwrap().call(Request::new(()));
    assert_eq!(handle.counts().probes_in_flight, 1);
    assert!(send(&mut svc).await.is_err(), "the only permit is taken");
    drop(future);
    assert_eq!(handle.counts().probes_in_flight, 0);
    assert_eq!(handle.state(), State::HalfOpen);
    assert_eq!(send(&mut svc).await.unwrap(), 200);
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn permit_taken_in_poll_ready_is_returned_when_the_service_is_dropped() {
    let (svc, _mock) = tripped(base()).await;
    let handle = svc.handle();
    let mut polled = svc.clone();
    polled.ready().await.unwrap();
    assert_eq!(handle.counts().probes_in_flight, 1);
    // Polling again keeps the same permit.
    polled.ready().await.unwrap();
    assert_eq!(handle.counts().probes_in_flight, 1);
    drop(polled);
    assert_eq!(handle.counts().probes_in_flight, 0);
    let inner = {
        let mut again = svc.clone();
        again.ready().await.unwrap();
        again.into_inner()
    };
    drop(inner);
    assert_eq!(handle.counts().probes_in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn hung_probe_reopens_after_probe_timeout_and_its_late_answer_changes_nothing() {
    let (mut svc, mock) = tripped(base().probe_timeout(Duration::from_secs(3))).await;
    let handle = svc.handle();
    mock.push([Reply::After(Duration::from_secs(60), 200)]);
    let mut prober = svc.clone();
    let late = tokio::spawn(async move { send(&mut prober).await });
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), State::HalfOpen);
    let stuck_generation = handle.counts().generation;

    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(send(&mut svc).await.is_err());
    assert_eq!(handle.state(), State::HalfOpen);

    tokio::time::advance(Duration::from_secs(1)).await;
    // Probe timeout: this caller re-opens the breaker.
    assert_eq!(open_for(send(&mut svc).await), Duration::from_secs(10));
    assert_eq!(handle.state(), State::Open);
    assert!(handle.counts().generation > stuck_generation);

    // After the next open period a fresh probe is admitted; the hung one answers much later
    // (successfully), and does not close the new half-open cycle.
    tokio::time::advance(Duration::from_secs(10)).await;
    mock.push([Reply::Hang]);
    let mut second = svc.clone();
    let _hung = tokio::spawn(async move { send(&mut second).await });
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), State::HalfOpen);
    tokio::time::advance(Duration::from_secs(2)).await;
    // (not yet the new probe's timeout)
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(late.await.unwrap().unwrap(), 200);
    assert_eq!(handle.counts().probe_successes, 0);
    assert_ne!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn late_closed_result_from_before_a_trip_is_ignored() {
    let (mut svc, mock) = breaker(base().consecutive_failures(1));
    let handle = svc.handle();
    mock.push([Reply::After(Duration::from_secs(5), 500)]);
    let mut slow = svc.clone();
    let slow = tokio::spawn(async move { send(&mut slow).await });
    tokio::task::yield_now().await;
    handle.force_open();
    handle.force_closed();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(slow.await.unwrap().unwrap(), 500);
    // Admitted two generations ago: not counted, no trip.
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.counts().consecutive_failures, 0);
    assert_eq!(send(&mut svc).await.unwrap(), 200);
}

#[tokio::test(start_paused = true)]
async fn handle_overrides() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let (mut svc, mock) = breaker(
        base()
            .consecutive_failures(1)
            .on_state_change(recording(&events)),
    );
    let handle = svc.handle();

    handle.force_open();
    assert_eq!(handle.mode(), Mode::ForcedOpen);
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(open_for(send(&mut svc).await), Duration::from_secs(10));
    assert_eq!(mock.calls(), 0);

    handle.disable();
    mock.push([500, 500, 500].map(Reply::Status));
    for _ in 0..3 {
        assert_eq!(send(&mut svc).await.unwrap(), 500);
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(
        handle.counts().consecutive_failures,
        0,
        "disabled counts nothing"
    );

    handle.metrics_only();
    mock.push([500, 500].map(Reply::Status));
    send(&mut svc).await.unwrap();
    send(&mut svc).await.unwrap();
    assert_eq!(handle.state(), State::Closed, "metrics-only never trips");
    assert_eq!(handle.counts().consecutive_failures, 2, "but counts");

    handle.reset();
    assert_eq!(handle.mode(), Mode::Normal);
    assert_eq!(handle.counts().consecutive_failures, 0);
    mock.push([Reply::Status(500)]);
    send(&mut svc).await.unwrap();
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.counts().trips, 1);
    handle.force_closed();
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(
        handle.counts().trips,
        1,
        "force_closed keeps the trip count"
    );
    handle.reset();
    assert_eq!(handle.counts().trips, 0);
    assert!(
        events
            .lock()
            .iter()
            .any(|e| e.reason == Reason::Manual && e.mode == Mode::ForcedOpen)
    );
}

#[tokio::test(start_paused = true)]
async fn clones_and_layer_clones_share_one_breaker() {
    let layer = BreakerLayer::new(base().consecutive_failures(2).build().unwrap());
    let mock = Mock::new();
    let mut a = layer.clone().layer(mock.clone());
    let mut b = layer.layer(mock.clone()).clone();
    mock.push([500, 500].map(Reply::Status));
    send(&mut a).await.unwrap();
    send(&mut b).await.unwrap();
    assert_eq!(layer.handle().state(), State::Open);
    assert!(send(&mut a).await.is_err());
    assert!(send(&mut b).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn call_without_poll_ready_decides_in_call() {
    let (mut svc, mock) = breaker(base().consecutive_failures(1));
    mock.push([Reply::Status(500)]);
    let response = svc.call(Request::new(())).await.unwrap();
    assert_eq!(response.status(), 500);
    let error = svc.call(Request::new(())).await.unwrap_err();
    assert!(error.is::<tollway_core::CircuitOpen>());
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn circuit_open_is_a_local_rejection_for_other_layers() {
    let (mut svc, mock) = breaker(base().consecutive_failures(1));
    mock.push([Reply::Status(500)]);
    send(&mut svc).await.unwrap();
    let error = send(&mut svc).await.unwrap_err();
    assert!(tollway_core::error::is_local_rejection(&*error));
    use tollway_core::Classify;
    assert_eq!(
        Classifier::default().classify_error(&*error).kind(),
        OutcomeKind::Rejected
    );
}

#[tokio::test(start_paused = true)]
async fn slow_probe_counts_as_failed_probe_when_slow_calls_are_watched() {
    let (mut svc, mock) = tripped(base().slow_call_rate(Duration::from_millis(100), 0.9)).await;
    let handle = svc.handle();
    mock.push([Reply::After(Duration::from_millis(500), 200)]);
    let mut prober = svc.clone();
    let probe = tokio::spawn(async move { send(&mut prober).await });
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(probe.await.unwrap().unwrap(), 200);
    assert_eq!(handle.state(), State::Open);
    let counts = handle.counts();
    assert_eq!(counts.open_remaining, Some(Duration::from_secs(10)));
    assert_eq!(counts.trips, 2);
    assert!(send(&mut svc).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_time_window_remembers_a_failure_for_its_whole_length() {
    // Trips at 2 failures of 3 calls in a 10 s window.
    async fn run(last_failure_at: Duration) -> Breaker<Mock> {
        let (mut svc, mock) = breaker(
            base()
                .consecutive_failures(100)
                .failure_rate(0.6)
                .time_window(10)
                .minimum_calls(3),
        );
        mock.push([Reply::Status(500), Reply::Status(200), Reply::Status(500)]);
        tokio::time::advance(Duration::from_millis(900)).await;
        send(&mut svc).await.unwrap();
        tokio::time::advance(Duration::from_millis(4_100)).await;
        send(&mut svc).await.unwrap();
        tokio::time::advance(last_failure_at - Duration::from_secs(5)).await;
        send(&mut svc).await.unwrap();
        svc
    }
    // The first failure (at 0.9 s) is still in the window 9.6 s later.
    let svc = run(Duration::from_millis(10_500)).await;
    assert_eq!(svc.handle().state(), State::Open);
    // 10.2 s later (more than the length and its 1/64) it is gone: 1 failure in 2 calls.
    let svc = run(Duration::from_millis(11_100)).await;
    let counts = svc.handle().counts();
    assert_eq!(counts.state, State::Closed);
    assert_eq!((counts.window_calls, counts.window_failures), (2, 1));
}
