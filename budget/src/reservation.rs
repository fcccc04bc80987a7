//! Credit held for one request in flight.

use std::fmt;

use crate::error::StoreUnavailable;
use crate::ledger::Ledger;

/// Credit held for one request. [`settle`](Self::settle) it with what the upstream charged;
/// dropping it unsettled refunds it (the request failed, errored or was cancelled).
#[must_use = "dropping a reservation refunds it at once"]
pub struct Reservation {
    ledger: Ledger,
    id: u64,
    cost: u64,
    done: bool,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("id", &self.id)
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

impl Reservation {
    pub(crate) fn new(ledger: Ledger, id: u64, cost: u64) -> Self {
        Self {
            ledger,
            id,
            cost,
            done: false,
        }
    }

    /// The credits held.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// The ledger this reservation belongs to.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Releases the hold and records `charge` as spent (0 for an uncharged response; more than
    /// the cost if the upstream says so: spend may then exceed a limit, and later reservations
    /// wait for it).
    pub fn settle(mut self, charge: u64) {
        self.done = true;
        self.ledger
            .finish_reservation(self.id, self.cost, Some(charge));
    }

    /// Releases the hold and charges nothing (what dropping does, said out loud).
    ///
    /// A [Redis](crate::LedgerBuilder::redis) ledger's [`settle`](Self::settle) and refund
    /// (including by drop) are sent in a background task (see [`Ledger::flush`]); if that task
    /// never runs (no runtime) or fails, the lease expires and counts as spent.
    pub fn refund(self) {
        drop(self);
    }

    /// [`settle`](Self::settle), waiting until it is recorded (one round trip for a
    /// [Redis](crate::LedgerBuilder::redis) ledger).
    ///
    /// # Errors
    ///
    /// If Redis cannot be reached: the lease then expires and counts as spent at its cost (as it
    /// does if this future is dropped before it completes).
    pub async fn settle_async(mut self, charge: u64) -> Result<(), StoreUnavailable> {
        self.done = true;
        self.ledger
            .finish_reservation_async(self.id, self.cost, Some(charge))
            .await
    }

    /// [`refund`](Self::refund), waiting until it is recorded.
    ///
    /// # Errors
    ///
    /// If Redis cannot be reached: the lease then expires and counts as spent at its cost (as it
    /// does if this future is dropped before it completes).
    pub async fn refund_async(mut self) -> Result<(), StoreUnavailable> {
        self.done = true;
        self.ledger
            .finish_reservation_async(self.id, self.cost, None)
            .await
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.ledger.finish_reservation(self.id, self.cost, None);
        }
    }
}
