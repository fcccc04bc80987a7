//! The closed path that holds no reference count on the breaker: a call that started while the
//! breaker was healthy must still record what it has to, into the right breaker, and never into
//! another breaker that reused its slot.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{Mock, Reply, send};
use http::Request;
use tollway_breaker::{Breaker, BreakerConfig, OpenDuration, State};
use tower::{Service, ServiceExt};

fn config(consecutive: u32) -> BreakerConfig {
    BreakerConfig::builder()
        .consecutive_failures(consecutive)
        .failure_rate(0.9)
        .count_window(4)
        .minimum_calls(4)
        .open_duration(OpenDuration::fixed(Duration::from_secs(10)))
        .build()
        .unwrap()
}

type Pending = Pin<Box<dyn Future<Output = Result<http::Response<()>, tollway_core::BoxError>>>>;

/// Starts a call and returns its future unpolled.
async fn start(breaker: &mut Breaker<Mock>) -> Pending {
    breaker.ready().await.unwrap();
    Box::pin(breaker.call(Request::new(())))
}

fn poll_now(future: &mut Pending) -> Poll<Result<http::Response<()>, tollway_core::BoxError>> {
    future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test(start_paused = true)]
async fn a_failure_that_started_healthy_is_recorded_and_trips() {
    let mock = Mock::new();
    let mut breaker = Breaker::new(mock.clone(), config(2));
    // Fill the window with successes: the breaker is healthy, calls travel light.
    for _ in 0..4 {
        send(&mut breaker).await.unwrap();
    }
    mock.push([Reply::Status(500), Reply::Status(502)]);
    send(&mut breaker).await.unwrap();
    send(&mut breaker).await.unwrap();
    assert_eq!(breaker.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_success_that_started_healthy_still_resets_the_run_of_failures() {
    let mock = Mock::new();
    let mut breaker = Breaker::new(mock.clone(), config(2));
    for _ in 0..4 {
        send(&mut breaker).await.unwrap();
    }
    // Started while healthy; answers after a failure was recorded.
    mock.push([Reply::After(Duration::from_millis(50), 200)]);
    let mut slow_success = start(&mut breaker).await;
    assert!(poll_now(&mut slow_success).is_pending());
    mock.push([Reply::Status(500)]);
    send(&mut breaker).await.unwrap();
    assert_eq!(breaker.handle().counts().consecutive_failures, 1);
    tokio::time::advance(Duration::from_millis(50)).await;
    assert!(slow_success.await.is_ok());
    assert_eq!(
        breaker.handle().counts().consecutive_failures,
        0,
        "the success was recorded, not skipped"
    );
    // So one more failure does not trip (two in a row would).
    mock.push([Reply::Status(500)]);
    send(&mut breaker).await.unwrap();
    assert_eq!(breaker.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_result_outliving_its_breaker_never_lands_in_the_next_one() {
    let mock = Mock::new();
    let mut old = Breaker::new(mock.clone(), config(1));
    for _ in 0..4 {
        send(&mut old).await.unwrap();
    }
    mock.push([Reply::After(Duration::from_millis(50), 500)]);
    let mut orphan = start(&mut old).await;
    assert!(poll_now(&mut orphan).is_pending());
    drop(old);
    // New breakers take slots, the dropped one's among them.
    let fresh: Vec<_> = (0..8)
        .map(|_| Breaker::new(Mock::new(), config(1)))
        .collect();
    tokio::time::advance(Duration::from_millis(50)).await;
    assert_eq!(orphan.await.unwrap().status(), 500);
    for breaker in &fresh {
        let counts = breaker.handle().counts();
        assert_eq!(counts.state, State::Closed);
        assert_eq!(counts.consecutive_failures, 0);
        assert_eq!(counts.window_failures, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_light_and_full_calls_keep_exact_counts() {
    // Consecutive failures off: every result counts in the window; after a burst of mixed
    // results the window must hold exactly the last four, whatever path each took.
    for _ in 0..50 {
        let config = BreakerConfig::builder()
            .without_consecutive_failures()
            .failure_rate(1.0)
            .count_window(64)
            .minimum_calls(64)
            .build()
            .unwrap();
        let mock = Mock::new();
        let breaker = Breaker::new(mock.clone(), config);
        // 32 failures among 64 calls, all concurrent.
        mock.push((0..64).map(|i| Reply::Status(if i % 2 == 0 { 500 } else { 200 })));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let mut breaker = breaker.clone();
                tokio::spawn(async move { send(&mut breaker).await.unwrap() })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let counts = breaker.handle().counts();
        assert_eq!(counts.state, State::Closed, "50% is under the 100% rate");
        assert_eq!((counts.window_calls, counts.window_failures), (64, 32));
    }
}
