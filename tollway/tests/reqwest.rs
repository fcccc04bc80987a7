//! The reqwest-middleware bridge with a real reqwest client against the upstream simulator,
//! over real sockets and on real time.
#![cfg(feature = "reqwest")]

use std::time::{Duration, Instant};

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tollway::ClientStackLayer;
use tollway::breaker::{BreakerConfig, BreakerLayer};
use tollway::budget::{BudgetLayer, Ledger, Priority, Window};
use tollway::cache::{CACHE_STATUS_HEADER, CacheLayer};
use tollway::core::{BudgetExhausted, ExhaustedReason};
use tollway::limiter::{Adaptive, LimiterLayer, Quota, RateLimiter};
use tollway::middleware::TollwayMiddleware;
use tollway::retry::RetryPolicy;
use tollway::retry::backoff::{Backoff, Jitter};
use tollway_examples::upstream::{DEFAULT_KEY, MISSING_SEED_USER_ID, SEED_USER_IDS, Upstream};

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .retry(reqwest::retry::never())
        .build()
        .unwrap()
}

fn followers(
    client: &ClientWithMiddleware,
    base: &str,
    user: &str,
) -> reqwest_middleware::RequestBuilder {
    client
        .get(format!("{base}/v2/user/followers?user_id={user}&page_id="))
        .header("x-access-key", DEFAULT_KEY)
}

fn limiter(per_second: u32) -> RateLimiter {
    // 5% under the upstream's rate: it counts arrivals, and the network bunches sends.
    let interval = Duration::from_secs_f64(1.05 / f64::from(per_second));
    RateLimiter::builder(Quota::try_per(1, interval).unwrap().burst(1))
        .adaptive(Adaptive::new())
        .build()
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(6)
        .backoff(
            Backoff::exponential(Duration::from_millis(20), Duration::from_millis(200))
                .with_jitter(Jitter::Full),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_whole_stack_on_reqwest_caches_paces_and_retries() {
    let sim = Upstream::builder()
        .rate(20)
        .fault_every(3)
        .latency(Duration::from_millis(5))
        .spawn()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::new(1_000, Window::lifetime());
    let layer = ClientStackLayer::builder(limiter(20))
        .retry(quick_retries())
        .breaker(BreakerLayer::new(
            BreakerConfig::builder()
                .consecutive_failures(10)
                .build()
                .unwrap(),
        ))
        .budget(BudgetLayer::new(ledger.clone()))
        .cache(
            CacheLayer::builder(dir.path())
                .ttl(Duration::from_secs(60))
                .build()
                .unwrap(),
        )
        .build();
    let client = ClientBuilder::new(reqwest_client())
        .with(TollwayMiddleware::new(layer.clone()))
        .build();
    let base = sim.url();

    // Twelve distinct pages at once: paced at 20/s, the 500s retried inside the stack.
    let mut seen = std::collections::HashSet::new();
    let users: Vec<&str> = SEED_USER_IDS
        .iter()
        .copied()
        .filter(|&id| id != MISSING_SEED_USER_ID && seen.insert(id))
        .take(12)
        .collect();
    assert_eq!(users.len(), 12);
    let started = Instant::now();
    let responses = futures_util::future::join_all(
        users
            .iter()
            .map(|user| followers(&client, &base, user).send()),
    )
    .await;
    let elapsed = started.elapsed();
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), 200, "{response:?}");
        assert_eq!(response.headers()[CACHE_STATUS_HEADER], "miss");
        let page = response.bytes().await.unwrap();
        assert!(page.starts_with(b"{") && page.windows(7).any(|w| w == b"\"users\""));
    }
    let stats = sim.stats();
    assert_eq!(stats.status(429), 0, "{stats:?}");
    assert!(
        stats.status(500) > 0,
        "the upstream failed now and then: {stats:?}"
    );
    assert_eq!(
        stats.requests,
        12 + stats.status(500),
        "every 500 was retried once more"
    );
    assert!(stats.max_in_any_1s_window <= 20, "{stats:?}");
    let sent = stats.requests;
    // `sent` requests at 20/s with a 5% margin, the first one free.
    assert!(
        elapsed >= Duration::from_secs_f64((sent - 1) as f64 * 1.05 / 20.0 * 0.95),
        "{elapsed:?} for {sent}"
    );
    assert_eq!(
        ledger.snapshot().windows[0].spent,
        12,
        "only the 200s were charged"
    );

    // The same page again: from the cache, nothing sent, nothing charged, the URL intact.
    let again = followers(&client, &base, users[0]).send().await.unwrap();
    assert_eq!(again.headers()[CACHE_STATUS_HEADER], "hit");
    assert_eq!(
        again.url().as_str(),
        format!("{base}/v2/user/followers?user_id={}&page_id=", users[0])
    );
    assert_eq!(sim.stats().requests, sent);
    assert_eq!(ledger.snapshot().windows[0].spent, 12);
}

