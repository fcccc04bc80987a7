//! What a run did: [`Report`], written as JSON by `--report` and printed as a table.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use super::queue::{DeadLetter, UserFailure};

/// Which client made a run.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The pipeline: durable queue, pacing, retries with dead letters.
    Pipeline,
    /// The API document's example client, ported faithfully (`--naive`).
    Naive,
}

/// The outcome of a run. Its JSON form (`--report PATH`) has exactly these keys.
///
/// `pages_fetched` and `followers_fetched` describe what the run holds at its end, pages taken
/// from the journal of an earlier run included (`pages_from_journal` of them); `cache_hits`
/// counts the answers the response cache gave instead of the upstream. `requests_sent`,
/// `responses` and `credits_spent` count this run's traffic only; `crawl_credits_spent` is what
/// the crawl's ledger holds, earlier runs included.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Report {
    /// Which client ran.
    pub mode: Mode,
    /// Distinct users asked for (the naive client: user ids as given, duplicates included).
    pub users_requested: u64,
    /// Users whose every page is held.
    pub users_completed: u64,
    /// Users that failed, and why.
    pub users_failed: Vec<UserFailure>,
    /// Pages held at the end of the run.
    pub pages_fetched: u64,
    /// Followers on those pages.
    pub followers_fetched: u64,
    /// Requests that reached the network (answered or not).
    pub requests_sent: u64,
    /// Responses by status code.
    pub responses: BTreeMap<String, u64>,
    /// Requests sent again after a failed attempt.
    pub retries: u64,
    /// Pages taken from the journal of earlier runs: no request, no credit.
    pub pages_from_journal: u64,
    /// Answers served by the response cache instead of the upstream: no credit.
    pub cache_hits: u64,
    /// Credits this run spent: one per followers `200`.
    pub credits_spent: u64,
    /// Credits the whole crawl has spent, earlier runs included (its ledger's count, which also
    /// counts requests a crash cut short); this run's alone without a crawl ledger.
    pub crawl_credits_spent: u64,
    /// Wall-clock seconds the run took.
    pub elapsed_s: f64,
    /// Times a circuit breaker opened, as seen by the run loop.
    pub breaker_opens: u64,
    /// Requests refused because the credit budget was spent.
    pub budget_exhausted: u64,
    /// Pages given up on after too many tries, with their last error.
    pub dead_letters: Vec<DeadLetter>,
}

impl Report {
    /// An empty report for `mode`.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            users_requested: 0,
            users_completed: 0,
            users_failed: Vec::new(),
            pages_fetched: 0,
            followers_fetched: 0,
            requests_sent: 0,
            responses: BTreeMap::new(),
            retries: 0,
            pages_from_journal: 0,
            cache_hits: 0,
            credits_spent: 0,
            crawl_credits_spent: 0,
            elapsed_s: 0.0,
            breaker_opens: 0,
            budget_exhausted: 0,
            dead_letters: Vec::new(),
        }
    }

    /// How many responses had `status`.
    pub fn status(&self, status: u16) -> u64 {
        self.responses
            .get(&status.to_string())
            .copied()
            .unwrap_or(0)
    }

    /// The reason the run is not a success, if it is not: a user that is neither completed nor
    /// failed for a permanent reason, such as one with a dead-lettered page or one the naive
    /// client gave up on.
    pub fn incomplete(&self) -> Option<String> {
        if !self.dead_letters.is_empty() {
            return Some(format!(
                "{} page(s) in dead letters; run again with the same --cache-dir to retry them",
                self.dead_letters.len()
            ));
        }
        let transient = self
            .users_failed
            .iter()
            .filter(|f| !is_permanent(&f.reason))
            .count();
        let unaccounted = self
            .users_requested
            .saturating_sub(self.users_completed + self.users_failed.len() as u64);
        if transient + unaccounted as usize > 0 {
            return Some(format!(
                "{} user(s) not crawled to the end",
                transient + unaccounted as usize
            ));
        }
        None
    }

    /// The shortest time `rate` allows for the requests this run could not avoid: one per page
    /// not taken from the journal or the cache, and one per 404.
    pub fn fastest_possible_s(&self, rate: u32) -> f64 {
        let needed = self
            .pages_fetched
            .saturating_sub(self.pages_from_journal + self.cache_hits)
            + self.status(404);
        needed as f64 / f64::from(rate.max(1))
    }

    /// The report as a table, with the fastest time `rate` allows.
    pub fn table(&self, rate: u32) -> Table<'_> {
        Table { report: self, rate }
    }
}

/// `text` with its control characters (escape sequences, newlines) written escaped: cursors
/// and error messages come from the upstream, and the report goes to a terminal.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether a failure reason is permanent (the user does not exist).
pub(crate) fn is_permanent(reason: &str) -> bool {
    reason == super::run::NOT_FOUND
}

