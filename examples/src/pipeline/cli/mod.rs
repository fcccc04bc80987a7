//! The `pipeline` binary's flags, [`Args`], and what they resolve to.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

use crate::upstream::{DEFAULT_KEY, SEED_USER_IDS, UpstreamBuilder};

use super::config::{Config, DEFAULT_CONCURRENCY, DEFAULT_MAX_TRIES};
use super::fleet::check_redis_url;

/// The environment variable read for the access key when `--key` is not given.
pub const KEY_ENV: &str = "TOLLWAY_API_KEY";

/// Fetches every follower page of a list of users from the followers API, the production way.
///
/// With no --upstream it starts the upstream simulator in-process (11 req/s, a 500 every 17th
/// request, a 1 s outage 2 s in, 30 ms latency) and crawls the 20 user ids of the API
/// document's example.
#[derive(Debug, Clone, Parser)]
#[command(name = "pipeline", version)]
pub struct Args {
    /// Base URL of the API (default: an in-process simulator).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Access key, sent as x-access-key (default: $TOLLWAY_API_KEY, else the simulator's key).
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// User ids to crawl, comma separated (default: the 20 ids of the API document's example,
    /// duplicate included; a duplicate is crawled once).
    #[arg(long, value_name = "ID,ID,...", value_delimiter = ',', value_parser = user_id)]
    pub users: Option<Vec<String>>,
    /// Requests per second: a number, or `auto` to read `rate` from GET /sys/balance.
    #[arg(long, value_name = "auto|N", default_value = "auto")]
    pub rate: Rate,
    /// Requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY, value_parser = at_least_one)]
    pub concurrency: usize,
    /// Credits the whole crawl may spend, over every run with the same --cache-dir (kept in
    /// DIR/budget.ledger, so a restart continues it); with --redis, the fleet's (default: no
    /// limit).
    #[arg(long, value_name = "N")]
    pub budget: Option<u64>,
    /// Credits this run alone may spend (default: no limit).
    #[arg(long, value_name = "N")]
    pub budget_per_run: Option<u64>,
    /// Where the durable work queue (journal.jsonl), the crawl's ledger and the response cache
    /// live (default: a folder per upstream under the system's temp dir, see --help).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Write the report as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Fleet mode: keep the rate limit and the budget in Redis (e.g. redis://127.0.0.1:6379/,
    /// or a Redis Cluster's node URLs, comma-separated), shared by every pipeline process that
    /// crawls the same --upstream with the same key; --budget is then the fleet's. Needs
    /// --upstream.
    #[arg(long, value_name = "URL[,URL...]")]
    pub redis: Option<String>,
    /// Run the API document's example client instead, for comparison.
    #[arg(long)]
    pub naive: bool,
    /// Serve every layer's metrics for Prometheus on http://ADDR/metrics (e.g. 127.0.0.1:9000).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// End the run after SECS (counted from the start), with its report and an error status;
    /// requests in flight get a second to finish.
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub deadline: Option<Duration>,
    /// Tries a page gets before it goes to the dead letters.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TRIES,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tries: u32,
    /// The longest wait before a page is tried again, whatever Retry-After (or a reset, or the
    /// breaker) asks for.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = seconds)]
    pub max_wait: Duration,
    /// How long one exchange with the API may take, headers and body together.
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = positive_seconds)]
    pub request_timeout: Duration,
    /// The largest response body accepted (bytes; or with KiB, MiB, GiB); a larger page goes to
    /// the dead letters.
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = bytes)]
    pub max_body: u64,
    /// When stderr is not a terminal, print a progress line this often (when something
    /// changed); on a terminal a progress bar is drawn instead.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = positive_seconds)]
    pub progress_every: Duration,
}

/// `--rate`: fixed, or read from the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// Read `rate` from `GET /sys/balance`.
    Auto,
    /// This many requests per second.
    Fixed(NonZeroU32),
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        value
            .parse::<NonZeroU32>()
            .map(Self::Fixed)
            .map_err(|_| format!("expected `auto` or a whole number of at least 1, got `{value}`"))
    }
}

