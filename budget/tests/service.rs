//! The budget layer in front of a mock upstream: reservations, charge policies, refunds, the 402
//! latch and balance sync.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::{Request, Response, StatusCode};
use tollway_budget::{Budget, BudgetLayer, ChargePolicy, Cost, Ledger, Priority, Window};
use tollway_core::{BoxError, BudgetExhausted, ExhaustedReason, FakeClock};
use tower::{Layer, Service, ServiceExt, service_fn};

/// 2024-03-10 12:00:00 UTC.
fn noon() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_710_072_000)
}

fn exhausted(err: &BoxError) -> BudgetExhausted {
    *err.downcast_ref::<BudgetExhausted>()
        .unwrap_or_else(|| panic!("expected BudgetExhausted, got {err}"))
}

/// An upstream that answers every request with `status` and counts the calls that reach it.
fn upstream(
    status: StatusCode,
    calls: Arc<AtomicU64>,
) -> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone {
    service_fn(move |_req: Request<()>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut response = Response::new(());
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_charge_exactly_the_budget() {
    let ledger = Ledger::new(1_000, Window::day());
    let calls = Arc::new(AtomicU64::new(0));
    let inner = {
        let calls = Arc::clone(&calls);
        service_fn(move |_req: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                // Hold the reservation across a yield so tasks really overlap.
                tokio::task::yield_now().await;
                Ok::<_, Infallible>(Response::new(()))
            }
        })
    };
    let service = BudgetLayer::new(ledger.clone()).layer(inner);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut service = service.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u64, 0u64);
            for _ in 0..40 {
                match service.ready().await.unwrap().call(Request::new(())).await {
                    Ok(_) => ok += 1,
                    Err(err) => {
                        assert_eq!(exhausted(&err).reason(), ExhaustedReason::Window);
                        refused += 1;
                    }
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        let (o, r) = task.await.unwrap();
        ok += o;
        refused += r;
    }
    assert_eq!(ok, 1_000);
    assert_eq!(refused, 64 * 40 - 1_000);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1_000,
        "refused requests never reach upstream"
    );
    let snapshot = ledger.snapshot();
    assert_eq!(snapshot.windows[0].spent, 1_000);
    assert_eq!(snapshot.reserved, 0);
}

#[tokio::test]
async fn only_successful_responses_are_charged_by_default() {
    let ledger = Ledger::new(10, Window::lifetime());
    let calls = Arc::new(AtomicU64::new(0));
    let mut ok = Budget::new(upstream(StatusCode::OK, Arc::clone(&calls)), ledger.clone());
    let mut failing = Budget::new(
        upstream(StatusCode::INTERNAL_SERVER_ERROR, Arc::clone(&calls)),
        ledger.clone(),
    );
    let mut missing = Budget::new(upstream(StatusCode::NOT_FOUND, calls), ledger.clone());
    ok.ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    failing
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    missing
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    let snapshot = ledger.snapshot();
    assert_eq!(snapshot.windows[0].spent, 1);
    assert_eq!(snapshot.reserved, 0);
    assert_eq!(ledger.remaining(), 9);
}

#[tokio::test]
async fn every_response_policy_charges_failures_too() {
    let ledger = Ledger::new(10, Window::lifetime());
    let calls = Arc::new(AtomicU64::new(0));
    let mut service = BudgetLayer::new(ledger.clone())
        .charge(ChargePolicy::EveryResponse)
        .layer(upstream(StatusCode::INTERNAL_SERVER_ERROR, calls));
    service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(ledger.snapshot().windows[0].spent, 1);
}

