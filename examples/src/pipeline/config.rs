//! What a run is asked to do: [`Config`].

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use crate::upstream::{DEFAULT_KEY, DEFAULT_RATE, SEED_USER_IDS};

use super::fleet::Fleet;
use super::progress::Progress;

/// Tries a page gets before it goes to the dead letters.
pub const DEFAULT_MAX_TRIES: u32 = 5;

/// Requests in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// The longest the run loop waits before trying a page again, whatever the upstream or a layer
/// asks for.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(60);

/// The largest response body accepted: 4 MiB, some 160 times a page of 1,000 followers.
pub const DEFAULT_MAX_BODY: u64 = 4 * 1024 * 1024;

/// How long requests in flight may finish after the deadline before they are abandoned.
pub const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// The configuration of a run; [`Config::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// The API's base URL, `http://HOST:PORT`.
    pub base_url: String,
    /// Sent as `x-access-key`.
    pub key: String,
    /// Users to crawl. Duplicates are crawled once (the naive client crawls them as given).
    pub users: Vec<String>,
    /// Requests per second the account may send (for pacing and for the fastest possible time).
    pub rate: NonZeroU32,
    /// Requests in flight at once: the number of workers.
    pub concurrency: usize,
    /// Credits the whole crawl may spend, over every run with this [`cache_dir`](Self::cache_dir)
    /// (kept in the crawl's ledger there, `budget.ledger`); `None` for no limit. In fleet mode,
    /// the credits the whole fleet may spend (see [`fleet`](Self::fleet)).
    pub budget: Option<u64>,
    /// Credits this run alone may spend; `None` for no limit.
    pub budget_per_run: Option<u64>,
    /// Where the journal (the durable queue), the crawl's ledger and the response cache live.
    pub cache_dir: PathBuf,
    /// Tries a page gets before it goes to the dead letters (at least 1).
    pub max_tries: u32,
    /// Stop (with [`StopReason::Deadline`](super::StopReason::Deadline)) if the run is not
    /// finished after this long.
    pub deadline: Option<Duration>,
    /// The longest wait before a page is tried again: a longer `Retry-After` (or reset, or
    /// breaker period) is cut to this, and said so in the log.
    pub max_wait: Duration,
    /// How long one exchange with the upstream may take, headers and body together.
    pub request_timeout: Duration,
    /// The largest response body accepted, in bytes; a larger page goes to the dead letters
    /// and never reaches the journal.
    pub max_body: u64,
    /// Live counters the caller may watch.
    pub progress: Progress,
    /// Fleet mode: the rate limit and the budget live in Redis, shared with every pipeline
    /// process that has the same [`Fleet::prefix`]; `None` (the default) keeps them in this
    /// process.
    pub fleet: Option<Fleet>,
}

impl Config {
    /// A run against `base_url` keeping its journal in `cache_dir`, with the defaults: the
    /// simulator's key, the 20 user ids of the API document's example, 11 requests per second,
    /// 8 in flight, no budget, 5 tries per page, waits of at most a minute, 20 s per exchange,
    /// bodies of at most 4 MiB, no deadline, no fleet.
    pub fn new(base_url: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            base_url: base_url.into(),
            key: DEFAULT_KEY.to_owned(),
            users: SEED_USER_IDS.iter().map(|&id| id.to_owned()).collect(),
            rate: NonZeroU32::new(DEFAULT_RATE).unwrap_or(NonZeroU32::MIN),
            concurrency: DEFAULT_CONCURRENCY,
            budget: None,
            budget_per_run: None,
            cache_dir: cache_dir.into(),
            max_tries: DEFAULT_MAX_TRIES,
            deadline: None,
            max_wait: DEFAULT_MAX_WAIT,
            request_timeout: super::http::REQUEST_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            progress: Progress::new(),
            fleet: None,
        }
    }

    /// The users, each once, in the order first given.
    pub fn unique_users(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.users
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_duplicate_is_dropped_in_order() {
        let config = Config::new("http://x", "/tmp/x");
        let unique = config.unique_users();
        assert_eq!(config.users.len(), 20);
        assert_eq!(unique.len(), 19);
        assert_eq!(unique[0], SEED_USER_IDS[0]);
        assert_eq!(unique.iter().filter(|id| *id == "25044994947").count(), 1);
    }
}