fn user_id(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        Err("a user id is empty".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn seconds(value: &str) -> Result<Duration, String> {
    let secs: f64 = value.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

fn positive_seconds(value: &str) -> Result<Duration, String> {
    match seconds(value)? {
        Duration::ZERO => Err("must be above 0".to_owned()),
        secs => Ok(secs),
    }
}

/// A size in bytes: a whole number, optionally followed by `KiB`, `MiB` or `GiB` (or `K`, `M`,
/// `G`, powers of 1024 all the same).
fn bytes(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("expected a size such as 4194304 or 4MiB, got `{value}`"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}`; use KiB, MiB or GiB")),
    };
    match number.checked_mul(scale) {
        Some(0) => Err("must be above 0".to_owned()),
        Some(size) => Ok(size),
        None => Err(format!("`{value}` is too large")),
    }
}

impl Args {
    /// Refuses flags that cannot work together, and an `--upstream` the base client cannot
    /// reach, with a one-line reason.
    ///
    /// # Errors
    ///
    /// The reason: an `--upstream` that is not `http://`; a `--redis` that is not a Redis URL,
    /// or comes without `--upstream` (the in-process simulator is this process's alone, so
    /// there is no fleet to share it with) or with `--naive` (the example client has no fleet
    /// mode).
    pub fn check_available(&self) -> Result<(), String> {
        if let Some(url) = &self.upstream
            && !url.starts_with("http://")
        {
            return Err(format!(
                "--upstream {url}: expected http://HOST[:PORT] (the base client speaks plain HTTP/1)"
            ));
        }
        if let Some(url) = &self.redis {
            check_redis_url(url).map_err(|why| format!("--redis: not a Redis URL: {why}"))?;
            if self.upstream.is_none() {
                return Err("--redis needs --upstream: the in-process simulator is this process's alone, there is no fleet to share it with".to_owned());
            }
            if self.naive {
                return Err(
                    "--redis cannot go with --naive: the example client has no fleet mode"
                        .to_owned(),
                );
            }
        }
        Ok(())
    }

    /// The access key: `--key`, else `$TOLLWAY_API_KEY`, else the simulator's.
    pub fn key(&self) -> String {
        self.key
            .clone()
            .or_else(|| std::env::var(KEY_ENV).ok().filter(|k| !k.is_empty()))
            .unwrap_or_else(|| DEFAULT_KEY.to_owned())
    }

    /// The users: `--users`, else the example's 20 ids.
    pub fn users(&self) -> Vec<String> {
        self.users
            .clone()
            .unwrap_or_else(|| SEED_USER_IDS.iter().map(|&id| id.to_owned()).collect())
    }

    /// `--cache-dir`, else [`default_cache_dir`] for `--upstream`, else (the embedded simulator,
    /// which starts afresh every run) a folder for this run alone: see
    /// [`uses_run_cache_dir`](Self::uses_run_cache_dir).
    pub fn cache_dir(&self) -> PathBuf {
        match (&self.cache_dir, &self.upstream) {
            (Some(dir), _) => dir.clone(),
            (None, Some(url)) => default_cache_dir(Some(url)),
            (None, None) => default_cache_dir(None).join(format!("run-{}", std::process::id())),
        }
    }

    /// Whether the journal and cache live in a folder of this run's own, removed when it ends:
    /// with no `--cache-dir` and no `--upstream`. Every run of the embedded simulator serves a
    /// new account, so what an earlier run fetched is worth nothing to it.
    pub fn uses_run_cache_dir(&self) -> bool {
        self.cache_dir.is_none() && self.upstream.is_none()
    }

    /// The run's configuration against `base_url` at `rate`.
    pub fn config(&self, base_url: &str, rate: NonZeroU32) -> Config {
        let mut config = Config::new(base_url, self.cache_dir());
        config.key = self.key();
        config.users = self.users();
        config.rate = rate;
        config.concurrency = self.concurrency;
        config.budget = self.budget;
        config.budget_per_run = self.budget_per_run;
        config.max_tries = self.max_tries;
        config.deadline = self.deadline;
        config.max_wait = self.max_wait;
        config.request_timeout = self.request_timeout;
        config.max_body = self.max_body;
        config
    }
}

/// The journal's default home: `<temp dir>/tollway-pipeline/<upstream>`, one folder per
/// upstream (`simulator` for the in-process one), so that two APIs never share pages. It
/// survives runs, so a second run resumes (and, once done, fetches nothing).
pub fn default_cache_dir(upstream: Option<&str>) -> PathBuf {
    let name = match upstream {
        None => "simulator".to_owned(),
        Some(url) => url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    };
    std::env::temp_dir().join("tollway-pipeline").join(name)
}

/// The simulator the binary starts when no `--upstream` is given: the document's rate of 11 req/s,
/// a 500 for every 17th admitted request, a 1 s outage 2 s after start, 30 ms of latency, and
/// plenty of credits.
pub fn embedded_simulator() -> UpstreamBuilder {
    UpstreamBuilder::default()
        .rate(11)
        .credits(1_000_000)
        .fault_every(17)
        .outage(Duration::from_secs(2), Duration::from_secs(1))
        .latency(Duration::from_millis(30))
}

#[cfg(test)]
mod tests;
