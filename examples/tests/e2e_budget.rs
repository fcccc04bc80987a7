//! End-to-end: tollway-budget in front of a real HTTP client talking to the upstream simulator
//! over a socket. The simulator, which runs no tollway code, counts what reached it and what it
//! charged.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tollway_budget::{Balance, BudgetLayer, Ledger, Window};
use tollway_core::{BudgetExhausted, ExhaustedReason};
use tollway_examples::upstream::{DEFAULT_KEY, SEED_USER_IDS, Upstream};
use tower::{Layer, ServiceExt};

const CALLERS: usize = 16;

fn followers(url: &str) -> Request<Empty<Bytes>> {
    Request::get(format!(
        "{url}/v2/user/followers?user_id={}&page_id=",
        SEED_USER_IDS[0]
    ))
    .header("x-access-key", DEFAULT_KEY)
    .body(Empty::new())
    .unwrap()
}

/// Runs `CALLERS` tasks that send requests through the budget until it refuses them; returns
/// the refusal reasons seen.
async fn drain(ledger: &Ledger, url: &str) -> Vec<ExhaustedReason> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let service = BudgetLayer::new(ledger.clone()).layer(client);
    let mut callers = JoinSet::new();
    for _ in 0..CALLERS {
        let service = service.clone();
        let url = url.to_owned();
        callers.spawn(async move {
            loop {
                match service.clone().oneshot(followers(&url)).await {
                    Ok(response) => {
                        let _ = response.into_body().collect().await;
                    }
                    Err(err) => {
                        let exhausted = err
                            .downcast_ref::<BudgetExhausted>()
                            .unwrap_or_else(|| panic!("unexpected error: {err}"));
                        return exhausted.reason();
                    }
                }
            }
        });
    }
    callers.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_balance_spends_exactly_the_account_and_never_meets_a_402() {
    let sim = Upstream::builder()
        .rate(100_000)
        .credits(40)
        .fault_every(0)
        .latency(Duration::from_millis(2))
        .spawn()
        .await
        .unwrap();
    // Poll the balance endpoint once, as the API document's example client does.
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = Request::get(format!("{}/sys/balance", sim.url()))
        .header("x-access-key", DEFAULT_KEY)
        .body(Empty::new())
        .unwrap();
    let body = client
        .request(request)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let ledger = Ledger::new(1_000, Window::day());
    Balance::parse(&body).unwrap().sync(&ledger);

    let reasons = drain(&ledger, &sim.url()).await;
    assert!(
        reasons.iter().all(|r| *r == ExhaustedReason::Upstream402),
        "{reasons:?}"
    );
    let stats = sim.stats();
    assert_eq!(stats.status(200), 41, "40 pages and the balance poll");
    assert_eq!(stats.credits_charged, 40);
    assert_eq!(
        stats.status(402),
        0,
        "the budget stopped before the account did"
    );
    assert_eq!(ledger.snapshot().windows[0].spent, 40);
    assert_eq!(ledger.snapshot().balance, Some(0));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_402_latches_and_nothing_more_is_sent() {
    let sim = Upstream::builder()
        .rate(100_000)
        .credits(25)
        .fault_every(0)
        .latency(Duration::from_millis(2))
        .spawn()
        .await
        .unwrap();
    // The ledger does not know the balance: only the upstream's 402 can stop it.
    let ledger = Ledger::new(1_000, Window::day());
    let reasons = drain(&ledger, &sim.url()).await;
    assert!(
        reasons.iter().all(|r| *r == ExhaustedReason::Upstream402),
        "{reasons:?}"
    );
    assert!(ledger.is_latched());
    let stats = sim.stats();
    assert_eq!(stats.status(200), 25);
    // Only requests already in flight when the first 402 came back can meet one.
    let too_late = stats.status(402);
    assert!((1..=CALLERS as u64).contains(&too_late), "402s: {too_late}");
    assert_eq!(
        stats.requests,
        25 + too_late,
        "nothing was sent after the latch"
    );
    assert_eq!(
        ledger.snapshot().windows[0].spent,
        25,
        "402s are not charged"
    );
    sim.shutdown().await;
}
