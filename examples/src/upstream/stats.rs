//! What the simulator reports about a run: [`Stats`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The simulator's record of a run, as served by `GET /__stats` and returned by
/// [`Upstream::stats`](super::Upstream::stats).
///
/// The record is kept by the simulator alone, with no tollway code involved, so a test can use
/// it to judge a client: a well-behaved one shows no 429 in [`by_status`](Self::by_status), no
/// [`duplicate_page_fetches`](Self::duplicate_page_fetches), and a
/// [`max_in_flight`](Self::max_in_flight) within its own concurrency limit.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests received on the followers and balance endpoints, whatever their outcome.
    pub requests: u64,
    /// How many of those requests got each status, keyed by the code as a string (`"200"`).
    pub by_status: BTreeMap<String, u64>,
    /// Credits spent: one per 200 from the followers endpoint.
    pub credits_charged: u64,
    /// Credits left.
    pub credits_left: u64,
    /// The most followers requests of one key admitted (not turned away by the rate limit) in any
    /// one-second window, over the whole run. Never above the configured rate.
    pub max_in_any_1s_window: u64,
    /// The same, counting the admitted requests of all keys together.
    pub max_in_any_1s_window_all_keys: u64,
    /// The most followers requests in progress at once (all keys, all outcomes), from arrival to
    /// answer.
    pub max_in_flight: u64,
    /// 200s for a page (user and page number) that had already been served with a 200: credits a
    /// client wasted by fetching the same page twice.
    pub duplicate_page_fetches: u64,
}

impl Stats {
    /// How many requests got `status`.
    ///
    /// ```
    /// use tollway_examples::upstream::Stats;
    ///
    /// let mut stats = Stats::default();
    /// stats.by_status.insert("429".to_owned(), 3);
    /// assert_eq!(stats.status(429), 3);
    /// assert_eq!(stats.status(200), 0);
    /// ```
    pub fn status(&self, status: u16) -> u64 {
        self.by_status
            .get(&status.to_string())
            .copied()
            .unwrap_or(0)
    }
}
