//! Fleet mode against a real `redis-server`: `TOLLWAY_REDIS_URL` if set, else a server this file
//! starts on a free loopback port. Without either the tests print a notice and pass, unless
//! `TOLLWAY_REQUIRE_REDIS=1`. Every test uses its own random key prefix. These run on real time,
//! with margins a correct implementation never misses.
#![cfg(feature = "redis")]
#![allow(clippy::print_stderr)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tollway_budget::{
    BudgetExhausted, BudgetLayer, ExhaustedReason, Ledger, LedgerBuilder, Priority, ReserveError,
    StoreUnavailable, Window,
};
use tollway_test_support::{TestRedis, random_prefix};
use tower::{Layer, Service, ServiceExt, service_fn};

fn exhausted(err: &ReserveError) -> ExhaustedReason {
    err.exhausted()
        .unwrap_or_else(|| panic!("expected an exhausted budget, got {err}"))
        .reason()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_on_two_connections_charge_exactly_the_budget() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let a = Ledger::builder()
        .limit(1_000, Window::day())
        .limit(50_000, Window::month())
        .redis(server.connect().await, &prefix);
    let b = Ledger::builder()
        .limit(1_000, Window::day())
        .limit(50_000, Window::month())
        .redis(server.connect().await, &prefix);
    let charged = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (charged, refused) = (Arc::clone(&charged), Arc::clone(&refused));
            tokio::spawn(async move {
                loop {
                    match ledger.reserve_async(1, Priority::Normal).await {
                        Ok(reservation) => {
                            reservation.settle_async(1).await.expect("settled");
                            charged.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            assert_eq!(exhausted(&err), ExhaustedReason::Window);
                            refused.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(charged.load(Ordering::Relaxed), 1_000);
    assert_eq!(refused.load(Ordering::Relaxed), 64);
    let snapshot = b.snapshot_async().await.expect("snapshot");
    assert_eq!(snapshot.windows[0].spent, 1_000);
    assert_eq!(snapshot.windows[1].spent, 1_000);
    assert_eq!(snapshot.reserved, 0);
    assert_eq!(snapshot.remaining, 0);
}

#[tokio::test]
async fn an_expired_lease_counts_as_spent_and_never_twice() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let ledger = Ledger::builder()
        .limit(10, Window::lifetime())
        .lease(Duration::from_millis(1_000))
        .redis(server.connect().await, &prefix);

    let crashed = ledger.reserve_async(3, Priority::Normal).await.unwrap();
    // A worker that dies holding a reservation never settles nor refunds it.
    #[allow(clippy::mem_forget)]
    std::mem::forget(crashed);
    let late_settle = ledger.reserve_async(2, Priority::Normal).await.unwrap();
    let late_refund = ledger.reserve_async(1, Priority::Normal).await.unwrap();
    let settled = ledger.reserve_async(1, Priority::Normal).await.unwrap();
    settled.settle_async(1).await.unwrap();

    let before = ledger.snapshot_async().await.unwrap();
    assert_eq!((before.windows[0].spent, before.reserved), (1, 6));
    assert_eq!(before.remaining, 3);

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Every lease ran out: 3 + 2 + 1 count as spent at their full cost.
    let expired = ledger.snapshot_async().await.unwrap();
    assert_eq!((expired.windows[0].spent, expired.reserved), (7, 0));

    // Settling or refunding an expired lease counts nothing twice; a charge above the cost adds
    // only the difference.
    late_settle.settle_async(4).await.unwrap();
    late_refund.refund_async().await.unwrap();
    let after = ledger.snapshot_async().await.unwrap();
    assert_eq!((after.windows[0].spent, after.reserved), (9, 0));
    assert_eq!(
        exhausted(&ledger.reserve_async(2, Priority::Normal).await.unwrap_err()),
        ExhaustedReason::Window
    );
}

#[tokio::test]
async fn the_402_latch_is_shared_by_every_ledger_instance() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let build = || {
        Ledger::builder()
            .limit(100, Window::day())
            .limit(1_000, Window::rolling(Duration::from_millis(1_500)))
    };
    let a = build().redis(server.connect().await, &prefix);
    let b = build().redis(server.connect().await, &prefix);

    a.latch_async().await.unwrap();
    let err = b.reserve_async(1, Priority::Critical).await.unwrap_err();
    assert_eq!(exhausted(&err), ExhaustedReason::Upstream402);
    // The latch lifts by itself when the earliest window rolls over (the rolling one here).
    let latched_for = err.exhausted().unwrap().retry_after().expect("a known end");
    assert!(
        latched_for <= Duration::from_millis(1_500),
        "{latched_for:?}"
    );
    assert!(b.snapshot_async().await.unwrap().latched);

    b.reset_async().await.unwrap();
    assert!(a.reserve_async(1, Priority::Normal).await.is_ok());

    // A balance synced above zero lifts it too; a balance of zero refuses everything.
    b.latch_async().await.unwrap();
    assert!(a.reserve_async(1, Priority::Normal).await.is_err());
    a.sync_balance_async(0).await.unwrap();
    let err = b.reserve_async(1, Priority::Critical).await.unwrap_err();
    assert_eq!(exhausted(&err), ExhaustedReason::Upstream402);
    a.sync_balance_async(5).await.unwrap();
    let reservation = b.reserve_async(1, Priority::Normal).await.unwrap();
    reservation.settle_async(1).await.unwrap();
    assert_eq!(a.snapshot_async().await.unwrap().balance, Some(4));

    // Latched again, it lifts at the rolling window's length without anyone's help.
    a.latch_async().await.unwrap();
    assert!(b.reserve_async(1, Priority::Normal).await.is_err());
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert!(b.reserve_async(1, Priority::Normal).await.is_ok());
}

#[tokio::test]
async fn windows_roll_over_on_redis_time_and_their_keys_expire() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let ledger = Ledger::builder()
        .limit(3, Window::rolling(Duration::from_millis(2_000)))
        .limit(1_000, Window::day())
        .redis(server.connect().await, &prefix);
    for _ in 0..3 {
        let r = ledger.reserve_async(1, Priority::Normal).await.unwrap();
        r.settle_async(1).await.unwrap();
    }
    let err = ledger.reserve_async(1, Priority::Normal).await.unwrap_err();
    assert_eq!(exhausted(&err), ExhaustedReason::Window);
    let wait = err
        .exhausted()
        .unwrap()
        .retry_after()
        .expect("rolling spend leaves");
    // At most one window plus one bucket (2,000 ms / 60) after the first charge.
    assert!(wait <= Duration::from_millis(2_100), "{wait:?}");

    // Every key of this ledger expires by itself.
    let mut raw = server.connect().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}}}*"))
        .query_async(&mut raw)
        .await
        .unwrap();
    // The two window keys and the epoch; no lease is live.
    assert_eq!(keys.len(), 3, "{keys:?}");
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut raw)
            .await
            .unwrap();
        // The epoch lives as long as the longest-lived key could: a lease plus a day.
        assert!(ttl > 0 && ttl <= 30_000 + 86_400_000, "{key}: {ttl}");
    }
    // A live lease's bookkeeping expires too: after the lease plus the longest window (a day).
    let held = ledger.reserve_async(0, Priority::Normal).await.unwrap();
    for key in ["leases", "reserved"] {
        let key = format!("{{{prefix}}}:{key}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        let most = 30_000 + 86_400_000;
        assert!(ttl > most - 5_000 && ttl <= most, "{key}: {ttl}");
    }
    held.refund_async().await.unwrap();

    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    let snapshot = ledger.snapshot_async().await.unwrap();
    assert_eq!(snapshot.windows[0].spent, 0);
    assert_eq!(snapshot.windows[1].spent, 3);
    assert!(ledger.reserve_async(3, Priority::Normal).await.is_ok());
}

