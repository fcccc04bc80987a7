//! The tollway stack the pipeline runs on: [`tollway_stack`], and [`crawl`] that runs a
//! [`Config`] through it.

use std::io;
use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use tollway::ClientStackLayer;
use tollway::breaker::{BreakerConfig, BreakerLayer, OpenDuration};
use tollway::budget::store::DynStore;
use tollway::budget::{BudgetLayer, Ledger, Window};
use tollway::cache::{CacheBody, CacheLayer};
use tollway::core::{BoxError, StoreUnavailable};
use tollway::limiter::{Adaptive, Quota, RateLimiter};
use tollway::retry::backoff::{Backoff, Jitter};
use tollway::retry::{ReplayBody, RetryBudget, RetryPolicy};
use tower::Layer;
use tower::util::BoxCloneSyncService;

use super::config::Config;
use super::fleet::{Fleet, StackLayer};
use super::http::{ApiRequest, BaseBody, base_client_with};
use super::report::Report;
use super::run::run;
use super::stop::{StopReason, Stopped};
use super::wire::WireLogLayer;

/// The pipeline's service: the tollway stack over [`base_client`](super::base_client), boxed.
pub type PipelineService = BoxCloneSyncService<ApiRequest, Response<PipelineBody>, BoxError>;

/// The response body of the [`PipelineService`].
pub type PipelineBody = CacheBody<BaseBody>;

/// Where the response cache lives inside [`Config::cache_dir`], beside the journal.
pub const CACHE_SUBDIR: &str = "http-cache";

/// Attempts the stack makes for one page before the run loop sees a failure (the first send
/// included); the run loop's own tries ([`Config::max_tries`]) come on top.
pub const STACK_ATTEMPTS: u32 = 3;

/// The longest a request waits for a rate permit inside the stack; see [`tollway_stack`].
pub const MAX_PERMIT_WAIT: Duration = Duration::from_secs(2);

/// The stack and the layer that made it (for its handles: limiter, breaker, ledger, cache).
#[derive(Debug)]
pub struct PipelineStack {
    /// The service to pass to [`run`](super::run).
    pub service: PipelineService,
    /// The layer: `layer.breaker()`, `layer.ledger()`, `layer.cache()`.
    pub layer: StackLayer,
}

