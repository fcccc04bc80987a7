//! [`Reserve`]: the future of [`Ledger::reserve_async`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::Ledger;
use crate::error::ReserveError;
use crate::priority::Priority;
use crate::reservation::Reservation;
use crate::store::{Decision, Store};

/// A reservation on its way: resolves to a [`Reservation`] or says why not. Made by
/// [`Ledger::reserve_async`]; dropping it before it resolves releases whatever was reserved.
#[must_use = "a reservation is made at once; dropping this releases it"]
pub struct Reserve<St: Store> {
    ledger: Option<Ledger<St>>,
    reserving: Option<St::Reserving>,
    cost: u64,
    priority: Priority,
}

impl<St: Store> Reserve<St> {
    pub(super) fn new(
        ledger: Ledger<St>,
        reserving: St::Reserving,
        cost: u64,
        priority: Priority,
    ) -> Self {
        Self {
            ledger: Some(ledger),
            reserving: Some(reserving),
            cost,
            priority,
        }
    }
}

impl<St: Store> fmt::Debug for Reserve<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reserve")
            .field("cost", &self.cost)
            .field("priority", &self.priority)
            .field("done", &self.reserving.is_none())
            .finish()
    }
}

impl<St: Store> Future for Reserve<St> {
    type Output = Result<Reservation<St>, ReserveError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let reserving = this
            .reserving
            .as_mut()
            .expect("Reserve polled after completion");
        let outcome = std::task::ready!(Pin::new(reserving).poll(cx));
        this.reserving = None;
        let ledger = this.ledger.take().expect("Reserve polled after completion");
        Poll::Ready(match outcome {
            Ok(Decision::Granted(grant)) => {
                tracing::trace!(
                    cost = this.cost,
                    priority = this.priority.as_str(),
                    "credit reserved"
                );
                Ok(Reservation::new(ledger, grant))
            }
            Ok(Decision::Refused(reason, retry_after)) => {
                Err(ledger.reject(reason, retry_after, this.cost, this.priority))
            }
            Err(error) => Err(ReserveError::Store(error)),
        })
    }
}

impl<St: Store> Drop for Reserve<St> {
    fn drop(&mut self) {
        if let (Some(reserving), Some(ledger)) = (self.reserving.take(), &self.ledger) {
            ledger.shared.store.cancel(reserving, ledger.now());
        }
    }
}