/// A [`Report`] rendered as the table the binary prints.
#[derive(Debug)]
pub struct Table<'a> {
    report: &'a Report,
    rate: u32,
}

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: &dyn fmt::Display| {
            writeln!(f, "  {name:<18} {value}")
        };
        let mode = match r.mode {
            Mode::Pipeline => "pipeline",
            Mode::Naive => "naive (the API document's example client)",
        };
        writeln!(f, "tollway pipeline report: {mode}")?;
        row(f, "users", &format_args!("{} requested", r.users_requested))?;
        row(f, "  completed", &r.users_completed)?;
        row(f, "  failed", &r.users_failed.len())?;
        for failure in &r.users_failed {
            writeln!(f, "  {:<18}   {}: {}", "", failure.user_id, failure.reason)?;
        }
        row(
            f,
            "pages",
            &format_args!("{} ({} followers)", r.pages_fetched, r.followers_fetched),
        )?;
        row(f, "requests", &r.requests_sent)?;
        let statuses: Vec<String> = r
            .responses
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect();
        let answered: u64 = r.responses.values().sum();
        let mut by_status = statuses.join(", ");
        if r.requests_sent > answered {
            by_status.push_str(&format!(", no response: {}", r.requests_sent - answered));
        }
        row(f, "responses", &by_status)?;
        row(f, "retries", &r.retries)?;
        row(f, "from journal", &r.pages_from_journal)?;
        row(f, "cache hits", &r.cache_hits)?;
        if r.crawl_credits_spent > r.credits_spent {
            row(
                f,
                "credits spent",
                &format_args!(
                    "{} ({} for the crawl so far)",
                    r.credits_spent, r.crawl_credits_spent
                ),
            )?;
        } else {
            row(f, "credits spent", &r.credits_spent)?;
        }
        row(
            f,
            "elapsed",
            &format_args!(
                "{:.1} s (the rate of {}/s allows {:.1} s)",
                r.elapsed_s,
                self.rate,
                r.fastest_possible_s(self.rate)
            ),
        )?;
        row(f, "breaker opens", &r.breaker_opens)?;
        row(f, "budget refusals", &r.budget_exhausted)?;
        row(f, "dead letters", &r.dead_letters.len())?;
        for letter in &r.dead_letters {
            let page = if letter.page_id.is_empty() {
                "first page"
            } else {
                letter.page_id.as_str()
            };
            writeln!(
                f,
                "  {:<18}   {} {} after {} tries: {}",
                "",
                letter.user_id,
                printable(page),
                letter.tries,
                printable(&letter.error)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_exactly_the_documented_keys() {
        let value = serde_json::to_value(Report::new(Mode::Pipeline)).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "users_requested",
            "users_completed",
            "users_failed",
            "pages_fetched",
            "followers_fetched",
            "requests_sent",
            "responses",
            "retries",
            "pages_from_journal",
            "cache_hits",
            "credits_spent",
            "crawl_credits_spent",
            "elapsed_s",
            "breaker_opens",
            "budget_exhausted",
            "dead_letters",
            "mode",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn a_404_is_complete_a_dead_letter_is_not() {
        let mut report = Report::new(Mode::Pipeline);
        report.users_requested = 2;
        report.users_completed = 1;
        report.users_failed.push(UserFailure {
            user_id: "12345".to_owned(),
            reason: super::super::run::NOT_FOUND.to_owned(),
        });
        assert_eq!(report.incomplete(), None);
        report.dead_letters.push(DeadLetter {
            user_id: "1".to_owned(),
            page_id: String::new(),
            tries: 5,
            error: "500".to_owned(),
        });
        assert!(report.incomplete().unwrap().contains("dead letters"));
    }

    #[test]
    fn the_table_lists_failures_and_the_fastest_time() {
        let mut report = Report::new(Mode::Pipeline);
        report.users_requested = 2;
        report.users_completed = 1;
        report.pages_fetched = 22;
        report.users_failed.push(UserFailure {
            user_id: "12345".to_owned(),
            reason: "not found".to_owned(),
        });
        report.responses.insert("200".to_owned(), 22);
        report.responses.insert("404".to_owned(), 1);
        report.requests_sent = 25;
        let table = report.table(11).to_string();
        assert!(table.contains("12345: not found"), "{table}");
        assert!(table.contains("allows 2.1 s"), "{table}");
        assert!(table.contains("no response: 2"), "{table}");
    }

    #[test]
    fn an_upstream_cursor_cannot_drive_the_terminal() {
        // A dead letter's page is the upstream's cursor: printed as it came, escape sequences
        // in it would clear the operator's screen.
        let mut report = Report::new(Mode::Pipeline);
        report.users_requested = 1;
        report.dead_letters.push(DeadLetter {
            user_id: "1".to_owned(),
            page_id: "p\u{1b}[2J\u{1b}]0;pwned\u{7}".to_owned(),
            tries: 1,
            error: "500".to_owned(),
        });
        let table = report.table(1).to_string();
        assert!(!table.contains('\u{1b}'), "{table:?}");
        assert!(table.contains("p\\u{1b}[2J"), "{table}");
    }
}
