//! The `metrics` feature: calls, rejections, transitions and the state gauge reach the
//! installed recorder, through the service.
#![cfg(feature = "metrics")]

mod common;

use std::time::Duration;

use common::{Mock, Reply, send};
use tollway_breaker::{Breaker, BreakerConfig, OpenDuration, State};
use tollway_test_support::metrics::CapturingRecorder;

#[tokio::test(start_paused = true)]
async fn counts_calls_rejections_transitions_and_state() {
    let recorder = CapturingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let config = BreakerConfig::builder()
        .name("api")
        .consecutive_failures(2)
        .without_failure_rate()
        .open_duration(OpenDuration::fixed(Duration::from_secs(1)))
        .build()
        .unwrap();
    let mock = Mock::new();
    let mut service = Breaker::new(mock.clone(), config);
    let handle = service.handle();
    // A success, a 404 (the client's fault: a success for the upstream), then two server
    // failures trip it.
    mock.push([
        Reply::Status(200),
        Reply::Status(404),
        Reply::Status(500),
        Reply::Status(503),
    ]);
    for _ in 0..4 {
        send(&mut service).await.unwrap();
    }
    assert_eq!(handle.state(), State::Open);
    assert!(send(&mut service).await.is_err());
    assert!(send(&mut service).await.is_err());

    let get = |name: &str| recorder.counter(name);
    assert_eq!(
        get("tollway_breaker_calls_total{breaker=api,result=success}"),
        2
    );
    assert_eq!(
        get("tollway_breaker_calls_total{breaker=api,result=failure}"),
        2
    );
    assert_eq!(get("tollway_breaker_rejected_total{breaker=api}"), 2);
    assert_eq!(
        get("tollway_breaker_transitions_total{breaker=api,from=closed,to=open}"),
        1
    );
    assert_eq!(
        recorder.gauge("tollway_breaker_state{breaker=api}"),
        Some(State::Open.as_gauge())
    );
}

/// Another layer's refusal (here the limiter's) says nothing about the upstream: ignored.
#[tokio::test(start_paused = true)]
async fn another_layers_refusal_is_counted_as_ignored() {
    use tower::{Service, ServiceExt};
    let recorder = CapturingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let config = BreakerConfig::builder().name("quiet").build().unwrap();
    let refusing = tower::service_fn(|_: http::Request<()>| async {
        Err::<http::Response<()>, tollway_core::BoxError>(Box::new(tollway_core::RateLimited::new(
            Duration::from_secs(1),
        )))
    });
    let mut service = Breaker::new(refusing, config);
    for _ in 0..3 {
        let ready = service.ready().await.unwrap();
        assert!(ready.call(http::Request::new(())).await.is_err());
    }
    assert_eq!(
        recorder.counter("tollway_breaker_calls_total{breaker=quiet,result=ignored}"),
        3
    );
    assert_eq!(
        recorder.counter("tollway_breaker_calls_total{breaker=quiet,result=failure}"),
        0
    );
}
