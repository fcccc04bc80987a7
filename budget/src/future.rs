//! The futures of this crate: [`ResponseFuture`] (of [`Budget`](crate::Budget)), [`Reserve`]
//! (of [`Ledger::reserve_async`](crate::Ledger::reserve_async)) and
//! [`KeyQuotaFuture`](crate::quota::KeyQuotaFuture).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tollway_core::{BoxError, OutcomeKind};
use tower::Service;

pub use crate::ledger::Reserve;
pub use crate::quota::future::KeyQuotaFuture;

use crate::layer::Config;
use crate::policy::parse_credits;
use crate::reservation::Reservation;
use crate::store::{Finish, Store};

pin_project! {
    /// Waits for the request's reservation, then for the inner service to be ready, calls it,
    /// and settles the reservation when the response arrives; refunds it when the inner service
    /// fails or this future is dropped first.
    pub struct ResponseFuture<S: Service<Req>, Req, St: Store> {
        #[pin]
        state: State<S, Req, St>,
        config: Arc<Config<St>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Req>, Req, St: Store> {
        Reserving {
            reserve: Reserve<St>,
            inner: Option<S>,
            request: Option<Req>,
        },
        Readying {
            inner: S,
            request: Option<Req>,
            reservation: Option<Reservation<St>>,
        },
        Called {
            #[pin]
            future: S::Future,
            reservation: Option<Reservation<St>>,
        },
        // A charge above the reservation is recorded before the response is returned.
        Settling {
            #[pin]
            pending: St::Pending,
            response: Option<S::Response>,
        },
        Done,
    }
}

impl<S: Service<Req>, Req, St: Store> ResponseFuture<S, Req, St> {
    pub(crate) fn new(
        reserve: Reserve<St>,
        inner: S,
        request: Req,
        config: Arc<Config<St>>,
    ) -> Self {
        Self {
            state: State::Reserving {
                reserve,
                inner: Some(inner),
                request: Some(request),
            },
            config,
        }
    }
}

impl<S: Service<Req>, Req, St: Store> fmt::Debug for ResponseFuture<S, Req, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Reserving { .. } => "Reserving",
            State::Readying { .. } => "Readying",
            State::Called { .. } => "Called",
            State::Settling { .. } => "Settling",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

const POLLED_AFTER_COMPLETION: &str = "ResponseFuture polled after completion";

impl<S, Req, St, B> Future for ResponseFuture<S, Req, St>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    St: Store,
{
    type Output = Result<http::Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut state = this.state;
        loop {
            match state.as_mut().project() {
                StateProj::Reserving {
                    reserve,
                    inner,
                    request,
                } => {
                    let reservation = match ready!(Pin::new(reserve).poll(cx)) {
                        Ok(reservation) => reservation,
                        Err(refused) => {
                            state.set(State::Done);
                            return Poll::Ready(Err(refused.into_box_error()));
                        }
                    };
                    let inner = inner.take().expect(POLLED_AFTER_COMPLETION);
                    let request = request.take();
                    state.set(State::Readying {
                        inner,
                        request,
                        reservation: Some(reservation),
                    });
                }
                StateProj::Readying {
                    inner,
                    request,
                    reservation,
                } => {
                    if let Err(error) = ready!(inner.poll_ready(cx)) {
                        // Never sent: the reservation is refunded.
                        state.set(State::Done);
                        return Poll::Ready(Err(error.into()));
                    }
                    let future = inner.call(request.take().expect(POLLED_AFTER_COMPLETION));
                    let reservation = reservation.take();
                    state.set(State::Called {
                        future,
                        reservation,
                    });
                }
                StateProj::Called {
                    future,
                    reservation,
                } => {
                    let result = ready!(future.poll(cx));
                    let reservation = reservation.take().expect(POLLED_AFTER_COMPLETION);
                    match result {
                        Ok(response) => match settle(this.config, reservation, &response) {
                            Some(pending) => state.set(State::Settling {
                                pending,
                                response: Some(response),
                            }),
                            None => {
                                state.set(State::Done);
                                return Poll::Ready(Ok(response));
                            }
                        },
                        Err(error) => {
                            state.set(State::Done);
                            let error = error.into();
                            let outcome = this.config.classifier.classify_error(&*error);
                            tracing::debug!(outcome = %outcome.kind(), "request failed: reservation refunded");
                            drop(reservation);
                            return Poll::Ready(Err(error));
                        }
                    }
                }
                StateProj::Settling { pending, response } => {
                    if let Err(error) = ready!(pending.poll(cx)) {
                        // The answer is real; only its record is missing: say so loudly.
                        tracing::error!(
                            ledger = %this.config.ledger.name(),
                            %error,
                            "budget: a charge above the reservation was not recorded"
                        );
                    }
                    let response = response.take().expect(POLLED_AFTER_COMPLETION);
                    state.set(State::Done);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Done => panic!("{POLLED_AFTER_COMPLETION}"),
            }
        }
    }
}

/// Settles `reservation` as `response` says: its charge, the balance it reports and, for a
/// 402, the latch, all in one step of the store (nothing can be reserved in between). Returns
/// what to wait for when the charge is above the reservation: the response is returned once the
/// store has recorded it (a crash right after must not forget it).
fn settle<St: Store, B>(
    config: &Config<St>,
    reservation: Reservation<St>,
    response: &http::Response<B>,
) -> Option<St::Pending> {
    let headers = response.headers();
    let outcome = config
        .classifier
        .classify_response(response.status(), headers);
    let charge = config.charge.charge(reservation.cost(), &outcome, headers);
    let balance = config
        .balance_header
        .as_ref()
        .and_then(|name| headers.get(name))
        .and_then(|value| parse_credits(value.as_bytes()));
    let latch = outcome.kind() == OutcomeKind::CreditsExhausted;
    if latch {
        tracing::warn!(
            ledger = %config.ledger.name(),
            "budget latched: the upstream answered 402"
        );
    }
    let over = charge > reservation.cost();
    let pending = reservation.conclude(Finish::response(charge, balance, latch));
    over.then_some(pending)
}