#[tokio::test]
async fn priority_travels_in_the_request_extensions() {
    let sim = Upstream::builder().rate(50).spawn().await.unwrap();
    // Three credits, one of them reserved for critical work.
    let ledger = Ledger::builder()
        .limit(3, Window::lifetime())
        .critical_reserve(1)
        .build();
    let layer = ClientStackLayer::builder(limiter(50))
        .budget(BudgetLayer::new(ledger.clone()))
        .build();
    let client = ClientBuilder::new(reqwest_client())
        .with(TollwayMiddleware::new(layer))
        .build();
    let base = sim.url();

    for user in &SEED_USER_IDS[2..4] {
        let response = followers(&client, &base, user).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let refused = followers(&client, &base, SEED_USER_IDS[4])
        .send()
        .await
        .unwrap_err();
    let reqwest_middleware::Error::Middleware(error) = &refused else {
        panic!("a layer's refusal is a middleware error: {refused:?}");
    };
    let exhausted = error
        .downcast_ref::<BudgetExhausted>()
        .expect("the budget's refusal, downcastable");
    assert_eq!(exhausted.reason(), ExhaustedReason::CriticalReserve);
    assert_eq!(sim.stats().requests, 2, "the refused request was not sent");

    let critical = followers(&client, &base, SEED_USER_IDS[4])
        .with_extension(Priority::Critical)
        .send()
        .await
        .unwrap();
    assert_eq!(critical.status(), 200);
    assert_eq!(ledger.snapshot().windows[0].spent, 3);
}

#[tokio::test]
async fn a_single_layer_is_a_middleware_too_and_transport_errors_pass_through() {
    let sim = Upstream::builder().rate(10).spawn().await.unwrap();
    let quota = Quota::per_second(5).burst(1);
    let client = ClientBuilder::new(reqwest_client())
        .with(TollwayMiddleware::new(LimiterLayer::new(quota)))
        .build();
    let base = sim.url();
    let started = Instant::now();
    for user in &SEED_USER_IDS[2..5] {
        let response = followers(&client, &base, user).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    // Three requests at 5/s with a burst of one: two intervals of 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(390),
        "{:?}",
        started.elapsed()
    );

    // Nothing listens on port 9 of localhost: reqwest's own error comes back as it was.
    let error = client.get("http://127.0.0.1:9/").send().await.unwrap_err();
    assert!(
        matches!(error, reqwest_middleware::Error::Reqwest(ref e) if e.is_connect()),
        "{error:?}"
    );
}

/// The retry layer wraps every error in `RequestFailed`; reqwest's own transport error after
/// the last attempt still reaches a reqwest-middleware user as `Error::Reqwest`.
#[tokio::test]
async fn a_transport_error_after_retries_is_still_reqwests_own() {
    let layer = ClientStackLayer::builder(limiter(100))
        .retry(
            RetryPolicy::builder()
                .max_attempts(3)
                .backoff(Backoff::exponential(
                    Duration::from_millis(5),
                    Duration::from_millis(20),
                ))
                .build()
                .unwrap(),
        )
        .build();
    let client = ClientBuilder::new(reqwest_client())
        .with(TollwayMiddleware::new(layer))
        .build();
    // Nothing listens on port 9 of localhost.
    let error = client.get("http://127.0.0.1:9/").send().await.unwrap_err();
    assert!(
        matches!(error, reqwest_middleware::Error::Reqwest(ref e) if e.is_connect()),
        "{error:?}"
    );
}