#[tokio::test]
async fn a_skewed_local_clock_still_counts_in_redis_time() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    // This process believes it is three days ago: its day, week and month are wrong. The script
    // checks every calendar period against Redis's clock and has it recomputed.
    let three_days_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 86_400);
    let prefix = random_prefix();
    let skewed = Ledger::builder()
        .limit(10, Window::day())
        .limit(100, Window::month())
        .clock(tollway_core::FakeClock::starting_at(three_days_ago))
        .redis(server.connect().await, &prefix);
    let honest = Ledger::builder()
        .limit(10, Window::day())
        .limit(100, Window::month())
        .redis(server.connect().await, &prefix);
    for _ in 0..4 {
        let r = skewed.reserve_async(2, Priority::Normal).await.unwrap();
        r.settle_async(2).await.unwrap();
    }
    let seen = honest.snapshot_async().await.unwrap();
    assert_eq!(seen.windows[0].spent, 8);
    let left = honest.reserve_async(3, Priority::Normal).await.unwrap_err();
    assert_eq!(exhausted(&left), ExhaustedReason::Window);
    // Today ends within a day, in Redis's time, not the skewed one.
    let day_left = seen.windows[0].resets_in.expect("a calendar day ends");
    assert!(day_left <= Duration::from_secs(86_400), "{day_left:?}");
}

