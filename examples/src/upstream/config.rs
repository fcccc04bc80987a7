//! How the simulator is configured: [`UpstreamBuilder`] and its defaults.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::StatusCode;

use super::data::{MISSING_SEED_USER_ID, SEED_USER_IDS};
use super::hostile::Hostile;
use super::limits::WindowKind;

/// The access key the simulator accepts unless told otherwise.
pub const DEFAULT_KEY: &str = "sim-key";

/// Requests per second per key, as in the API document ("about 11 requests per second").
pub const DEFAULT_RATE: u32 = 11;

/// The starting credit balance.
pub const DEFAULT_CREDITS: u64 = 1_000_000;

/// Followers per page.
pub const DEFAULT_PAGE_SIZE: usize = 25;

/// The largest page size the simulator supports.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Which rate-limit fields the followers answers carry (the upstream binary's `--rate-headers`:
/// `legacy`, `ietf`, `both` or `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RateHeaders {
    /// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (the default).
    #[default]
    Legacy,
    /// The IETF `RateLimit-Policy` (`"default";q=LIMIT;w=SECONDS`) and `RateLimit`
    /// (`"default";r=REMAINING;t=SECONDS`).
    Ietf,
    /// Both families.
    Both,
    /// Neither: a 429 carries only `Retry-After`, and the client must find the limit itself.
    None,
}

impl RateHeaders {
    pub(crate) fn legacy(self) -> bool {
        matches!(self, Self::Legacy | Self::Both)
    }

    pub(crate) fn ietf(self) -> bool {
        matches!(self, Self::Ietf | Self::Both)
    }
}

impl std::fmt::Display for RateHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Legacy => "legacy",
            Self::Ietf => "ietf",
            Self::Both => "both",
            Self::None => "none",
        })
    }
}

impl std::str::FromStr for RateHeaders {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "legacy" => Ok(Self::Legacy),
            "ietf" => Ok(Self::Ietf),
            "both" => Ok(Self::Both),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "unknown rate headers {value:?}: legacy, ietf, both or none"
            )),
        }
    }
}

/// A period during which every request is answered 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outage {
    /// When it starts, counted from the simulator's start.
    pub(crate) at: Duration,
    /// How long it lasts.
    pub(crate) length: Duration,
}

impl Outage {
    /// If `elapsed` (since start) falls in this outage, how much of it is left.
    pub(crate) fn remaining(&self, elapsed: Duration) -> Option<Duration> {
        let end = self.at.saturating_add(self.length);
        (self.at <= elapsed && elapsed < end).then(|| end - elapsed)
    }
}

/// Configures and starts an upstream simulator; see the [module docs](super) for an example.
///
/// Every setter is optional; [`UpstreamBuilder::default`] is the simulator of the API document:
/// 11 requests per second in a sliding window with `X-RateLimit-*` fields, a million credits, the key [`DEFAULT_KEY`], no faults, no outages, no
/// added latency, no concurrency limit, 25 followers per page, and only the example users (less
/// `12345`) exist.
#[derive(Debug, Clone)]
pub struct UpstreamBuilder {
    pub(crate) rate: u32,
    pub(crate) window: WindowKind,
    pub(crate) rate_headers: RateHeaders,
    pub(crate) credits: u64,
    pub(crate) key: String,
    pub(crate) extra_keys: Vec<String>,
    pub(crate) fault_every: u64,
    pub(crate) outages: Vec<Outage>,
    pub(crate) latency: Duration,
    pub(crate) concurrency_limit: Option<u32>,
    pub(crate) concurrency_status: StatusCode,
    pub(crate) page_size: usize,
    pub(crate) all_numeric_users_exist: bool,
    pub(crate) missing_users: BTreeSet<String>,
    pub(crate) hostile: Option<Hostile>,
    pub(crate) hostile_count: u64,
}

impl Default for UpstreamBuilder {
    fn default() -> Self {
        Self {
            rate: DEFAULT_RATE,
            window: WindowKind::SlidingLog,
            rate_headers: RateHeaders::Legacy,
            credits: DEFAULT_CREDITS,
            key: DEFAULT_KEY.to_owned(),
            extra_keys: Vec::new(),
            fault_every: 0,
            outages: Vec::new(),
            latency: Duration::ZERO,
            concurrency_limit: None,
            concurrency_status: StatusCode::TOO_MANY_REQUESTS,
            page_size: DEFAULT_PAGE_SIZE,
            all_numeric_users_exist: false,
            missing_users: BTreeSet::from([MISSING_SEED_USER_ID.to_owned()]),
            hostile: None,
            hostile_count: u64::MAX,
        }
    }
}

impl UpstreamBuilder {
    /// The default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many followers requests each key may have admitted per second (default 11), as the
    /// [`window`](Self::window) counts them. `/sys/balance` reports it as `rate`; it can change
    /// at runtime ([`UpstreamHandle::set_rate`](super::UpstreamHandle::set_rate)).
    ///
    /// # Panics
    ///
    /// Panics if `rate` is 0.
    pub fn rate(mut self, rate: u32) -> Self {
        assert!(rate > 0, "rate must be at least 1 request per second");
        self.rate = rate;
        self
    }

    /// How the rate is counted (default [`WindowKind::SlidingLog`]). A token bucket built with a
    /// burst of 0 (what `token-bucket` alone reads as) gets twice the rate.
    pub fn window(mut self, window: WindowKind) -> Self {
        self.window = window;
        self
    }

