//! Many tasks on a multi-threaded runtime racing the open -> half-open transition through the
//! service: the inner service sees exactly the permitted probes.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{Mock, Reply, send};
use http::Request;
use tokio::sync::Barrier;
use tollway_breaker::{Breaker, BreakerConfig, OpenDuration, State};
use tollway_core::{CircuitOpen, FakeClock};
use tower::{Service, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_tasks_get_exactly_the_permitted_probes() {
    const TASKS: usize = 32;
    for max_probes in [1u32, 3] {
        for _ in 0..20 {
            let clock = FakeClock::new();
            let config = BreakerConfig::builder()
                .consecutive_failures(1)
                .open_duration(OpenDuration::fixed(Duration::from_secs(5)))
                .max_probes(max_probes)
                .build()
                .unwrap();
            let mock = Mock::new();
            let mut breaker = Breaker::with_clock(mock.clone(), config, clock.clone());
            mock.push([Reply::Status(500)]);
            send(&mut breaker).await.unwrap();
            assert_eq!(breaker.handle().state(), State::Open);
            // Every probe hangs, so permits are never given back during the race.
            mock.push(std::iter::repeat_n(Reply::Hang, TASKS));
            clock.advance(Duration::from_secs(5));

            let barrier = Arc::new(Barrier::new(TASKS));
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let mut service = breaker.clone();
                    let barrier = Arc::clone(&barrier);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        service.ready().await.unwrap();
                        let mut future = Box::pin(service.call(Request::new(())));
                        let mut cx = Context::from_waker(Waker::noop());
                        match future.as_mut().poll(&mut cx) {
                            Poll::Ready(Err(e)) => {
                                assert!(e.is::<CircuitOpen>());
                                None
                            }
                            Poll::Ready(Ok(_)) => panic!("probes hang"),
                            // A probe in flight: keep it (dropping would free the permit).
                            Poll::Pending => {
                                Some(future as Pin<Box<dyn Future<Output = _> + Send>>)
                            }
                        }
                    })
                })
                .collect();
            let mut probes = Vec::new();
            for task in tasks {
                probes.extend(task.await.unwrap());
            }
            assert_eq!(probes.len(), max_probes as usize);
            assert_eq!(mock.calls(), 1 + max_probes as usize);
            let counts = breaker.handle().counts();
            assert_eq!(counts.state, State::HalfOpen);
            assert_eq!(counts.probes_in_flight, max_probes);
            drop(probes);
            assert_eq!(breaker.handle().counts().probes_in_flight, 0);
        }
    }
}