#[tokio::test]
async fn critical_reserve_decides_as_the_in_memory_ledger_does() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let build = || {
        Ledger::builder()
            .limit(20, Window::day())
            .critical_reserve(4)
            .backfill_reserve(8)
    };
    let memory = build().build();
    let shared: LedgerBuilder = build();
    let shared = shared.redis(server.connect().await, random_prefix());
    let steps = [
        (5, Priority::Backfill, true),
        (9, Priority::Normal, true),
        (3, Priority::Backfill, false),
        (3, Priority::Normal, false),
        (2, Priority::Normal, false),
        (5, Priority::Critical, false),
        (4, Priority::Critical, true),
        (1, Priority::Critical, false),
    ];
    let mut held = Vec::new();
    for (cost, priority, settle) in steps {
        let local = memory.reserve(cost, priority);
        let remote = shared.reserve_async(cost, priority).await;
        match (local, remote) {
            (Ok(l), Ok(r)) => {
                if settle {
                    l.settle(cost);
                    r.settle_async(cost).await.unwrap();
                } else {
                    held.push((l, r));
                }
            }
            (Err(l), Err(r)) => assert_eq!(exhausted(&l), exhausted(&r), "{cost} {priority:?}"),
            (l, r) => panic!("{cost} {priority:?}: memory {l:?}, redis {r:?}"),
        }
    }
    let remote = shared.snapshot_async().await.unwrap();
    let local = memory.snapshot();
    assert_eq!(remote.windows[0].spent, local.windows[0].spent);
    assert_eq!(remote.reserved, local.reserved);
    assert_eq!(remote.remaining, local.remaining);
    assert_eq!(remote.reserved, 2);
    assert_eq!(
        exhausted(&shared.reserve_async(1, Priority::Normal).await.unwrap_err()),
        exhausted(&memory.reserve(1, Priority::Normal).unwrap_err()),
    );
    drop(held);
}

#[tokio::test]
async fn a_flushed_script_cache_is_reloaded() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let ledger = Ledger::builder()
        .limit(100, Window::day())
        .redis(server.connect().await, random_prefix());
    let mut raw = server.connect().await;
    for round in 0..3 {
        let r = ledger.reserve_async(1, Priority::Normal).await.unwrap();
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut raw)
            .await
            .unwrap();
        r.settle_async(1).await.unwrap();
        let spent = ledger.snapshot_async().await.unwrap().windows[0].spent;
        assert_eq!(spent, round + 1);
    }
}

