//! The futures of the file store: a reservation waiting for its record to be durable, and any
//! other record doing the same.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tollway_core::StoreUnavailable;

use super::Shared;
use super::commit::{self, Outcome, Slot};
use crate::store::backend::{Decision, Grant};

/// A file-backed reservation: decided at once, granted once its record is durable.
// Public in a private module: the sealed store trait names it.
#[allow(unreachable_pub)]
#[derive(Debug)]
pub struct FileReserving(pub(super) Reserving);

#[derive(Debug)]
pub(super) enum Reserving {
    Decided(Option<Decision>),
    Waiting {
        shared: Arc<Shared>,
        grant: Grant,
        slot: Arc<Slot>,
    },
}

impl Future for FileReserving {
    type Output = Result<Decision, StoreUnavailable>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut self.0;
        match this {
            Reserving::Decided(decision) => Poll::Ready(Ok(decision
                .take()
                .expect("FileReserving polled after completion"))),
            Reserving::Waiting { slot, .. } => {
                let outcome = std::task::ready!(slot.poll(cx));
                let Reserving::Waiting { shared, grant, .. } =
                    std::mem::replace(this, Reserving::Decided(None))
                else {
                    unreachable!("matched above")
                };
                Poll::Ready(match outcome {
                    Outcome::Durable => Ok(Decision::Granted(grant)),
                    Outcome::Failed => {
                        shared.refund(&grant);
                        Err(shared.failure("reserve"))
                    }
                })
            }
        }
    }
}

/// Resolves once a journal record is durable.
#[allow(unreachable_pub)]
#[derive(Debug)]
pub struct FileDone {
    shared: Arc<Shared>,
    seq: u64,
    slot: Option<Arc<Slot>>,
}

impl FileDone {
    pub(super) fn new(shared: &Arc<Shared>, seq: u64) -> Self {
        Self {
            shared: Arc::clone(shared),
            seq,
            slot: None,
        }
    }
}

impl Future for FileDone {
    type Output = Result<(), StoreUnavailable>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let slot = this
            .slot
            .get_or_insert_with(|| commit::register(&this.shared, this.seq));
        match std::task::ready!(slot.poll(cx)) {
            Outcome::Durable => Poll::Ready(Ok(())),
            Outcome::Failed => Poll::Ready(Err(this.shared.failure("journal"))),
        }
    }
}
