//! [`KeyQuotaFuture`]: reserves the key's quota (in a fleet's store, if need be), charges the
//! key for its response and adds the quota headers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::Service;

use super::QuotaShared;
use super::key::QuotaKey;
use crate::error::ReserveError;
use crate::ledger::{Ledger, Reserve};
use crate::priority::Priority;
use crate::reservation::Reservation;
use crate::store::DynStore;

/// The reservation an admitted request holds until its response.
pub(super) enum Held {
    /// On the key's ledger in this process.
    Local(Reservation),
    /// In the fleet's store.
    Fleet(Reservation<DynStore>),
}

impl Held {
    fn cost(&self) -> u64 {
        match self {
            Self::Local(r) => r.cost(),
            Self::Fleet(r) => r.cost(),
        }
    }

    /// Settles (or refunds, for a zero charge); the ledger to read headers from, if it answers
    /// without a round trip.
    fn finish(self, charge: u64) -> Option<Ledger> {
        match self {
            Self::Local(r) => {
                let ledger = r.ledger().clone();
                if charge == 0 {
                    r.refund();
                } else {
                    r.settle(charge);
                }
                Some(ledger)
            }
            Self::Fleet(r) => {
                if charge == 0 {
                    r.refund();
                } else {
                    r.settle(charge);
                }
                None
            }
        }
    }
}

/// A request waiting for the fleet's store to reserve its cost.
pub(super) struct Pending<S, Req> {
    pub(super) reserve: Reserve<DynStore>,
    /// The key's ledger in this process: its local fallback.
    pub(super) local: Ledger,
    pub(super) key: QuotaKey,
    pub(super) cost: u64,
    pub(super) priority: Priority,
    pub(super) service: S,
    pub(super) request: Req,
    pub(super) shared: Arc<QuotaShared>,
}

pin_project! {
    /// The response future of [`KeyQuota`](super::KeyQuota): waits for a fleet's store to
    /// reserve the request's cost (in a fleet), charges the key as the charge policy says and
    /// adds the quota headers; a dropped or failed request is refunded.
    pub struct KeyQuotaFuture<S, Req, B>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, B>
    where
        S: Service<Req>,
    {
        Reserving {
            pending: Option<Box<Pending<S, Req>>>,
        },
        Called {
            #[pin]
            future: S::Future,
            held: Option<Held>,
            shared: Arc<QuotaShared>,
        },
        Refused {
            response: Option<http::Response<B>>,
        },
    }
}

impl<S: Service<Req>, Req, B> KeyQuotaFuture<S, Req, B> {
    pub(super) fn called(future: S::Future, held: Held, shared: Arc<QuotaShared>) -> Self {
        Self {
            state: State::Called {
                future,
                held: Some(held),
                shared,
            },
        }
    }

    pub(super) fn refused(response: http::Response<B>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }

    pub(super) fn reserving(pending: Pending<S, Req>) -> Self {
        Self {
            state: State::Reserving {
                pending: Some(Box::new(pending)),
            },
        }
    }
}

impl<S: Service<Req>, Req, B> fmt::Debug for KeyQuotaFuture<S, Req, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyQuotaFuture").finish_non_exhaustive()
    }
}

impl<S, Req, B> Future for KeyQuotaFuture<S, Req, B>
where
    S: Service<Req, Response = http::Response<B>>,
    B: From<String>,
{
    type Output = Result<http::Response<B>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Refused { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("KeyQuotaFuture polled after completion")));
                }
                StateProj::Reserving { pending } => {
                    let Some(waiting) = pending.as_mut() else {
                        panic!("KeyQuotaFuture polled after completion");
                    };
                    let outcome = ready!(Pin::new(&mut waiting.reserve).poll(cx));
                    let Some(pending) = pending.take() else {
                        unreachable!("checked above");
                    };
                    decided(*pending, outcome)
                }
                StateProj::Called {
                    future,
                    held,
                    shared,
                } => {
                    let mut response = ready!(future.poll(cx))?;
                    let held = held.take().expect("KeyQuotaFuture polled after completion");
                    let charge =
                        shared
                            .charge
                            .charge(response.status(), response.headers(), held.cost());
                    if let Some(ledger) = held.finish(charge) {
                        shared.add_headers(response.headers_mut(), &ledger);
                    }
                    return Poll::Ready(Ok(response));
                }
            };
            self.set(next);
        }
    }
}

/// What a request whose reservation the fleet's store answered becomes.
fn decided<S, Req, B>(
    pending: Pending<S, Req>,
    outcome: Result<Reservation<DynStore>, ReserveError>,
) -> KeyQuotaFuture<S, Req, B>
where
    S: Service<Req>,
    B: From<String>,
{
    let Pending {
        local,
        key,
        cost,
        priority,
        mut service,
        request,
        shared,
        ..
    } = pending;
    if let (Err(ReserveError::Store(_)), Some(fleet)) = (&outcome, &shared.fleet) {
        fleet.failed();
    }
    let held = match outcome {
        Ok(reservation) => Held::Fleet(reservation),
        Err(ReserveError::Store(error))
            if shared.fleet.as_ref().is_some_and(|f| f.fails_open()) =>
        {
            // Fail open: this key's ledger in this process decides, and is all that is
            // charged (never the store, later).
            tracing::debug!(key = %key, %error, "quota store unavailable: charging the local quota");
            match local.reserve(cost, priority) {
                Ok(reservation) => Held::Local(reservation),
                Err(refused) => {
                    return KeyQuotaFuture::refused(shared.refusal(&key, &refused, Some(&local)));
                }
            }
        }
        Err(refused) => {
            tracing::debug!(key = %key, %refused, "quota refused a request");
            return KeyQuotaFuture::refused(shared.refusal(&key, &refused, None));
        }
    };
    KeyQuotaFuture::called(service.call(request), held, shared)
}