#[tokio::test]
async fn the_service_spends_from_redis_and_a_dropped_call_is_refunded() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let ledger = Ledger::builder()
        .limit(5, Window::day())
        .redis(server.connect().await, random_prefix());
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let mut service =
        BudgetLayer::new(ledger.clone()).layer(service_fn(move |request: http::Request<()>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let hang = request.uri().path() == "/hang";
            async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok::<_, Infallible>(http::Response::new(()))
            }
        }));

    // A call dropped while its request hangs refunds its reservation...
    let hung = service
        .ready()
        .await
        .unwrap()
        .call(http::Request::get("/hang").body(()).unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(200), hung)
            .await
            .is_err()
    );
    // ...and so does one dropped before its reservation came back.
    drop(service.ready().await.unwrap().call(http::Request::new(())));
    ledger.flush().await;
    let snapshot = ledger.snapshot_async().await.unwrap();
    assert_eq!((snapshot.windows[0].spent, snapshot.reserved), (0, 0));

    let mut ok = 0;
    for _ in 0..8 {
        match service
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
        {
            Ok(_) => ok += 1,
            Err(err) => {
                let exhausted = err
                    .downcast_ref::<BudgetExhausted>()
                    .expect("budget refusal");
                assert_eq!(exhausted.reason(), ExhaustedReason::Window);
            }
        }
    }
    assert_eq!(ok, 5);
    ledger.flush().await;
    assert_eq!(ledger.snapshot_async().await.unwrap().windows[0].spent, 5);
    // The hung call, the 5 that went through; never the refused ones nor the one dropped early.
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_402_response_latches_every_process() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let a = Ledger::builder()
        .limit(100, Window::day())
        .redis(server.connect().await, &prefix);
    let b = Ledger::builder()
        .limit(100, Window::day())
        .redis(server.connect().await, &prefix);
    let mut service = BudgetLayer::new(a.clone()).layer(service_fn(|_: http::Request<()>| async {
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::PAYMENT_REQUIRED;
        Ok::<_, Infallible>(response)
    }));
    let response = service
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    a.flush().await;
    let err = b.reserve_async(1, Priority::Critical).await.unwrap_err();
    assert_eq!(exhausted(&err), ExhaustedReason::Upstream402);
    // A 402 is not charged (success-only policy).
    assert_eq!(b.snapshot_async().await.unwrap().windows[0].spent, 0);
}

#[tokio::test]
async fn redis_down_fails_closed_with_a_typed_error() {
    // This test stops its server, so it always runs its own.
    let Some(server) = TestRedis::own().await else {
        return;
    };
    let ledger = Ledger::builder()
        .limit(100, Window::day())
        .redis(server.connect().await, random_prefix());
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let mut service =
        BudgetLayer::new(ledger.clone()).layer(service_fn(move |_: http::Request<()>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(http::Response::new(())) }
        }));
    service
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    ledger.flush().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let mut raw = server.connect().await;
    let _ = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async::<()>(&mut raw)
        .await;

    for _ in 0..3 {
        let started = std::time::Instant::now();
        let err = service
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap_err();
        let unavailable = err
            .downcast_ref::<StoreUnavailable>()
            .unwrap_or_else(|| panic!("expected StoreUnavailable, got {err}"));
        assert_eq!(unavailable.operation(), "reserve");
        // Within the ledger's store timeout (1 s by default), not the connection's retries.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    // Fail closed: nothing reached the inner service.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(matches!(
        ledger.reserve_async(1, Priority::Critical).await,
        Err(ReserveError::Store(_))
    ));
    assert!(ledger.snapshot_async().await.is_err());
}

#[tokio::test]
async fn after_a_402_the_next_request_of_this_process_is_never_sent() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let ledger = Ledger::builder()
        .limit(100, Window::day())
        .redis(server.connect().await, random_prefix());
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let mut service =
        BudgetLayer::new(ledger.clone()).layer(service_fn(move |_: http::Request<()>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                let mut response = http::Response::new(());
                *response.status_mut() = http::StatusCode::PAYMENT_REQUIRED;
                Ok::<_, Infallible>(response)
            }
        }));
    let first = service
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(first.status(), 402);
    // No flush, no waiting for Redis: the latch holds in this process the moment the 402 is
    // seen.
    for _ in 0..5 {
        let refused = service
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap_err();
        let exhausted = refused.downcast_ref::<BudgetExhausted>().expect("refused");
        assert_eq!(exhausted.reason(), ExhaustedReason::Upstream402);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "nothing sent after the 402"
    );
    ledger.flush().await;
    assert!(ledger.snapshot_async().await.unwrap().latched);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_reservation_slips_in_between_a_402s_refund_and_its_latch() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let build = || Ledger::builder().limit(1, Window::lifetime());
    let here = build().redis(server.connect().await, &prefix);
    let elsewhere = build().redis(server.connect().await, &prefix);
    // The request below holds the only credit; it is answered with a 402 once another process
    // is hammering the ledger. The hammer can only ever be refused: by the window while the
    // credit is held, by the latch after the 402. A refund that landed before the latch would
    // hand it the credit.
    let (answer, answered) = tokio::sync::oneshot::channel::<()>();
    let answered = Arc::new(parking_lot::Mutex::new(Some(answered)));
    let service = BudgetLayer::new(here.clone()).layer(service_fn(move |_: http::Request<()>| {
        let answered = answered.lock().take();
        async move {
            answered.expect("one request").await.unwrap();
            let mut response = http::Response::new(());
            *response.status_mut() = http::StatusCode::PAYMENT_REQUIRED;
            Ok::<_, Infallible>(response)
        }
    }));
    let call = tokio::spawn(service.oneshot(http::Request::new(())));
    while here.snapshot_async().await.unwrap().reserved == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let granted = Arc::new(AtomicUsize::new(0));
    let hammer = {
        let (stop, granted) = (Arc::clone(&stop), Arc::clone(&granted));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(reservation) = elsewhere.reserve_async(1, Priority::Critical).await {
                    granted.fetch_add(1, Ordering::SeqCst);
                    drop(reservation);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    answer.send(()).unwrap();
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), 402);
    here.flush().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::SeqCst);
    hammer.await.unwrap();
    assert_eq!(granted.load(Ordering::SeqCst), 0);
    let snapshot = here.snapshot_async().await.unwrap();
    assert!(snapshot.latched);
    assert_eq!((snapshot.windows[0].spent, snapshot.reserved), (0, 0));
}