/// The tollway stack for `config`, in front of [`base_client_with`] (`config.request_timeout`
/// per exchange, body included, and `config.max_body` per body) with a
/// [`WireLogLayer`](super::WireLogLayer) that counts every attempt for the report:
///
/// - **cache** in `config.cache_dir/http-cache`, beside the journal: a page paid for is never
///   paid for again, even if the run is killed between the answer and the journal write; it
///   stores no body over `config.max_body`;
/// - **retry**: up to [`STACK_ATTEMPTS`] attempts per page, full-jitter backoff from 200 ms,
///   `Retry-After` honoured up to 10 s, a retry budget (20% of requests, 10/s floor);
/// - **breaker**: opens after 5 failures in a row, for 500 ms doubling to 5 s (or for the
///   tripping failure's `Retry-After`, at most 10 s);
/// - **budget**: a ledger of `config.budget_per_run` credits for this run (no limit without
///   one), which latches on a `402` (the crawl's `config.budget` is kept by the run loop in the
///   crawl's own ledger on disk: see [`run`](super::run));
/// - **limiter**: [`PACING_MARGIN`] under `config.rate` requests per second
///   ([`pacing_interval`]) until the upstream states its limit, then that under the limit it
///   states (and under every change of it); pauses on `429`s and `503`s with `Retry-After`, and
///   on a used-up window only when it contradicts the schedule (30 s at most); a permit more
///   than [`MAX_PERMIT_WAIT`] away is refused with `RateLimited`, which the run loop waits out
///   without using a try.
///
/// No layer waits longer than `config.max_wait`: the retry's, the breaker's and the limiter's
/// longest waits are cut to it.
///
/// With [`Config::fleet`], the limiter and the ledger live in Redis under the fleet's prefix
/// ([`Fleet::limiter_prefix`](super::Fleet::limiter_prefix),
/// [`Fleet::budget_prefix`](super::Fleet::budget_prefix)): every process of the fleet shares
/// one rate limit, paced as one process is (the [`PACING_MARGIN`] under the rate also covers
/// the spread of delivery times across processes), and one budget of `config.budget` credits
/// (a lifetime counter, and the fleet's `402` latch). A Redis failure refuses the request (`StoreUnavailable`, fail
/// closed). An adaptive pause (a `429`'s `Retry-After`) reaches every process of the fleet.
///
/// # Errors
///
/// The cache folder cannot be created or opened.
pub fn tollway_stack(config: &Config) -> io::Result<PipelineStack> {
    // A fleet paces as one process does: Redis admits on its own clock, exactly, and the
    // margin under the rate (20 ms a second at 2%) also covers a request admitted first in
    // one process reaching the upstream after one admitted later in another.
    let interval = pacing_interval(config.rate);
    let rate = Quota::try_per(1, interval).unwrap_or(Quota::per_second(config.rate.get()));
    let quota = rate.burst(1);
    // No layer waits longer than the run loop would (`--max-wait`).
    let cap = |most: Duration| most.min(config.max_wait);
    let margin = PACING_MARGIN;
    let limiter = RateLimiter::builder(quota)
        .adaptive(
            Adaptive::new()
                .margin(margin)
                .max_pause(cap(Duration::from_secs(30))),
        )
        // A permit further away than this is refused (`RateLimited` with the wait), so that a
        // long pause is waited out by the run loop, which a deadline can stop, rather than
        // inside a request.
        .max_wait(MAX_PERMIT_WAIT);
    let retry = RetryPolicy::builder()
        .max_attempts(STACK_ATTEMPTS)
        .backoff(
            Backoff::exponential(Duration::from_millis(200), Duration::from_secs(5))
                .with_jitter(Jitter::Full),
        )
        .max_retry_after(cap(Duration::from_secs(10)))
        .budget(RetryBudget::default())
        .build()
        .map_err(io::Error::other)?;
    let breaker = BreakerConfig::builder()
        .name("pipeline")
        .consecutive_failures(5)
        .open_duration(OpenDuration::exponential(
            Duration::from_millis(500),
            Duration::from_secs(5),
        ))
        .honor_retry_after(Some(cap(Duration::from_secs(10))))
        .build()
        .map_err(io::Error::other)?;
    let mut ledger = Ledger::builder().name("pipeline");
    let ledger = match &config.fleet {
        Some(fleet) => {
            if let Some(budget) = config.budget {
                ledger = ledger.limit(budget, Window::lifetime());
            }
            fleet.budget_ledger(ledger, &config.cache_dir)
        }
        None => {
            if let Some(budget) = config.budget_per_run {
                ledger = ledger.limit(budget, Window::lifetime());
            }
            ledger.build().to_dyn()
        }
    };
    let cache = CacheLayer::builder(config.cache_dir.join(CACHE_SUBDIR))
        .ttl(Duration::from_secs(7 * 24 * 3600))
        .route_ttl("/sys/", Duration::ZERO)
        .max_entry_bytes(usize::try_from(config.max_body).unwrap_or(usize::MAX))
        // A broken `200` (invalid JSON, a truncated body, the wrong shape) is never stored:
        // the retry, and the next run, ask the upstream again.
        .validate(|head, body| super::accept_response(head.status, body))
        .build()?;
    let client = WireLogLayer.layer(base_client_with::<ReplayBody<Full<Bytes>>>(
        config.request_timeout,
        config.max_body,
    ));
    let (breaker, budget) = (BreakerLayer::new(breaker), BudgetLayer::new(ledger));
    Ok(match &config.fleet {
        Some(fleet) => {
            let limiter = limiter.redis(fleet.connection(), fleet.limiter_prefix());
            let layer = ClientStackLayer::builder(limiter)
                .retry(retry)
                .breaker(breaker)
                .budget(budget)
                .cache(cache)
                .build();
            let service = layer.layer(client).boxed();
            PipelineStack {
                service,
                layer: StackLayer::Fleet(layer),
            }
        }
        None => {
            let layer = ClientStackLayer::builder(limiter.build())
                .retry(retry)
                .breaker(breaker)
                .budget(budget)
                .cache(cache)
                .build();
            let service = layer.layer(client).boxed();
            PipelineStack {
                service,
                layer: StackLayer::Local(layer),
            }
        }
    })
}

/// The share of an upstream's rate the pipeline leaves unused: room for jitter in delivery
/// (requests leave evenly spaced, and reach the upstream a little unevenly).
pub const PACING_MARGIN: f64 = 0.02;

/// The limiter's interval for an account allowed `rate` requests per second: [`PACING_MARGIN`]
/// under the rate, evenly spaced.
///
/// An upstream that counts a sliding second answers such a client `X-RateLimit-Remaining: 0`
/// most of the time: the window is full because the client uses all of it. That is the
/// steady state, not an order to stop: the adaptive limiter pauses only when the upstream
/// contradicts its schedule, and once the upstream states its limit it paces by that.
pub fn pacing_interval(rate: NonZeroU32) -> Duration {
    Duration::from_secs_f64(1.0 / (f64::from(rate.get()) * (1.0 - PACING_MARGIN)))
}

