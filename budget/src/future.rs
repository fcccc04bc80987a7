//! The futures of this crate: [`ResponseFuture`] (of [`Budget`](crate::Budget)), [`Reserve`]
//! (of [`Ledger::reserve_async`](crate::Ledger::reserve_async)) and
//! [`KeyQuotaFuture`] (of [`KeyQuota`](crate::quota::KeyQuota)).

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
use crate::priority::Priority;
use crate::store::{Decision, Finish, Grant, Store};

pin_project! {
    /// Waits for the request's reservation, then for the inner service to be ready, calls it,
    /// and settles the reservation when the response arrives; refunds it when the inner service
    /// fails or this future is dropped first.
    ///
    /// When the reservation is decided at once (an in-memory ledger) and the inner service is
    /// ready, the request is sent from `call` and this future only waits for the response;
    /// otherwise the request and a clone of the inner service wait here, boxed.
    pub struct ResponseFuture<S: Service<Req>, Req, St: Store> {
        #[pin]
        state: State<S::Future, St::Pending, S::Response, Box<Deferred<S, Req, St>>>,
        // The credit this request holds, until it is settled or refunded.
        grant: Option<Grant>,
        config: Arc<Config<St>>,
        cost: u64,
        priority: Priority,
    }

    impl<S: Service<Req>, Req, St: Store> PinnedDrop for ResponseFuture<S, Req, St> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let ledger = &this.config.ledger;
            if let Some(grant) = this.grant.take() {
                drop(ledger.finish(grant, Finish::refund()));
            }
            if let StateProj::Deferred { deferred } = this.state.project()
                && let Some(reserving) = deferred.reserving.take()
            {
                ledger.shared.store.cancel(reserving, ledger.now());
            }
        }
    }
}

/// What waits in the future when the request could not be sent from `call`.
pub(crate) struct Deferred<S, Req, St: Store> {
    reserving: Option<St::Reserving>,
    inner: S,
    request: Option<Req>,
}

pin_project! {
    #[project = StateProj]
    enum State<F, P, R, D> {
        Deferred {
            deferred: D,
        },
        Called {
            #[pin]
            future: F,
        },
        // A charge above the reservation is recorded before the response is returned.
        Settling {
            #[pin]
            pending: P,
            response: Option<Box<R>>,
        },
        Failed {
            error: Option<BoxError>,
        },
        Done,
    }
}

/// What one step of the reservation or of the inner service's readiness came to.
enum Step {
    Pending,
    Go,
    Stop(BoxError),
}

impl<S, Req, St> ResponseFuture<S, Req, St>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    St: Store,
{
    /// Takes the request as far as it goes without waiting: decided, ready, sent.
    pub(crate) fn start(
        reserving: St::Reserving,
        mut inner: S,
        request: Req,
        config: Arc<Config<St>>,
        cost: u64,
        priority: Priority,
    ) -> Self {
        let mut this = Self {
            state: State::Done,
            grant: None,
            config,
            cost,
            priority,
        };
        // A waker that does nothing: a step that cannot finish now is taken again from
        // `poll`, with the caller's waker.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut reserving = Some(reserving);
        let step = this.reserve(&mut reserving, &mut cx);
        let step = match step {
            Step::Go => this.ready(&mut inner, &mut cx),
            other => other,
        };
        this.state = match step {
            Step::Go => State::Called {
                future: inner.call(request),
            },
            Step::Stop(error) => State::Failed { error: Some(error) },
            Step::Pending => State::Deferred {
                deferred: Box::new(Deferred {
                    reserving,
                    inner,
                    request: Some(request),
                }),
            },
        };
        this
    }

    /// Polls the reservation, if it is still being decided.
    fn reserve(&mut self, reserving: &mut Option<St::Reserving>, cx: &mut Context<'_>) -> Step {
        let Some(pending) = reserving.as_mut() else {
            return Step::Go;
        };
        let Poll::Ready(decided) = Pin::new(pending).poll(cx) else {
            return Step::Pending;
        };
        *reserving = None;
        decide(
            &self.config,
            &mut self.grant,
            decided,
            self.cost,
            self.priority,
        )
    }

    /// Polls the inner service's readiness.
    fn ready(&mut self, inner: &mut S, cx: &mut Context<'_>) -> Step {
        match inner.poll_ready(cx) {
            Poll::Pending => Step::Pending,
            Poll::Ready(Ok(())) => Step::Go,
            Poll::Ready(Err(error)) => {
                // Never sent: refunded.
                refund(&self.config, &mut self.grant);
                Step::Stop(error.into())
            }
        }
    }
}

