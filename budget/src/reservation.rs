//! Credit held for one request in flight.

use std::fmt;

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
    pub fn refund(self) {
        drop(self);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.ledger.finish_reservation(self.id, self.cost, None);
        }
    }
}
