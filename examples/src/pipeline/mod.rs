//! The `pipeline` demo: fetch every follower page of a list of users from the followers API,
//! the production way, and report what it cost.
//!
//! - [`crawl`] crawls [`Config::users`] through the tollway stack ([`tollway_stack`]: cache →
//!   retry → breaker → budget → limiter, in front of [`base_client`]); [`run`] does the same
//!   through any tower service of the shape
//!   `Service<Request<Full<Bytes>>, Response = Response<B>, Error = BoxError>`.
//! - The work queue is durable ([`queue`]): an append-only journal in [`Config::cache_dir`].
//!   A run killed at any moment resumes where it stopped, and pages already fetched are never
//!   paid for again. A page that keeps failing goes to the dead letters after
//!   [`Config::max_tries`] tries, with its last error.
//! - Each user is crawled once; a 404 fails the user for good (`"not found"`); a 401, a 402,
//!   a budget or the deadline stop the run with a [`StopReason`]. [`Config::budget`] is the
//!   crawl's, kept in a kill-safe ledger in [`Config::cache_dir`] ([`LEDGER_FILE`]), so restarts
//!   continue it; [`Config::budget_per_run`] is one run's.
//! - A hostile upstream cannot hang or break it: every wait is capped at [`Config::max_wait`]
//!   and computed without overflow, the deadline ends the run on time, one timeout covers each
//!   exchange, body included ([`ExchangeGuard`]), bodies are capped at [`Config::max_body`], a
//!   `200` that is not a page ([`validate_page`]) is a failed try, and a `next_page_id` that
//!   points back into the user's chain is a dead letter.
//! - Fleet mode ([`Config::fleet`], the binary's `--redis URL`): the rate limit and the budget
//!   live in Redis under a prefix derived from the upstream URL and the key ([`fleet_prefix`]),
//!   so every pipeline process crawling with that key shares one limit and one budget. A Redis
//!   failure stops the run ([`StopReason::Store`]): no request goes out without Redis's say.
//! - [`naive::run`] is the API document's example client, for comparison.
//! - The [`Report`] is what the binary prints as a table and writes as JSON with `--report`.
//!
//! ```
//! use tollway_examples::pipeline::{self, Config};
//! use tollway_examples::upstream::Upstream;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = Upstream::builder().rate(50).spawn().await?;
//! let dir = std::env::temp_dir().join(format!("tollway-pipeline-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let mut config = Config::new(sim.url(), &dir);
//! config.users = vec!["1553030189".into(), "12345".into()];
//! config.rate = std::num::NonZeroU32::new(50).unwrap();
//! let report = pipeline::crawl(config).await?;
//! assert_eq!(report.users_completed, 1);
//! assert_eq!(report.users_failed[0].reason, "not found");
//! assert_eq!(report.credits_spent, report.pages_fetched);
//! assert_eq!(sim.stats().duplicate_page_fetches, 0);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

mod budget;
pub mod cli;
mod config;
mod fleet;
mod guard;
mod http;
mod metrics;
pub mod naive;
mod progress;
pub mod queue;
mod report;
mod run;
mod scheduler;
mod settle;
mod stack;
mod stop;
mod validate;
mod wait;
mod wire;

pub use budget::LEDGER_FILE;
pub use config::{
    Config, DEADLINE_GRACE, DEFAULT_CONCURRENCY, DEFAULT_MAX_BODY, DEFAULT_MAX_TRIES,
    DEFAULT_MAX_WAIT,
};
pub use fleet::{
    CONNECT_TIMEOUT, EPOCH_FILE, Fleet, RedisConnection, StackLayer, check_redis_url, fleet_prefix,
};
pub use guard::{
    BodyTooLarge, ExchangeGuard, ExchangeGuardLayer, ExchangeTimeout, GuardFuture, GuardedBody,
};
pub use http::{
    ApiRequest, BaseBody, BaseClient, FollowersList, FollowersPage, REQUEST_TIMEOUT, base_client,
    base_client_with, fetch_rate, followers_request,
};
pub use metrics::{BUCKETS, serve_metrics};
pub use progress::{LogWriter, Progress, ProgressLine, Snapshot};
pub use report::{DeadLetter, Mode, Report, Table, UserFailure};
pub use run::{LOCK_WAIT, NOT_FOUND, run};
pub use stack::{
    CACHE_SUBDIR, MAX_PERMIT_WAIT, PACING_MARGIN, PipelineBody, PipelineService, PipelineStack,
    STACK_ATTEMPTS, crawl, pacing_interval, tollway_stack,
};
pub use stop::{StopReason, Stopped};
pub use validate::{InvalidPage, MAX_CURSOR_BYTES, accept_response, validate_page};
pub use wire::{WireLog, WireLogLayer, WireLogged};