/// Crawls `config` through [`tollway_stack`]: [`run`](super::run) with the stack, and the
/// breaker's trips in the report.
///
/// # Errors
///
/// As [`run`](super::run); [`StopReason::Config`] when the cache cannot be opened.
pub async fn crawl(config: Config) -> Result<Report, Stopped> {
    let stopped = |reason| Stopped {
        reason,
        report: Report::new(super::report::Mode::Pipeline),
    };
    let stack = match tollway_stack(&config) {
        Ok(stack) => stack,
        Err(error) => {
            return Err(stopped(StopReason::Config(format!(
                "cache in {}: {error}",
                config.cache_dir.join(CACHE_SUBDIR).display()
            ))));
        }
    };
    if let (Some(fleet), Some(ledger)) = (&config.fleet, stack.layer.ledger()) {
        join_fleet(fleet, ledger, &config.cache_dir)
            .await
            .map_err(|error| stopped(StopReason::Store(one_line(&error))))?;
    }
    let result = crawl_with(config, &stack).await;
    if let Some(ledger) = stack.layer.ledger() {
        // A fleet ledger settles in background tasks: send them before the process exits, or
        // the credit they would give back stays held until the leases expire.
        ledger.flush().await;
    }
    result
}

async fn crawl_with(config: Config, stack: &PipelineStack) -> Result<Report, Stopped> {
    let breaker = stack.layer.breaker();
    let trips = |report: &mut Report| {
        if let Some(breaker) = &breaker {
            report.breaker_opens = report.breaker_opens.max(u64::from(breaker.counts().trips));
        }
    };
    match run(config, stack.service.clone()).await {
        Ok(mut report) => {
            trips(&mut report);
            Ok(report)
        }
        Err(mut stopped) => {
            trips(&mut stopped.report);
            Err(stopped)
        }
    }
}

/// Reads the fleet's ledger before the first request (which also proves Redis answers), and
/// lifts a `402` latch left by an earlier run: a latch of a ledger with no window never expires
/// by itself, and the account may have been topped up since. If it has not, the first `402`
/// latches it again.
async fn join_fleet(
    fleet: &Fleet,
    ledger: &Ledger<DynStore>,
    dir: &std::path::Path,
) -> Result<(), StoreUnavailable> {
    let snapshot = ledger.snapshot_async().await?;
    // A later run of this crawl refuses a fleet whose state vanished from Redis.
    if let Err(error) = Fleet::remember_epoch(dir, snapshot.epoch) {
        tracing::warn!(%error, "the fleet's epoch could not be recorded in the crawl folder");
    }
    if snapshot.latched {
        tracing::warn!(
            prefix = fleet.prefix(),
            "lifting the fleet's 402 latch left by an earlier run"
        );
        ledger.reset_async().await?;
    }
    tracing::info!(
        prefix = fleet.prefix(),
        spent = snapshot.windows.first().map(|w| w.spent),
        reserved = snapshot.reserved,
        "joined the fleet"
    );
    Ok(())
}

/// An error's message on one line (a reason the binary prints on one line).
pub(super) fn one_line(error: &dyn std::error::Error) -> String {
    error
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_never_exceeds_the_rate_and_uses_nearly_all_of_it() {
        for rate in [1_u32, 2, 10, 11, 20, 50, 1000] {
            let interval = pacing_interval(NonZeroU32::new(rate).unwrap());
            // Arrivals at 0, I, 2I, ...: a closed one-second window holds floor(1/I) + 1.
            let most = (1.0 / interval.as_secs_f64()).floor() as u32 + 1;
            assert!(most <= rate, "rate {rate}: {interval:?}");
            let per_second = 1.0 / interval.as_secs_f64();
            let share = per_second / f64::from(rate);
            assert!((share - 0.98).abs() < 1e-6, "rate {rate}: {share}");
        }
    }

    #[tokio::test]
    async fn the_stack_has_every_layer_and_the_budget_of_the_run() {
        let dir = std::env::temp_dir().join(format!("tollway-stack-unit-{}", std::process::id()));
        let mut config = Config::new("http://127.0.0.1:9", &dir);
        config.budget = Some(70);
        config.budget_per_run = Some(7);
        let stack = tollway_stack(&config).unwrap();
        assert!(stack.layer.breaker().is_some());
        let ledger = stack.layer.ledger().unwrap();
        assert_eq!(ledger.snapshot_async().await.unwrap().remaining, 7);
        assert_eq!(
            stack.layer.cache().unwrap().dir(),
            dir.join(CACHE_SUBDIR).as_path()
        );
        assert_eq!(stack.layer.retry_policy().max_attempts(), STACK_ATTEMPTS);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
