//! How a run ends early: [`StopReason`] and [`Stopped`].

use std::fmt;
use std::time::Duration;

use super::report::Report;

/// Why a run stopped before its work was done.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The API refused the key (401).
    Unauthorized,
    /// The account has no credit left (402).
    InsufficientBalance,
    /// This run's `--budget-per-run` is spent.
    BudgetSpent {
        /// The budget, in credits.
        budget: u64,
    },
    /// The crawl's `--budget` is spent: what earlier runs of the crawl (same cache directory)
    /// spent counts, their requests cut short by a crash or a kill included.
    CrawlBudgetSpent {
        /// The crawl's budget, in credits.
        budget: u64,
        /// What earlier runs had spent when this one started.
        earlier_runs: u64,
    },
    /// The fleet's `--budget` (shared in Redis by every process of the fleet) is spent.
    FleetBudgetSpent {
        /// The fleet's budget, in credits.
        budget: u64,
    },
    /// A budget layer in the service refused a request.
    BudgetExhausted(String),
    /// Fleet mode: Redis, where the rate limit and the budget live, could not be reached or
    /// answered an error. The pipeline fails closed: no request is sent without Redis's
    /// permission. A later run with the same journal resumes.
    Store(String),
    /// The deadline passed first.
    Deadline(Duration),
    /// The journal could not be opened or written.
    Journal(String),
    /// The base URL or the key cannot be sent.
    Config(String),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unauthorized => f.write_str("unauthorized: the API refused the access key (401)"),
            Self::InsufficientBalance => f.write_str("insufficient balance: the API answered 402"),
            Self::BudgetSpent { budget } => {
                write!(f, "budget exhausted: this run's {budget} credits are spent")
            }
            Self::CrawlBudgetSpent {
                budget,
                earlier_runs,
            } => write!(
                f,
                "budget exhausted: the crawl's {budget} credits are spent ({earlier_runs} by earlier runs)"
            ),
            Self::FleetBudgetSpent { budget } => write!(
                f,
                "budget exhausted: the fleet's {budget} credits are spent (shared in Redis)"
            ),
            Self::BudgetExhausted(why) => write!(f, "budget exhausted: {why}"),
            Self::Store(why) => write!(f, "fleet store unavailable (fail closed): {why}"),
            Self::Deadline(after) => {
                write!(
                    f,
                    "deadline: not finished after {:.1} s",
                    after.as_secs_f64()
                )
            }
            Self::Journal(why) => write!(f, "journal: {why}"),
            Self::Config(why) => write!(f, "configuration: {why}"),
        }
    }
}

/// A run that had to stop, with what it did until then (pages fetched are in the journal: the
/// next run with the same cache directory resumes from there).
#[derive(Debug, Clone)]
pub struct Stopped {
    /// Why it stopped.
    pub reason: StopReason,
    /// What it did.
    pub report: Report,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stopped: {}", self.reason)
    }
}

impl std::error::Error for Stopped {}