    /// Which rate-limit fields the followers answers carry (default [`RateHeaders::Legacy`]).
    pub fn rate_headers(mut self, fields: RateHeaders) -> Self {
        self.rate_headers = fields;
        self
    }

    /// The window with its defaults filled in for the configured rate.
    pub(crate) fn resolved_window(&self) -> WindowKind {
        match self.window {
            WindowKind::TokenBucket { burst: 0 } => WindowKind::token_bucket(self.rate),
            window => window,
        }
    }

    /// The starting credit balance (default 1,000,000). Every 200 from the followers endpoint
    /// costs one credit; at 0 the endpoint answers 402. All keys draw on this one balance.
    pub fn credits(mut self, credits: u64) -> Self {
        self.credits = credits;
        self
    }

    /// The access key expected in `x-access-key` (default [`DEFAULT_KEY`]).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// Accepts one more access key. Each key has its own rate window and concurrency limit.
    pub fn add_key(mut self, key: impl Into<String>) -> Self {
        self.extra_keys.push(key.into());
        self
    }

    /// Answers 500 to every `n`th admitted followers request, counting from 1: requests `n`,
    /// `2n`, ... (default 0, never). A request is admitted once it passes the rate limit.
    pub fn fault_every(mut self, n: u64) -> Self {
        self.fault_every = n;
        self
    }

    /// Adds an outage: from `at` after the simulator starts, for `length`, every request to the
    /// API (followers and balance) is answered 503 with a `Retry-After` that says when it ends.
    /// Call it again to add more.
    pub fn outage(mut self, at: Duration, length: Duration) -> Self {
        self.outages.push(Outage { at, length });
        self
    }

    /// Waits this long before answering each admitted followers request (default none). The
    /// request holds its concurrency slot while it waits.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// How many followers requests each key may have in progress at once (default `None`, no
    /// limit). One beyond it is answered [`concurrency_status`](Self::concurrency_status).
    ///
    /// # Panics
    ///
    /// Panics if the limit is `Some(0)`.
    pub fn concurrency_limit(mut self, limit: Option<u32>) -> Self {
        assert!(limit != Some(0), "a concurrency limit must be at least 1");
        self.concurrency_limit = limit;
        self
    }

    /// The status that answers a request beyond the concurrency limit (default 429; the search
    /// APIs use 402).
    pub fn concurrency_status(mut self, status: StatusCode) -> Self {
        self.concurrency_status = status;
        self
    }

    /// Followers per page (default 25).
    ///
    /// # Panics
    ///
    /// Panics if `page_size` is 0 or more than [`MAX_PAGE_SIZE`].
    pub fn page_size(mut self, page_size: usize) -> Self {
        assert!(
            (1..=MAX_PAGE_SIZE).contains(&page_size),
            "page_size must be between 1 and {MAX_PAGE_SIZE}"
        );
        self.page_size = page_size;
        self
    }

    /// When `true`, every all-digit user id exists except the missing ones; when `false` (the
    /// default), only the ids of [`SEED_USER_IDS`] do.
    pub fn all_numeric_users_exist(mut self, yes: bool) -> Self {
        self.all_numeric_users_exist = yes;
        self
    }

    /// Makes `user_id` answer 404. `12345` is missing by default.
    pub fn missing_user(mut self, user_id: impl Into<String>) -> Self {
        self.missing_users.insert(user_id.into());
        self
    }

    /// Misbehaves on the followers endpoint in the way `mode` says (default: never); see
    /// [`Hostile`] for what each mode does, and [`hostile_count`](Self::hostile_count) for how
    /// often.
    pub fn hostile(mut self, mode: Hostile) -> Self {
        self.hostile = Some(mode);
        self
    }

    /// Misbehaves on the first `count` answers the [hostile mode](Self::hostile) can spoil,
    /// then behaves (default: on every one).
    pub fn hostile_count(mut self, count: u64) -> Self {
        self.hostile_count = count;
        self
    }

    /// Whether the simulator so configured lets `user_id` exist.
    pub fn user_exists(&self, user_id: &str) -> bool {
        if self.missing_users.contains(user_id) {
            return false;
        }
        if self.all_numeric_users_exist
            && !user_id.is_empty()
            && user_id.bytes().all(|b| b.is_ascii_digit())
        {
            return true;
        }
        SEED_USER_IDS.contains(&user_id)
    }

    /// Whether `key` is one of the accepted access keys.
    pub(crate) fn accepts_key(&self, key: &str) -> bool {
        self.key == key || self.extra_keys.iter().any(|k| k == key)
    }

    /// All accepted access keys.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key.as_str()).chain(self.extra_keys.iter().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_users_are_the_seed_less_12345() {
        let config = UpstreamBuilder::default();
        assert!(config.user_exists("1553030189"));
        assert!(!config.user_exists("12345"));
        assert!(!config.user_exists("777"));
    }

    #[test]
    fn all_numeric_users_exist_except_missing_ones() {
        let config = UpstreamBuilder::default()
            .all_numeric_users_exist(true)
            .missing_user("777");
        assert!(config.user_exists("42"));
        assert!(!config.user_exists("777"));
        assert!(!config.user_exists("12345"));
        assert!(!config.user_exists("abc"));
        assert!(!config.user_exists(""));
    }

    #[test]
    fn outage_covers_a_half_open_interval() {
        let outage = Outage {
            at: Duration::from_secs(2),
            length: Duration::from_secs(1),
        };
        assert_eq!(outage.remaining(Duration::from_millis(1999)), None);
        assert_eq!(
            outage.remaining(Duration::from_secs(2)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(outage.remaining(Duration::from_secs(3)), None);
    }
}
