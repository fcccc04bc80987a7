//! The futures of the Redis store's operations.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tollway_core::StoreUnavailable;

use super::no_runtime;
use crate::store::backend::{Decision, Grant};

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), StoreUnavailable>> + Send>>;

/// A reservation in flight to Redis. It runs in a task of its own, so a caller that gives up
/// never strands credit: a grant that arrives after that is refunded by the task.
// Public in a private module: the sealed store trait names it.
#[allow(unreachable_pub)]
#[derive(Debug)]
pub struct RedisReserving(Reserving);

#[derive(Debug)]
enum Reserving {
    Decided(Option<Result<Decision, StoreUnavailable>>),
    Waiting(Arc<Handoff>),
}

impl RedisReserving {
    pub(super) fn decided(decision: Decision) -> Self {
        Self(Reserving::Decided(Some(Ok(decision))))
    }

    pub(super) fn failed(error: StoreUnavailable) -> Self {
        Self(Reserving::Decided(Some(Err(error))))
    }

    pub(super) fn waiting() -> (Self, Arc<Handoff>) {
        let handoff = Arc::new(Handoff::default());
        (Self(Reserving::Waiting(Arc::clone(&handoff))), handoff)
    }

    /// The caller gives up; returns a grant that must be refunded.
    pub(super) fn cancel(self) -> Option<Grant> {
        match self.0 {
            Reserving::Waiting(handoff) => handoff.abandon(),
            Reserving::Decided(Some(Ok(Decision::Granted(grant)))) => Some(grant),
            Reserving::Decided(_) => None,
        }
    }
}

impl Future for RedisReserving {
    type Output = Result<Decision, StoreUnavailable>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Reserving::Decided(decision) => Poll::Ready(
                decision
                    .take()
                    .expect("RedisReserving polled after completion"),
            ),
            Reserving::Waiting(handoff) => {
                let output = std::task::ready!(handoff.poll(cx));
                self.0 = Reserving::Decided(None);
                Poll::Ready(output)
            }
        }
    }
}

/// Where a reservation task hands its decision to the caller, or learns it was abandoned.
#[derive(Debug, Default)]
pub(super) struct Handoff {
    state: Mutex<HandoffState>,
}

#[derive(Debug, Default)]
struct HandoffState {
    result: Option<Result<Decision, StoreUnavailable>>,
    abandoned: bool,
    waker: Option<Waker>,
}

impl Handoff {
    /// Hands `decision` over; gives it back if the caller is gone.
    pub(super) fn deliver(&self, decision: Result<Decision, StoreUnavailable>) -> Option<Decision> {
        let mut state = self.state.lock();
        if state.abandoned {
            return decision.ok();
        }
        state.result = Some(decision);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        None
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<Decision, StoreUnavailable>> {
        let mut state = self.state.lock();
        match state.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// The caller gives up: a grant already delivered is returned, to be refunded.
    fn abandon(&self) -> Option<Grant> {
        let mut state = self.state.lock();
        state.abandoned = true;
        match state.result.take() {
            Some(Ok(Decision::Granted(grant))) => Some(grant),
            _ => None,
        }
    }
}

/// The outcome of an operation sent to Redis in a task (the operation goes ahead whether or
/// not this is awaited).
#[allow(unreachable_pub)]
pub struct RedisDone(Done);

enum Done {
    Spawned(tokio::task::JoinHandle<Result<(), StoreUnavailable>>),
    Waiting(BoxFuture),
    Failed(Option<StoreUnavailable>),
}

impl fmt::Debug for RedisDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisDone")
    }
}

impl RedisDone {
    pub(super) fn spawned(
        handle: Option<tokio::task::JoinHandle<Result<(), StoreUnavailable>>>,
    ) -> Self {
        Self(match handle {
            Some(handle) => Done::Spawned(handle),
            None => Done::Failed(Some(no_runtime("send"))),
        })
    }

    pub(super) fn waiting(
        future: impl Future<Output = Result<(), StoreUnavailable>> + Send + 'static,
    ) -> Self {
        Self(Done::Waiting(Box::pin(future)))
    }
}

impl Future for RedisDone {
    type Output = Result<(), StoreUnavailable>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Done::Spawned(handle) => {
                Poll::Ready(match std::task::ready!(Pin::new(handle).poll(cx)) {
                    Ok(result) => result,
                    Err(failed) => Err(StoreUnavailable::new("budget", "send", failed)),
                })
            }
            Done::Waiting(future) => future.as_mut().poll(cx),
            Done::Failed(error) => Poll::Ready(Err(error
                .take()
                .expect("RedisDone polled after completion"))),
        }
    }
}
