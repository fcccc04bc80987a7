//! [`ResponseFuture`]: what a [`ServerLimiter`](super::ServerLimiter) returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use axum::body::{Body, Bytes, HttpBody};
use http::Response;
use pin_project_lite::pin_project;
use tollway_core::BoxError;
use tower::Service;

use super::concurrency::InFlightGuard;
use super::headers::{self, HeaderOptions, PolicyInfo};
use super::priority::{Permit, Waiting};
use super::states::States;

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
    /// inner service's response (after waiting for a priority slot, if need be) with the
    /// rate-limit headers added. The request's concurrency place and admission slot are held
    /// until the inner response is ready, and given back if this future is dropped.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
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
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        // Boxed: the rare states stay off the size of the common one.
        Ready {
            response: Option<Box<Response<Body>>>,
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

/// A request waiting for a priority slot, with the service made ready for it.
struct Parked<S, Req> {
    waiting: Waiting,
    service: Option<S>,
    request: Option<Req>,
    /// `None` in shadow mode: an evicted request goes ahead.
    evicted: Option<Response<Body>>,
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
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

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, Req, ResBody> Future for ResponseFuture<S, Req>
where
    S: Service<Req, Response = Response<ResBody>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Ready { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(*response));
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
