//! The crawl's credit ledger: `--budget` is the crawl's, kept in its folder, so that a restart
//! (after a crash, a kill, a deadline) continues it rather than starting a fresh one.
//!
//! Every use of the budget crate's file ledger is in this one file.

use std::io;
use std::path::Path;

use tollway::budget::store::FileStore;
use tollway::budget::{Ledger, Priority, Reservation, ReserveError, Window};

/// The crawl's ledger file inside the cache directory.
pub const LEDGER_FILE: &str = "budget.ledger";

/// The crawl's ledger: the budget crate's kill-safe file ledger (a reservation is on disk before
/// the request goes out; one never settled, because its process died, counts as spent).
///
/// It always records spend, budget or not, so that a budget given to a later run of the crawl
/// counts what earlier runs spent.
pub(super) struct CrawlLedger {
    ledger: Ledger<FileStore>,
    limit: Option<u64>,
    spent_before: u64,
}

/// Why the crawl's ledger refused credit.
pub(super) enum Refusal {
    /// The crawl's budget is spent (reservations in flight included).
    Spent,
    /// The ledger could not record the reservation.
    Ledger(String),
}

/// Credit held by one try of a page. Dropped unsettled (the try was abandoned mid-flight), it
/// counts as spent: the upstream may have charged for it.
pub(super) struct CreditHold(Option<Reservation<FileStore>>);

impl CrawlLedger {
    /// Opens the ledger in `dir` with `limit` credits for the whole crawl (`None`: no limit).
    pub(super) fn open(dir: &Path, limit: Option<u64>) -> io::Result<Self> {
        let ledger = Ledger::builder()
            .name("pipeline-crawl")
            // Without a limit the ledger would keep no history; the largest one keeps it.
            .limit(limit.unwrap_or(u64::MAX), Window::lifetime())
            .open(dir.join(LEDGER_FILE))?;
        let spent_before = spent(&ledger);
        Ok(Self {
            ledger,
            limit,
            spent_before,
        })
    }

    /// The crawl's budget, if it has one.
    pub(super) fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// What earlier runs of the crawl spent (their unsettled reservations included).
    pub(super) fn spent_before(&self) -> u64 {
        self.spent_before
    }

    /// What the crawl has spent so far, this run included.
    pub(super) fn spent(&self) -> u64 {
        spent(&self.ledger)
    }

    /// Reserves one credit, on disk, before a try is sent. The wait for the disk (one group
    /// commit shared with concurrent reservations) happens off the executor's threads.
    pub(super) async fn reserve(&self) -> Result<CreditHold, Refusal> {
        match self.ledger.reserve_async(1, Priority::Normal).await {
            Ok(reservation) => Ok(CreditHold(Some(reservation))),
            Err(ReserveError::Exhausted(_)) => Err(Refusal::Spent),
            Err(error) => Err(Refusal::Ledger(error.to_string())),
        }
    }
}

impl CreditHold {
    /// No ledger: nothing held.
    pub(super) fn none() -> Self {
        Self(None)
    }

    /// The try is over: the upstream charged `charged` credits for it.
    pub(super) fn settle(mut self, charged: u64) {
        if let Some(reservation) = self.0.take() {
            reservation.settle(charged);
        }
    }
}

impl Drop for CreditHold {
    fn drop(&mut self) {
        if let Some(reservation) = self.0.take() {
            reservation.settle(1);
        }
    }
}

fn spent(ledger: &Ledger<FileStore>) -> u64 {
    ledger
        .snapshot()
        .windows
        .first()
        .map_or(0, |window| window.spent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_budget_is_the_crawls_across_opens() {
        let dir = std::env::temp_dir().join(format!("tollway-crawl-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        {
            // First run: no budget given, 2 credits spent, one try abandoned mid-flight.
            let ledger = CrawlLedger::open(&dir, None).unwrap();
            ledger.reserve().await.ok().unwrap().settle(1);
            ledger.reserve().await.ok().unwrap().settle(0);
            drop(ledger.reserve().await.ok().unwrap());
            assert_eq!(ledger.spent(), 2);
        }
        // Second run with a budget of 3: what the first spent counts, so one credit is left.
        let ledger = CrawlLedger::open(&dir, Some(3)).unwrap();
        assert_eq!((ledger.spent_before(), ledger.limit()), (2, Some(3)));
        let hold = ledger.reserve().await.ok().unwrap();
        assert!(matches!(ledger.reserve().await, Err(Refusal::Spent)));
        hold.settle(0);
        assert!(ledger.reserve().await.is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
