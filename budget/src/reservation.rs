//! Credit held for one request in flight.

use std::fmt;

use tollway_core::StoreUnavailable;

use crate::ledger::Ledger;
use crate::store::{Finish, Grant, MemoryStore, Store};

/// Credit held for one request. [`settle`](Self::settle) it with what the upstream charged;
/// dropping it unsettled refunds it (the request failed, errored or was cancelled).
#[must_use = "dropping a reservation refunds it at once"]
pub struct Reservation<St: Store = MemoryStore> {
    ledger: Ledger<St>,
    grant: Grant,
    done: bool,
}

impl<St: Store> fmt::Debug for Reservation<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("id", &self.grant.id())
            .field("cost", &self.grant.cost())
            .finish_non_exhaustive()
    }
}

impl<St: Store> Reservation<St> {
    pub(crate) fn new(ledger: Ledger<St>, grant: Grant) -> Self {
        Self {
            ledger,
            grant,
            done: false,
        }
    }

    /// The credits held.
    pub fn cost(&self) -> u64 {
        self.grant.cost()
    }

    /// The ledger this reservation belongs to.
    pub fn ledger(&self) -> &Ledger<St> {
        &self.ledger
    }

    /// Releases the hold and records `charge` as spent (0 for an uncharged response; more than
    /// the cost if the upstream says so: spend may then exceed a limit, and later reservations
    /// wait for it). Takes effect at once; a journal or Redis records it a moment later
    /// ([`settle_async`](Self::settle_async) waits).
    pub fn settle(self, charge: u64) {
        drop(self.conclude(Finish::settle(charge)));
    }

    /// Releases the hold and charges nothing (what dropping does, said out loud).
    pub fn refund(self) {
        drop(self);
    }

    /// [`settle`](Self::settle), waiting until the store has recorded it.
    ///
    /// # Errors
    ///
    /// If the store could not record it. For Redis, the lease then expires and counts as spent
    /// at its cost; for a journal, the reservation stays counted at its cost after a restart.
    pub async fn settle_async(self, charge: u64) -> Result<(), StoreUnavailable> {
        self.conclude(Finish::settle(charge)).await
    }

    /// [`refund`](Self::refund), waiting until the store has recorded it.
    ///
    /// # Errors
    ///
    /// As [`settle_async`](Self::settle_async).
    pub async fn refund_async(self) -> Result<(), StoreUnavailable> {
        self.conclude(Finish::refund()).await
    }

    /// Ends the reservation as a response says (settle, balance, latch), in one step.
    pub(crate) fn conclude(mut self, finish: Finish) -> St::Pending {
        self.done = true;
        self.ledger.finish(self.grant, finish)
    }
}

impl<St: Store> Drop for Reservation<St> {
    fn drop(&mut self) {
        if !self.done {
            drop(self.ledger.finish(self.grant, Finish::refund()));
        }
    }
}