#[tokio::test]
async fn a_balance_read_before_the_402_never_lifts_the_shared_latch() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let ledger = Ledger::builder()
        .limit(100, Window::day())
        .redis(server.connect().await, random_prefix());
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let released = Arc::new(parking_lot::Mutex::new(Some(released)));
    let service = BudgetLayer::new(ledger.clone())
        .balance_header("x-balance")
        .layer(service_fn(move |req: http::Request<()>| {
            let slow = req.uri().path() == "/slow";
            let released = released.lock().take();
            async move {
                if slow {
                    released.expect("one slow request").await.unwrap();
                    let response = http::Response::builder()
                        .header("x-balance", "500")
                        .body(())
                        .unwrap();
                    return Ok::<_, Infallible>(response);
                }
                let mut response = http::Response::new(());
                *response.status_mut() = http::StatusCode::PAYMENT_REQUIRED;
                Ok(response)
            }
        }));
    let slow = tokio::spawn(
        service
            .clone()
            .oneshot(http::Request::get("/slow").body(()).unwrap()),
    );
    // Let the slow request reserve (its grant is stamped before the latch).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let paid = service
        .clone()
        .oneshot(http::Request::get("/pay").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(paid.status(), 402);
    ledger.flush().await;
    release.send(()).unwrap();
    slow.await.unwrap().unwrap();
    ledger.flush().await;
    let snapshot = ledger.snapshot_async().await.unwrap();
    assert!(snapshot.latched, "the stale balance did not lift the latch");
    assert_eq!(snapshot.balance, None);
    let refused = ledger
        .reserve_async(1, Priority::Critical)
        .await
        .unwrap_err();
    assert_eq!(exhausted(&refused), ExhaustedReason::Upstream402);
    // A balance read now does.
    ledger.sync_balance_async(40).await.unwrap();
    assert!(ledger.reserve_async(1, Priority::Normal).await.is_ok());
}

#[tokio::test]
async fn works_on_a_server_without_pexpiretime() {
    // Redis before 7.0 has no PEXPIRETIME; a server with the command renamed away stands in.
    let Some(server) = TestRedis::own_with(&["--rename-command", "PEXPIRETIME", ""]).await else {
        return;
    };
    let ledger = Ledger::builder()
        .limit(10, Window::day())
        .limit(100, Window::rolling(Duration::from_secs(60)))
        .redis(server.connect().await, random_prefix());
    for _ in 0..3 {
        let reservation = ledger.reserve_async(2, Priority::Normal).await.unwrap();
        reservation.settle_async(2).await.unwrap();
    }
    let held = ledger.reserve_async(1, Priority::Normal).await.unwrap();
    let mut raw = server.connect().await;
    let prefix_keys: Vec<String> = redis::cmd("KEYS")
        .arg("*:leases")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(prefix_keys.len(), 1);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&prefix_keys[0])
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        ttl > 86_000_000,
        "the lease bookkeeping expires a day after the lease: {ttl}"
    );
    held.refund_async().await.unwrap();
    ledger.latch_async().await.unwrap();
    let snapshot = ledger.snapshot_async().await.unwrap();
    assert_eq!(snapshot.windows[0].spent, 6);
    assert!(snapshot.latched);
}