#[tokio::test]
async fn endpoint_prices_and_header_charges() {
    let ledger = Ledger::new(100, Window::lifetime());
    let inner = service_fn(|req: Request<()>| async move {
        let used = if req.uri().path() == "/search" {
            "4"
        } else {
            "not-a-number"
        };
        Ok::<_, Infallible>(
            Response::builder()
                .header("x-credits-used", used)
                .body(())
                .unwrap(),
        )
    });
    let mut service = BudgetLayer::new(ledger.clone())
        .cost(Cost::per_request(|_, uri, _| {
            if uri.path() == "/search" { 5 } else { 1 }
        }))
        .charge(ChargePolicy::from_header("x-credits-used"))
        .layer(inner);
    let search = Request::get("/search").body(()).unwrap();
    service.ready().await.unwrap().call(search).await.unwrap();
    assert_eq!(
        ledger.snapshot().windows[0].spent,
        4,
        "the header's charge wins"
    );
    let other = Request::get("/other").body(()).unwrap();
    service.ready().await.unwrap().call(other).await.unwrap();
    assert_eq!(
        ledger.snapshot().windows[0].spent,
        5,
        "a malformed header falls back to charging successes"
    );
}

#[tokio::test]
async fn errors_and_cancellations_are_refunded() {
    let ledger = Ledger::new(1, Window::lifetime());
    let failing = service_fn(|_req: Request<()>| async {
        Err::<Response<()>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    });
    let mut service = Budget::new(failing, ledger.clone());
    let err = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some());
    assert_eq!(ledger.remaining(), 1);

    let hanging =
        service_fn(|_req: Request<()>| std::future::pending::<Result<Response<()>, Infallible>>());
    let mut service = Budget::new(hanging, ledger.clone());
    let future = service.ready().await.unwrap().call(Request::new(()));
    assert_eq!(ledger.snapshot().reserved, 1);
    assert_eq!(
        ledger.remaining(),
        0,
        "the reservation holds while in flight"
    );
    drop(future);
    assert_eq!(ledger.snapshot().reserved, 0);
    assert_eq!(ledger.remaining(), 1);
}

#[tokio::test]
async fn a_402_latches_until_reset_sync_or_rollover() {
    let clock = FakeClock::starting_at(noon());
    let ledger = Ledger::builder()
        .limit(100, Window::day())
        .clock(clock.clone())
        .build();
    let calls = Arc::new(AtomicU64::new(0));
    let mut service = Budget::new(
        upstream(StatusCode::PAYMENT_REQUIRED, Arc::clone(&calls)),
        ledger.clone(),
    );
    let response = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(ledger.is_latched());
    for _ in 0..3 {
        let err = service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap_err();
        let e = exhausted(&err);
        assert_eq!(e.reason(), ExhaustedReason::Upstream402);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(12 * 3600)));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "never resent after a 402");
    assert_eq!(
        ledger.snapshot().windows[0].spent,
        0,
        "a 402 is not charged"
    );

    ledger.reset();
    assert!(!ledger.is_latched());
    ledger.latch();
    ledger.sync_balance(0);
    assert!(
        ledger.is_latched(),
        "a sync at zero does not lift the latch"
    );
    ledger.sync_balance(5);
    assert!(!ledger.is_latched());
    ledger.latch();
    clock.advance(Duration::from_secs(12 * 3600 - 1));
    assert!(ledger.is_latched());
    clock.advance(Duration::from_secs(1));
    assert!(!ledger.is_latched(), "the day rolled over");
}

#[tokio::test]
async fn balance_header_syncs_the_ledger() {
    let ledger = Ledger::new(1_000, Window::day());
    let inner = service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("x-balance", "3")
                .body(())
                .unwrap(),
        )
    });
    let mut service = BudgetLayer::new(ledger.clone())
        .balance_header("x-balance")
        .layer(inner);
    service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(ledger.snapshot().balance, Some(3));
    assert_eq!(
        ledger.remaining(),
        3,
        "the balance binds below the daily limit"
    );
    let held: Vec<_> = (0..3)
        .map(|_| ledger.reserve(1, Priority::Normal).unwrap())
        .collect();
    let err = ledger.reserve(1, Priority::Normal).unwrap_err();
    assert_eq!(
        err.exhausted().unwrap().reason(),
        ExhaustedReason::Upstream402
    );
    drop(held);
}

