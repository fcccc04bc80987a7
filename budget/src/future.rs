//! The response future of [`Budget`](crate::Budget).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tollgate_core::{BoxError, OutcomeKind};

use crate::layer::Config;
use crate::policy::parse_credits;
use crate::reservation::Reservation;

pin_project! {
    /// Settles the request's reservation when the inner future yields a response; refunds it when
    /// the inner future fails or this future is dropped first.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called {
            #[pin]
            future: F,
            reservation: Option<Reservation>,
            config: Arc<Config>,
        },
        Refused {
            error: Option<BoxError>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(future: F, reservation: Reservation, config: Arc<Config>) -> Self {
        Self {
            state: State::Called {
                future,
                reservation: Some(reservation),
                config,
            },
        }
    }

    pub(crate) fn refused(error: BoxError) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "Called",
            State::Refused { .. } => "Refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
            StateProj::Called {
                future,
                reservation,
                config,
            } => {
                let result = ready!(future.poll(cx));
                let reservation = reservation
                    .take()
                    .expect("ResponseFuture polled after completion");
                match result {
                    Ok(response) => {
                        settle(config, reservation, &response);
                        Poll::Ready(Ok(response))
                    }
                    Err(error) => {
                        let error = error.into();
                        let outcome = config.classifier.classify_error(&*error);
                        tracing::debug!(outcome = %outcome.kind(), "request failed: reservation refunded");
                        drop(reservation);
                        Poll::Ready(Err(error))
                    }
                }
            }
        }
    }
}

fn settle<B>(config: &Config, reservation: Reservation, response: &http::Response<B>) {
    let headers = response.headers();
    let outcome = config
        .classifier
        .classify_response(response.status(), headers);
    let charge = config.charge.charge(reservation.cost(), &outcome, headers);
    reservation.settle(charge);
    if let Some(balance) = config
        .balance_header
        .as_ref()
        .and_then(|name| headers.get(name))
        .and_then(|value| parse_credits(value.as_bytes()))
    {
        config.ledger.sync_balance(balance);
    }
    // After the sync: a 402 wins over whatever balance its headers claim.
    if outcome.kind() == OutcomeKind::CreditsExhausted {
        config.ledger.latch();
    }
}