#[tokio::test]
async fn any_shareable_connection_will_do() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    // A multiplexed connection instead of a connection manager (the cluster connection is
    // another such type).
    let client = redis::Client::open(server.url()).unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    let ledger = Ledger::builder()
        .limit(2, Window::day())
        .redis(connection, random_prefix());
    let layer = BudgetLayer::new(ledger.clone());
    let service = layer.layer(service_fn(|_: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    }));
    for _ in 0..2 {
        service
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
    }
    assert!(service.oneshot(http::Request::new(())).await.is_err());
    ledger.flush().await;
    assert_eq!(ledger.snapshot_async().await.unwrap().windows[0].spent, 2);
    // One type for code that picks its store at run time.
    let erased: Ledger<tollway_budget::store::DynStore> = ledger.to_dyn();
    assert_eq!(erased.snapshot_async().await.unwrap().windows[0].spent, 2);
}

/// Counts every counter increment by name and labels (the `metrics` feature).
#[cfg(feature = "metrics")]
#[test]
fn store_errors_are_counted() {
    let counters = tollway_test_support::metrics::CapturingRecorder::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&counters, || {
        runtime.block_on(async {
            let Some(server) = TestRedis::own().await else {
                return;
            };
            let ledger = Ledger::builder()
                .limit(10, Window::day())
                .name("fleet")
                .redis(server.connect().await, random_prefix());
            ledger
                .reserve_async(1, Priority::Normal)
                .await
                .unwrap()
                .settle_async(1)
                .await
                .unwrap();
            drop(server); // kills the server
            assert!(ledger.reserve_async(1, Priority::Normal).await.is_err());
            assert!(ledger.snapshot_async().await.is_err());
            assert_eq!(
                counters
                    .counter("tollway_budget_store_errors_total{ledger=fleet,operation=reserve}"),
                1
            );
            assert_eq!(
                counters
                    .counter("tollway_budget_store_errors_total{ledger=fleet,operation=snapshot}"),
                1
            );
            assert_eq!(
                counters.counter("tollway_budget_charged_credits_total{ledger=fleet}"),
                1
            );
        });
    });
}

/// Redis loses its data (a restart without persistence): a lifetime budget must not start
/// again from zero under a process that saw it, nor under one that rejoins with its epoch.
#[tokio::test]
async fn a_fleet_whose_state_vanished_is_refused_instead_of_counting_from_zero() {
    // Flushes the whole server, so it runs its own.
    let Some(server) = TestRedis::own().await else {
        return;
    };
    let prefix = random_prefix();
    let builder = || Ledger::builder().limit(150, Window::lifetime());
    let ledger = builder().redis(server.connect().await, &prefix);
    for _ in 0..3 {
        let r = ledger.reserve_async(50, Priority::Normal).await.unwrap();
        r.settle_async(50).await.unwrap();
    }
    let snapshot = ledger.snapshot_async().await.unwrap();
    assert_eq!(snapshot.windows[0].spent, 150);
    let epoch = snapshot.epoch.expect("a fleet ledger has an epoch");
    let mut raw = server.connect().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{{{prefix}}}:epoch"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(ttl, -1, "a lifetime budget's epoch never expires");

    let () = redis::cmd("FLUSHALL").query_async(&mut raw).await.unwrap();
    // The process that saw the fleet: refused, with a reason that says what happened.
    let err = ledger
        .reserve_async(50, Priority::Normal)
        .await
        .unwrap_err();
    let ReserveError::Store(store) = &err else {
        panic!("expected a store error, got {err}");
    };
    assert!(store.to_string().contains("vanished"), "{store}");
    assert!(ledger.snapshot_async().await.is_err());
    // A restarted process that kept the epoch: refused too.
    let rejoined = builder().redis_rejoin(server.connect().await, &prefix, epoch);
    assert!(rejoined.reserve_async(1, Priority::Normal).await.is_err());
    // Nothing was written by the refusals: the fleet's keys are still gone.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}}}*"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");

    // A brand-new fleet (no epoch known) starts one; the old process still refuses it.
    let fresh = builder().redis(server.connect().await, &prefix);
    let r = fresh.reserve_async(10, Priority::Normal).await.unwrap();
    r.settle_async(10).await.unwrap();
    let new_epoch = fresh.snapshot_async().await.unwrap().epoch.unwrap();
    assert_ne!(new_epoch, epoch);
    let err = ledger.reserve_async(1, Priority::Normal).await.unwrap_err();
    assert!(err.to_string().contains("vanished"), "{err}");
    assert_eq!(fresh.snapshot_async().await.unwrap().windows[0].spent, 10);
}