#[tokio::test]
async fn priorities_pass_through_request_extensions() {
    let ledger = Ledger::builder()
        .limit(10, Window::lifetime())
        .critical_reserve(3)
        .backfill_reserve(6)
        .build();
    let calls = Arc::new(AtomicU64::new(0));
    let mut service = Budget::new(upstream(StatusCode::OK, calls), ledger.clone());
    let with = |priority| {
        let mut request = Request::new(());
        request.extensions_mut().insert(priority);
        request
    };
    let mut sent = Vec::new();
    for priority in [Priority::Backfill, Priority::Normal, Priority::Critical] {
        let mut ok = 0;
        loop {
            match service.ready().await.unwrap().call(with(priority)).await {
                Ok(_) => ok += 1,
                Err(err) => {
                    let e = exhausted(&err);
                    let expected = if priority == Priority::Critical {
                        ExhaustedReason::Window
                    } else {
                        ExhaustedReason::CriticalReserve
                    };
                    assert_eq!(e.reason(), expected);
                    break;
                }
            }
        }
        sent.push(ok);
    }
    assert_eq!(
        sent,
        vec![4, 3, 3],
        "backfill leaves 6, normal leaves 3, critical spends all"
    );
}

/// An inner service that is ready only at `ready_at` (a rate limiter whose next permit is far
/// away), counting the calls that reach it. Each clone waits on its own timer.
struct SlowReady {
    ready_at: tokio::time::Instant,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    calls: Arc<AtomicU64>,
}

impl SlowReady {
    fn new(after: Duration, calls: Arc<AtomicU64>) -> Self {
        Self {
            ready_at: tokio::time::Instant::now() + after,
            sleep: None,
            calls,
        }
    }
}

impl Clone for SlowReady {
    fn clone(&self) -> Self {
        Self {
            ready_at: self.ready_at,
            sleep: None,
            calls: Arc::clone(&self.calls),
        }
    }
}