/// Records the reservation's outcome: a grant, or why not.
fn decide<St: Store>(
    config: &Config<St>,
    grant: &mut Option<Grant>,
    decided: Result<Decision, tollway_core::StoreUnavailable>,
    cost: u64,
    priority: Priority,
) -> Step {
    match decided {
        Ok(Decision::Granted(granted)) => {
            *grant = Some(granted);
            Step::Go
        }
        Ok(Decision::Refused(reason, retry_after)) => Step::Stop(
            config
                .ledger
                .reject(reason, retry_after, cost, priority)
                .into_box_error(),
        ),
        Err(unavailable) => Step::Stop(Box::new(unavailable)),
    }
}

impl<S: Service<Req>, Req, St: Store> fmt::Debug for ResponseFuture<S, Req, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Deferred { .. } => "Deferred",
            State::Called { .. } => "Called",
            State::Settling { .. } => "Settling",
            State::Failed { .. } => "Failed",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("cost", &self.cost)
            .finish_non_exhaustive()
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
        let config = &**this.config;
        loop {
            match state.as_mut().project() {
                StateProj::Deferred { deferred } => {
                    let Deferred {
                        reserving,
                        inner,
                        request,
                    } = &mut **deferred;
                    if let Some(pending) = reserving.as_mut() {
                        let decided = ready!(Pin::new(pending).poll(cx));
                        *reserving = None;
                        if let Step::Stop(error) =
                            decide(config, this.grant, decided, *this.cost, *this.priority)
                        {
                            state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                    }
                    if let Err(error) = ready!(inner.poll_ready(cx)) {
                        // Never sent: refunded.
                        refund(config, this.grant);
                        state.set(State::Done);
                        return Poll::Ready(Err(error.into()));
                    }
                    let future = inner.call(request.take().expect(POLLED_AFTER_COMPLETION));
                    state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let result = ready!(future.poll(cx));
                    let grant = this.grant.take().expect(POLLED_AFTER_COMPLETION);
                    match result {
                        Ok(response) => match settle(config, grant, &response) {
                            Some(pending) => state.set(State::Settling {
                                pending,
                                response: Some(Box::new(response)),
                            }),
                            None => {
                                state.set(State::Done);
                                return Poll::Ready(Ok(response));
                            }
                        },
                        Err(error) => {
                            state.set(State::Done);
                            drop(config.ledger.finish(grant, Finish::refund()));
                            let error = error.into();
                            let outcome = config.classifier.classify_error(&*error);
                            tracing::debug!(outcome = %outcome.kind(), "request failed: reservation refunded");
                            return Poll::Ready(Err(error));
                        }
                    }
                }
                StateProj::Settling { pending, response } => {
                    if let Err(error) = ready!(pending.poll(cx)) {
                        // The answer is real; only its record is missing: say so loudly.
                        tracing::error!(
                            ledger = %config.ledger.name(),
                            %error,
                            "budget: a charge above the reservation was not recorded"
                        );
                    }
                    let response = response.take().expect(POLLED_AFTER_COMPLETION);
                    state.set(State::Done);
                    return Poll::Ready(Ok(*response));
                }
                StateProj::Failed { error } => {
                    let error = error.take().expect(POLLED_AFTER_COMPLETION);
                    state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => panic!("{POLLED_AFTER_COMPLETION}"),
            }
        }
    }
}

fn refund<St: Store>(config: &Config<St>, grant: &mut Option<Grant>) {
    if let Some(grant) = grant.take() {
        drop(config.ledger.finish(grant, Finish::refund()));
    }
}

/// Settles `grant` as `response` says: its charge, the balance it reports and, for a 402, the
/// latch, all in one step of the store (nothing can be reserved in between). Returns what to
/// wait for when the charge is above the reservation: the response is returned once the store
/// has recorded it (a crash right after must not forget it).
fn settle<St: Store, B>(
    config: &Config<St>,
    grant: Grant,
    response: &http::Response<B>,
) -> Option<St::Pending> {
    let headers = response.headers();
    let outcome = config
        .classifier
        .classify_response(response.status(), headers);
    let charge = config.charge.charge(grant.cost(), &outcome, headers);
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
    let over = charge > grant.cost();
    let pending = config
        .ledger
        .finish(grant, Finish::response(charge, balance, latch));
    over.then_some(pending)
}
