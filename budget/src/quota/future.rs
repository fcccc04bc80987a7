//! [`KeyQuotaFuture`]: charges a key for its response and adds the quota headers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::QuotaShared;
use crate::reservation::Reservation;

pin_project! {
    /// The response future of [`KeyQuota`](super::KeyQuota): charges the key as the charge
    /// policy says and adds the quota headers; a dropped or failed request is refunded.
    pub struct KeyQuotaFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Called {
            #[pin]
            future: F,
            reservation: Option<Reservation>,
            shared: Arc<QuotaShared>,
        },
        Refused {
            response: Option<http::Response<B>>,
        },
    }
}

impl<F, B> KeyQuotaFuture<F, B> {
    pub(super) fn called(future: F, reservation: Reservation, shared: Arc<QuotaShared>) -> Self {
        Self {
            state: State::Called {
                future,
                reservation: Some(reservation),
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
}

impl<F, B> fmt::Debug for KeyQuotaFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyQuotaFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for KeyQuotaFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("KeyQuotaFuture polled after completion"))),
            StateProj::Called {
                future,
                reservation,
                shared,
            } => {
                let mut response = ready!(future.poll(cx))?;
                let reservation = reservation
                    .take()
                    .expect("KeyQuotaFuture polled after completion");
                let ledger = reservation.ledger().clone();
                let charge =
                    shared
                        .charge
                        .charge(response.status(), response.headers(), reservation.cost());
                if charge == 0 {
                    reservation.refund();
                } else {
                    reservation.settle(charge);
                }
                shared.add_headers(response.headers_mut(), &ledger);
                Poll::Ready(Ok(response))
            }
        }
    }
}