impl Service<Request<()>> for SlowReady {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        let ready_at = self.ready_at;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(ready_at)));
        std::task::ready!(sleep.as_mut().poll(cx));
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(())))
    }
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_decided_before_waiting_for_the_inner_service() {
    let ledger = Ledger::new(2, Window::day());
    let calls = Arc::new(AtomicU64::new(0));
    let service = BudgetLayer::new(ledger.clone())
        .layer(SlowReady::new(Duration::from_secs(10), Arc::clone(&calls)));
    let start = tokio::time::Instant::now();
    let waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(service.clone().oneshot(Request::new(()))))
        .collect();
    tokio::task::yield_now().await;
    // Both hold their credit while they wait for the permit: the third is refused at once.
    assert_eq!(ledger.snapshot().reserved, 2);
    let refused = service.clone().oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(exhausted(&refused).reason(), ExhaustedReason::Window);
    assert_eq!(
        tokio::time::Instant::now(),
        start,
        "refused without waiting for a permit"
    );
    for task in waiting {
        task.await.unwrap().unwrap();
    }
    assert_eq!(tokio::time::Instant::now() - start, Duration::from_secs(10));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(ledger.snapshot().windows[0].spent, 2);

    // A latched ledger refuses at once too, and a caller that gives up while waiting for the
    // permit gets its credit back.
    let ledger = Ledger::new(5, Window::day());
    let service = BudgetLayer::new(ledger.clone())
        .layer(SlowReady::new(Duration::from_secs(60), Arc::clone(&calls)));
    let given_up = tokio::time::timeout(
        Duration::from_secs(1),
        service.clone().oneshot(Request::new(())),
    )
    .await;
    assert!(given_up.is_err());
    assert_eq!(ledger.snapshot().reserved, 0, "refunded when dropped");
    ledger.latch();
    let before = tokio::time::Instant::now();
    let refused = service.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(exhausted(&refused).reason(), ExhaustedReason::Upstream402);
    assert_eq!(tokio::time::Instant::now(), before);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_balance_read_before_a_402_never_lifts_its_latch() {
    let ledger = Ledger::new(100, Window::day());
    let calls = Arc::new(AtomicU64::new(0));
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let released = Arc::new(parking_lot::Mutex::new(Some(released)));
    let inner = {
        let calls = Arc::clone(&calls);
        service_fn(move |req: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let slow = req.uri().path() == "/slow";
            let released = released.lock().take();
            async move {
                if slow {
                    // Sent before the 402, answered after it, claiming plenty of credit.
                    released.expect("one slow request").await.unwrap();
                    return Ok::<_, Infallible>(
                        Response::builder()
                            .header("x-balance", "500")
                            .body(())
                            .unwrap(),
                    );
                }
                let mut response = Response::new(());
                *response.status_mut() = StatusCode::PAYMENT_REQUIRED;
                Ok(response)
            }
        })
    };
    let service = BudgetLayer::new(ledger.clone())
        .balance_header("x-balance")
        .layer(inner);
    let slow = tokio::spawn(
        service
            .clone()
            .oneshot(Request::get("/slow").body(()).unwrap()),
    );
    tokio::task::yield_now().await;
    let answer = service
        .clone()
        .oneshot(Request::get("/pay").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(ledger.is_latched());
    release.send(()).unwrap();
    slow.await.unwrap().unwrap();
    assert!(
        ledger.is_latched(),
        "a balance read before the 402 does not lift its latch"
    );
    let refused = service.clone().oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(exhausted(&refused).reason(), ExhaustedReason::Upstream402);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "nothing sent after the 402"
    );
    // A balance read after the 402 (a balance endpoint, polled) lifts it.
    ledger.sync_balance(40);
    assert!(!ledger.is_latched());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_on_a_file_ledger_charge_exactly_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let ledger = Ledger::builder()
        .limit(300, Window::day())
        .compact_every(100)
        .open(&path)
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let service =
        BudgetLayer::new(ledger.clone()).layer(upstream(StatusCode::OK, Arc::clone(&calls)));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                let mut ok = 0u64;
                for _ in 0..10 {
                    match service.clone().oneshot(Request::new(())).await {
                        Ok(_) => ok += 1,
                        Err(err) => assert_eq!(exhausted(&err).reason(), ExhaustedReason::Window),
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        ok += task.await.unwrap();
    }
    assert_eq!(ok, 300);
    assert_eq!(calls.load(Ordering::SeqCst), 300);
    assert_eq!(ledger.snapshot().windows[0].spent, 300);
    drop(service);
    drop(ledger);
    let reopened = Ledger::builder()
        .limit(300, Window::day())
        .open(&path)
        .unwrap();
    assert_eq!(reopened.snapshot().windows[0].spent, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_backed_call_given_up_at_any_point_strands_no_credit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let ledger = Ledger::builder()
        .limit(1_000, Window::day())
        .open(&path)
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    // An inner service that is never ready in time: callers give up while waiting for it, or
    // earlier, while their reservation is being made durable.
    let service = BudgetLayer::new(ledger.clone()).layer(SlowReady::new(
        Duration::from_secs(3_600),
        Arc::clone(&calls),
    ));
    for wait_us in [0u64, 50, 200, 1_000, 5_000, 20_000] {
        let attempts: Vec<_> = (0..16)
            .map(|_| {
                tokio::time::timeout(
                    Duration::from_micros(wait_us),
                    service.clone().oneshot(Request::new(())),
                )
            })
            .collect();
        for attempt in attempts {
            assert!(attempt.await.is_err(), "nothing can finish in time");
        }
    }
    ledger.flush().await;
    let snapshot = ledger.snapshot();
    assert_eq!((snapshot.reserved, snapshot.windows[0].spent), (0, 0));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    drop(service);
    drop(ledger);
    // And the journal agrees: every reservation was refunded, none counts after a restart.
    let reopened = Ledger::builder()
        .limit(1_000, Window::day())
        .open(&path)
        .unwrap();
    assert_eq!(reopened.snapshot().windows[0].spent, 0);
}
