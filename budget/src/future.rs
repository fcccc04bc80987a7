//! The response future of [`Budget`](crate::Budget).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tollway_core::{BoxError, OutcomeKind};

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

#[cfg(feature = "redis")]
type Reserve = tokio::task::JoinHandle<Result<Reservation, crate::error::ReserveError>>;
#[cfg(feature = "redis")]
type Call<F> = Box<dyn FnOnce() -> F + Send>;

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // A Redis ledger's reservation in flight; the inner service is called once it is granted.
        Reserving {
            reserve: Reserving<F>,
        },
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

/// What the `Reserving` state holds (nothing, without the `redis` feature: never built).
struct Reserving<F> {
    #[cfg(feature = "redis")]
    reserve: Reserve,
    #[cfg(feature = "redis")]
    call: Option<Call<F>>,
    #[cfg(feature = "redis")]
    config: Arc<Config>,
    #[cfg(not(feature = "redis"))]
    _never: std::convert::Infallible,
    #[cfg(not(feature = "redis"))]
    _future: std::marker::PhantomData<fn() -> F>,
}

impl<F> ResponseFuture<F> {
    #[cfg(feature = "redis")]
    pub(crate) fn reserving(reserve: Reserve, call: Call<F>, config: Arc<Config>) -> Self {
        Self {
            state: State::Reserving {
                reserve: Reserving {
                    reserve,
                    call: Some(call),
                    config,
                },
            },
        }
    }

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
            State::Reserving { .. } => "Reserving",
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

    // Without the `redis` feature only one state change exists, so the loop never repeats.
    #[cfg_attr(not(feature = "redis"), allow(clippy::never_loop))]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                #[cfg(feature = "redis")]
                StateProj::Reserving { reserve } => {
                    let granted = ready!(Pin::new(&mut reserve.reserve).poll(cx));
                    let config = Arc::clone(&reserve.config);
                    let reservation = match granted {
                        Ok(Ok(reservation)) => reservation,
                        Ok(Err(refused)) => return Poll::Ready(Err(refused.into_box_error())),
                        Err(failed) => {
                            let error = config.ledger.store_failed("reserve", failed);
                            return Poll::Ready(Err(Box::new(error)));
                        }
                    };
                    let call = reserve
                        .call
                        .take()
                        .expect("ResponseFuture polled after completion");
                    state.set(State::Called {
                        future: call(),
                        reservation: Some(reservation),
                        config,
                    });
                }
                #[cfg(not(feature = "redis"))]
                StateProj::Reserving { reserve } => match reserve._never {},
                StateProj::Refused { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .expect("ResponseFuture polled after completion")));
                }
                StateProj::Called {
                    future,
                    reservation,
                    config,
                } => {
                    let result = ready!(future.poll(cx));
                    let reservation = reservation
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return match result {
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
                    };
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
    let balance = config
        .balance_header
        .as_ref()
        .and_then(|name| headers.get(name))
        .and_then(|value| parse_credits(value.as_bytes()));
    let latch = outcome.kind() == OutcomeKind::CreditsExhausted;
    #[cfg(feature = "redis")]
    if config.ledger.is_shared() {
        // One task, so Redis sees them in the same order as below.
        config
            .ledger
            .settle_in_background(reservation, charge, balance, latch);
        return;
    }
    reservation.settle(charge);
    if let Some(balance) = balance {
        config.ledger.sync_balance(balance);
    }
    // After the sync: a 402 wins over whatever balance its headers claim.
    if latch {
        config.ledger.latch();
    }
}
