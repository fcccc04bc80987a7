//! 100 clients against an upstream that fails for 10 s, on tokio's paused clock.
//!
//! - With the default budget (10 s window, 10 retries/s floor, 20%), the retries added to the
//!   load stay within the budget's share; without it they multiply the load.
//! - When the recovered upstream has limited capacity (a fixed number of requests per 100 ms,
//!   the rest get 503), clients retrying in lockstep (no jitter) keep colliding, while full
//!   jitter spreads them out: fewer calls in all, and done sooner.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use parking_lot::Mutex;
use tokio::time::Instant;
use tollway_retry::backoff::{Backoff, Jitter};
use tollway_retry::{JitterRng, ReplayBody, RetryBudget, RetryLayer, RetryPolicy};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

const CLIENTS: usize = 100;
const OUTAGE: Duration = Duration::from_secs(10);

type Upstream = BoxCloneService<Request<ReplayBody<Full<Bytes>>>, Response<()>, std::io::Error>;

/// Fails every call during the outage; afterwards serves at most `per_slot` calls per 100 ms
/// (`None`: unlimited) and answers 503 to the rest.
fn upstream(start: Instant, per_slot: Option<u64>, calls: Arc<AtomicU64>) -> Upstream {
    let slots = Arc::new(Mutex::new((u128::MAX, 0u64)));
    BoxCloneService::new(tower::service_fn(move |_request: Request<_>| {
        calls.fetch_add(1, Ordering::Relaxed);
        let elapsed = start.elapsed();
        let status = if elapsed < OUTAGE {
            StatusCode::SERVICE_UNAVAILABLE
        } else if let Some(per_slot) = per_slot {
            let slot = elapsed.as_millis() / 100;
            let mut current = slots.lock();
            if current.0 != slot {
                *current = (slot, 0);
            }
            current.1 += 1;
            if current.1 <= per_slot {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }
        } else {
            StatusCode::OK
        };
        async move { Ok::<_, std::io::Error>(Response::builder().status(status).body(()).unwrap()) }
    }))
}

fn get() -> Request<Full<Bytes>> {
    Request::get("/v2/user/followers?user_id=1")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

struct Load {
    originals: u64,
    calls: u64,
    finished: Duration,
}

/// Each client sends one request per second for `duration` (waiting for the previous one).
async fn steady_load(layer: RetryLayer, duration: Duration) -> Load {
    let start = Instant::now();
    let calls = Arc::new(AtomicU64::new(0));
    let originals = Arc::new(AtomicU64::new(0));
    let service = layer.layer(upstream(start, None, Arc::clone(&calls)));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let service = service.clone();
            let originals = Arc::clone(&originals);
            tokio::spawn(async move {
                let mut next = start;
                while next.duration_since(start) < duration {
                    tokio::time::sleep_until(next).await;
                    originals.fetch_add(1, Ordering::Relaxed);
                    service.clone().oneshot(get()).await.unwrap();
                    next += Duration::from_secs(1);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    Load {
        originals: originals.load(Ordering::Relaxed),
        calls: calls.load(Ordering::Relaxed),
        finished: start.elapsed(),
    }
}

fn policy() -> tollway_retry::RetryPolicyBuilder {
    RetryPolicy::builder()
        .max_attempts(5)
        .backoff(Backoff::exponential(
            Duration::from_millis(50),
            Duration::from_millis(400),
        ))
        .rng(JitterRng::seeded(2024))
}

#[tokio::test(start_paused = true)]
async fn the_budget_holds_retries_to_its_share() {
    let run = Duration::from_secs(20);
    let budget = RetryBudget::default(); // 10 s window, 10/s floor, 20%
    let with_budget = steady_load(
        RetryLayer::new(policy().budget(budget.clone()).build().unwrap()),
        run,
    )
    .await;
    let retries = with_budget.calls - with_budget.originals;
    // The budget's share: 20% of the requests, plus the floor over the run (and one window's
    // reserve, since withdrawals age out of the window).
    let window = budget.window().as_secs();
    let floor = u64::from(budget.min_per_second()) * (with_budget.finished.as_secs() + window + 1);
    let share = with_budget.originals / 5 + floor;
    assert!(
        retries <= share,
        "{retries} retries for {} requests exceed the budget's share {share}",
        with_budget.originals
    );

    // ... and it does allow retries: at least the floor's reserve.
    assert!(
        retries >= u64::from(budget.min_per_second()) * window,
        "{retries}"
    );

    let without = steady_load(RetryLayer::new(policy().no_budget().build().unwrap()), run).await;
    let unbudgeted = without.calls - without.originals;
    // Every request in the outage is sent 5 times without a budget.
    assert!(
        unbudgeted >= 3 * retries,
        "no budget: {unbudgeted} retries; budget: {retries}"
    );
    assert!(unbudgeted >= 4 * CLIENTS as u64 * (OUTAGE.as_secs() - 1));
}

async fn thundering_herd(jitter: Jitter) -> Load {
    let start = Instant::now();
    let calls = Arc::new(AtomicU64::new(0));
    let layer = RetryLayer::new(
        RetryPolicy::builder()
            .max_attempts(1000)
            .backoff(
                Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2))
                    .with_jitter(jitter),
            )
            .no_budget()
            .rng(JitterRng::seeded(7))
            .build()
            .unwrap(),
    );
    let service = layer.layer(upstream(start, Some(5), Arc::clone(&calls)));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.oneshot(get()).await.unwrap().status() })
        })
        .collect();
    for client in clients {
        assert_eq!(client.await.unwrap(), StatusCode::OK);
    }
    Load {
        originals: CLIENTS as u64,
        calls: calls.load(Ordering::Relaxed),
        finished: start.elapsed(),
    }
}

#[tokio::test(start_paused = true)]
async fn full_jitter_finishes_with_fewer_calls_than_no_jitter() {
    let none = thundering_herd(Jitter::None).await;
    let full = thundering_herd(Jitter::Full).await;
    assert!(
        full.calls < none.calls,
        "full jitter: {} calls, no jitter: {} calls (measured: 1554 vs 1950)",
        full.calls,
        none.calls
    );
    assert!(
        full.finished < none.finished,
        "full jitter done at {:?}, no jitter at {:?}",
        full.finished,
        none.finished
    );
    assert!(full.originals == none.originals);
}