/// Every key of one ledger shares a hash tag, so a Redis Cluster serves it from one slot; and
/// a flushed script cache (what a failover to a node that never ran the script looks like) is
/// loaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_on_a_cluster_charge_exactly_the_budget() {
    let Some(cluster) = tollway_test_support::TestCluster::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let builder = || {
        Ledger::builder()
            .limit(300, Window::day())
            .limit(1_000, Window::lifetime())
    };
    let a = builder().redis(cluster.connect().await, &prefix);
    let b = builder().redis(cluster.connect().await, &prefix);
    let charged = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
            let charged = Arc::clone(&charged);
            tokio::spawn(async move {
                while let Ok(reservation) = ledger.reserve_async(1, Priority::Normal).await {
                    reservation.settle_async(1).await.expect("settled");
                    charged.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        if i == 32 {
            cluster.flush_scripts().await;
        }
        task.await.expect("task");
    }
    assert_eq!(charged.load(Ordering::Relaxed), 300);
    let snapshot = a.snapshot_async().await.expect("snapshot");
    assert_eq!(snapshot.windows[0].spent, 300);
    assert_eq!(snapshot.windows[1].spent, 300);
    assert_eq!(snapshot.reserved, 0);
}

const QUOTA_ROLE: &str = "TOLLWAY_QUOTA_ROLE";
const QUOTA_URLS: &str = "TOLLWAY_QUOTA_URLS";
const QUOTA_PREFIX: &str = "TOLLWAY_QUOTA_PREFIX";
const QUOTA_REPORT: &str = "quota-worker admitted=";
const QUOTA: u64 = 100;

/// A layer over a service that answers 200, its per-key quota (100 a day) in Redis at `urls`
/// (one URL, or a cluster's nodes, comma-separated).
async fn quota_service(
    urls: &str,
    prefix: &str,
) -> tower::util::BoxCloneSyncService<http::Request<String>, http::Response<String>, Infallible> {
    use tollway_budget::quota::KeyQuotaLayer;
    let builder = KeyQuotaLayer::builder(|_key| Ledger::new(QUOTA, Window::day()));
    let builder = if urls.contains(',') {
        let nodes: Vec<String> = urls.split(',').map(str::to_owned).collect();
        builder.redis(
            tollway_test_support::connect_cluster(&nodes).await,
            prefix,
            false,
        )
    } else {
        builder.redis(tollway_test_support::connect(urls).await, prefix, false)
    };
    let layer = builder.build().unwrap();
    let api = service_fn(|_req: http::Request<String>| async {
        Ok::<_, Infallible>(http::Response::new(String::from("ok")))
    });
    tower::util::BoxCloneSyncService::new(layer.layer(api))
}

/// One worker process: 64 tasks spend one API key's quota until it refuses them.
async fn quota_worker() {
    let urls = std::env::var(QUOTA_URLS).unwrap();
    let prefix = std::env::var(QUOTA_PREFIX).unwrap();
    let service = quota_service(&urls, &prefix).await;
    let first = urls.split(',').next().unwrap().to_owned();
    if !urls.contains(',') {
        tollway_test_support::redis_barrier(&first, &format!("{prefix}:ready"), 2).await;
    }
    let admitted = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (service, admitted) = (service.clone(), Arc::clone(&admitted));
            tokio::spawn(async move {
                loop {
                    let request = http::Request::builder()
                        .header("x-api-key", "sk-shared")
                        .body(String::new())
                        .unwrap();
                    let response = service.clone().oneshot(request).await.unwrap();
                    match response.status().as_u16() {
                        200 => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        402 => break,
                        other => panic!("unexpected status {other}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!("{QUOTA_REPORT}{}", admitted.load(Ordering::Relaxed));
}

async fn two_processes_spend_exactly_the_quota(test: &str, urls: String) {
    let prefix = random_prefix();
    let workers = tollway_test_support::run_workers(test, 2, |_| {
        vec![
            (QUOTA_ROLE, String::from("worker")),
            (QUOTA_URLS, urls.clone()),
            (QUOTA_PREFIX, prefix.clone()),
        ]
    })
    .await;
    let admitted: Vec<u64> = workers
        .iter()
        .map(|stderr| {
            stderr
                .lines()
                .find_map(|l| l.strip_prefix(QUOTA_REPORT))
                .unwrap_or_else(|| panic!("no report:\n{stderr}"))
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    eprintln!("admitted by each process: {admitted:?}");
    assert_eq!(admitted.iter().sum::<u64>(), QUOTA, "{admitted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_in_each_of_two_processes_spend_exactly_a_key_quota() {
    if std::env::var(QUOTA_ROLE).is_ok_and(|r| r == "worker") {
        return quota_worker().await;
    }
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    two_processes_spend_exactly_the_quota(
        "sixty_four_tasks_in_each_of_two_processes_spend_exactly_a_key_quota",
        server.url().to_owned(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_in_each_of_two_processes_spend_exactly_a_key_quota_on_a_cluster() {
    if std::env::var(QUOTA_ROLE).is_ok_and(|r| r == "worker") {
        return quota_worker().await;
    }
    let Some(cluster) = tollway_test_support::TestCluster::shared_or_own().await else {
        return;
    };
    two_processes_spend_exactly_the_quota(
        "sixty_four_tasks_in_each_of_two_processes_spend_exactly_a_key_quota_on_a_cluster",
        cluster.urls_joined(),
    )
    .await;
}

/// Redis stops answering mid-run: a quota that fails closed refuses at once (503, nothing
/// charged); one that fails open charges the key's local ledger; when Redis answers again it
/// counts from where it was (nothing decided meanwhile is sent to it).
#[tokio::test]
async fn a_key_quota_fails_closed_or_open_while_redis_is_stalled() {
    use tollway_budget::quota::KeyQuotaLayer;
    let Some(server) = TestRedis::own().await else {
        return;
    };
    let prefix = random_prefix();
    let service = |fail_open: bool, connection| {
        let layer = KeyQuotaLayer::builder(|_key| Ledger::new(5, Window::day()))
            .redis(connection, format!("{prefix}-{fail_open}"), fail_open)
            .build()
            .unwrap();
        let api = service_fn(|_req: http::Request<String>| async {
            Ok::<_, Infallible>(http::Response::new(String::from("ok")))
        });
        tower::util::BoxCloneSyncService::new(layer.layer(api))
    };
    let closed = service(false, server.connect().await);
    let open = service(true, server.connect().await);
    let call = |s: &tower::util::BoxCloneSyncService<_, http::Response<String>, Infallible>| {
        let request = http::Request::builder()
            .header("x-api-key", "k")
            .body(String::new())
            .unwrap();
        s.clone().oneshot(request)
    };
    for s in [&closed, &open] {
        for _ in 0..2 {
            assert_eq!(call(s).await.unwrap().status(), 200);
        }
    }
    let mut raw = server.connect().await;
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_500)
        .arg("ALL")
        .query_async(&mut raw)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(call(&closed).await.unwrap().status(), 503);
    let again = std::time::Instant::now();
    assert_eq!(call(&closed).await.unwrap().status(), 503);
    assert!(
        again.elapsed() < Duration::from_millis(100),
        "{:?}",
        again.elapsed()
    );
    // Open: the local ledger (5) decides, and keeps its own count.
    let mut local = 0;
    for _ in 0..7 {
        if call(&open).await.unwrap().status() == 200 {
            local += 1;
        }
    }
    assert!((4..=5).contains(&local), "{local}");
    tokio::time::sleep(Duration::from_millis(2_700).saturating_sub(started.elapsed())).await;
    // Redis again: 3 left of 5 for each (2 spent before the stall), whatever was decided
    // meanwhile. A reservation Redis ran after the caller gave up is a lease nobody settles:
    // it expires and counts as spent (never undercounted), so at most 3.
    for (s, name) in [(&closed, "closed"), (&open, "open")] {
        let mut admitted = 0;
        for _ in 0..6 {
            if call(s).await.unwrap().status() == 200 {
                admitted += 1;
            }
        }
        assert!((2..=3).contains(&admitted), "{name}: {admitted}");
    }
}
