//! [`ResponseFuture`]: what a [`ServerLimiter`](super::ServerLimiter) returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use axum::body::{Body, Bytes, HttpBody};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tollway_core::BoxError;
use tower::Service;

use super::concurrency::InFlightGuard;
use super::headers::{self, HeaderOptions, PolicyInfo};
use super::priority::{Permit, Waiting};
use super::remote::{Deciding, RemoteDecision};
use super::shared::Shared;
use super::states::States;
use crate::clock::{LimiterClock, QuantaClock};

/// Rate-limit headers to add to an admitted response when it is ready.
pub(crate) struct PendingHeaders {
    pub(crate) policies: Arc<[PolicyInfo]>,
    pub(crate) options: HeaderOptions,
    pub(crate) states: States,
    /// The wall clock at the decision, when a header needs it.
    pub(crate) wall: Option<SystemTime>,
}

impl PendingHeaders {
    fn write(&self, headers: &mut http::HeaderMap) {
        headers::write(
            &self.options,
            headers,
            &self.policies,
            self.states.as_slice(),
            None,
            || self.wall.unwrap_or_else(SystemTime::now),
        );
    }
}

pin_project! {
    /// The response of a [`ServerLimiter`](super::ServerLimiter): a refusal at once, or the
    /// inner service's response (after a fleet's store decided, and after waiting for a
    /// priority slot, if need be) with the rate-limit headers added. The request's concurrency
    /// place and admission slot are held until the inner response is ready, and given back if
    /// this future is dropped.
    pub struct ResponseFuture<S, Req, C = QuantaClock>
    where
        S: Service<Req>,
        C: LimiterClock,
    {
        #[pin]
        state: State<S, Req, C>,
        // Boxed, and only when there is something: the plain path's future stays small.
        held: Option<Box<Held>>,
    }
}

/// What an admitted request holds until its response is ready.
#[derive(Default)]
pub(crate) struct Held {
    pub(crate) headers: Option<PendingHeaders>,
    pub(crate) guard: Option<InFlightGuard>,
    pub(crate) permit: Option<Permit>,
}

impl Held {
    /// `None` when it holds nothing.
    pub(crate) fn boxed(self) -> Option<Box<Self>> {
        (self.headers.is_some() || self.guard.is_some() || self.permit.is_some())
            .then(|| Box::new(self))
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, C>
    where
        S: Service<Req>,
        C: LimiterClock,
    {
        // Boxed: the rare states stay off the size of the common one.
        Ready {
            response: Option<Box<Response<Body>>>,
        },
        Deciding {
            parked: Box<Undecided<S, Req, C>>,
        },
        Waiting {
            parked: Box<Parked<S, Req>>,
        },
        Called {
            #[pin]
            future: S::Future,
        },
    }
}

/// A request waiting for a fleet's store to decide its rate limits, with the service made
/// ready for it.
struct Undecided<S, Req, C: LimiterClock> {
    deciding: Deciding,
    shared: Arc<Shared<C>>,
    service: Option<S>,
    request: Option<Req>,
}

/// A request waiting for a priority slot, with the service made ready for it.
struct Parked<S, Req> {
    waiting: Waiting,
    service: Option<S>,
    request: Option<Req>,
    /// `None` in shadow mode: an evicted request goes ahead.
    evicted: Option<Response<Body>>,
}

impl<S: Service<Req>, Req, C: LimiterClock> ResponseFuture<S, Req, C> {
    pub(crate) fn deciding(
        deciding: Deciding,
        shared: Arc<Shared<C>>,
        service: S,
        request: Req,
    ) -> Self {
        Self {
            state: State::Deciding {
                parked: Box::new(Undecided {
                    deciding,
                    shared,
                    service: Some(service),
                    request: Some(request),
                }),
            },
            held: None,
        }
    }

    pub(crate) fn ready(response: Response<Body>) -> Self {
        Self {
            state: State::Ready {
                response: Some(Box::new(response)),
            },
            held: None,
        }
    }

    #[inline]
    pub(crate) fn called(future: S::Future, held: Held) -> Self {
        Self {
            state: State::Called { future },
            held: held.boxed(),
        }
    }

    pub(crate) fn waiting(
        waiting: Waiting,
        service: S,
        request: Req,
        held: Held,
        evicted: Option<Response<Body>>,
    ) -> Self {
        Self {
            state: State::Waiting {
                parked: Box::new(Parked {
                    waiting,
                    service: Some(service),
                    request: Some(request),
                    evicted,
                }),
            },
            held: held.boxed(),
        }
    }
}

impl<S: Service<Req>, Req, C: LimiterClock> fmt::Debug for ResponseFuture<S, Req, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody, C> Future for ResponseFuture<S, Request<ReqBody>, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
    C: LimiterClock,
{
    type Output = Result<Response<Body>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.as_mut().project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Ready { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(*response));
                }
                StateProj::Deciding { parked } => {
                    let decision = ready!(parked.deciding.as_mut().poll(cx));
                    let (Some(mut service), Some(request)) =
                        (parked.service.take(), parked.request.take())
                    else {
                        unreachable!("a deciding ResponseFuture holds its service and request");
                    };
                    let shared = Arc::clone(&parked.shared);
                    let next = match decision {
                        RemoteDecision::Decided(refused, states) => {
                            super::service::proceed(&shared, &mut service, request, refused, states)
                        }
                        RemoteDecision::Unavailable(error) => {
                            match super::service::unavailable(&shared, error) {
                                Some(response) => Self::ready(response),
                                // Shadow mode: the request goes ahead.
                                None => super::service::proceed(
                                    &shared,
                                    &mut service,
                                    request,
                                    None,
                                    States::default(),
                                ),
                            }
                        }
                    };
                    self.set(next);
                    this = self.as_mut().project();
                }
                StateProj::Waiting { parked } => {
                    let permit = ready!(Pin::new(&mut parked.waiting).poll(cx));
                    if let (None, Some(response)) = (&permit, parked.evicted.take()) {
                        *this.held = None;
                        this.state.set(State::Ready {
                            response: Some(Box::new(response)),
                        });
                        continue;
                    }
                    if let Some(permit) = permit {
                        this.held.get_or_insert_with(Box::default).permit = Some(permit);
                    }
                    let (Some(mut service), Some(request)) =
                        (parked.service.take(), parked.request.take())
                    else {
                        unreachable!("a waiting ResponseFuture holds its service and request");
                    };
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let mut response = ready!(future.poll(cx))?;
                    // The concurrency place and the admission slot go back now.
                    if let Some(held) = this.held.take()
                        && let Some(headers) = &held.headers
                    {
                        headers.write(response.headers_mut());
                    }
                    return Poll::Ready(Ok(response.map(Body::new)));
                }
            }
        }
    }
}
