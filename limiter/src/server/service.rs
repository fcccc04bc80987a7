//! [`ServerLimiter`]: the service a [`ServerLimiterLayer`](super::ServerLimiterLayer) wraps
//! around an API.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use http::{Request, Response, StatusCode};
use tollway_core::BoxError;
use tower::Service;

use super::future::{Held, PendingHeaders, ResponseFuture};
use super::headers::{self, ResetStyle};
use super::key::RequestHead;
use super::limits::Refusal;
use super::metrics;
use super::priority::Admit;
use super::rejection::RejectionKind;
use super::shared::Shared;
use super::states::States;
use crate::clock::{LimiterClock, QuantaClock};

/// Checks each request against the layer's limits before the inner service sees it.
///
/// In order: the rate limits (all-or-nothing; refused with the [`Rejection`]'s status,
/// `Retry-After` and the policy headers), the per-key concurrency limit (refused at once with
/// its status), then priority admission (queued, or 503). Admitted responses carry the policy
/// headers when [`HeaderOptions::on_allowed`] is on. In shadow mode nothing is refused.
///
/// A request refused by the concurrency limit or the queue has already counted against the
/// rate limits: it reached the server. The concurrency place and the admission slot are held
/// until the inner service's response is ready (not while its body streams).
///
/// [`Rejection`]: super::Rejection
/// [`HeaderOptions::on_allowed`]: super::HeaderOptions::on_allowed
pub struct ServerLimiter<S, C: LimiterClock = QuantaClock> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S, C: LimiterClock> ServerLimiter<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<C>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: LimiterClock> Clone for ServerLimiter<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C: LimiterClock> fmt::Debug for ServerLimiter<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerLimiter")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for ServerLimiter<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
    C: LimiterClock,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<ReqBody>, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared: &Shared<C> = &self.shared;
        let want_state = shared.headers.wants_state() || shared.shadow;
        if let Some(remote) = &shared.remote {
            // A fleet's store decides; the request waits for it with the service made ready
            // (a clone stays in its place).
            let keys = shared
                .limits
                .extract(&RequestHead::of(&request))
                .as_slice()
                .to_vec();
            let deciding = Arc::clone(remote).decide(keys, want_state);
            let clone = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, clone);
            return ResponseFuture::deciding(deciding, Arc::clone(&self.shared), ready, request);
        }
        let mut states = States::default();
        let refused = shared
            .limits
            .check(&RequestHead::of(&request), want_state, &mut states);
        proceed(&self.shared, &mut self.inner, request, refused, states)
    }
}

/// Admits or refuses a request once its rate limits are decided: the refusal, or the
/// concurrency limit and priority admission, then the inner service.
pub(crate) fn proceed<S, C, ReqBody, ResBody>(
    shared: &Arc<Shared<C>>,
    inner: &mut S,
    request: Request<ReqBody>,
    refused: Option<Refusal>,
    states: States,
) -> ResponseFuture<S, Request<ReqBody>, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    C: LimiterClock,
{
    {
        let shared: &Shared<C> = shared;
        let head = RequestHead::of(&request);
        let options = shared.headers;

        if let Some(refusal) = refused {
            shared.limits.would_reject.fetch_add(1, Relaxed);
            if !shared.shadow {
                return ResponseFuture::ready(rate_refusal(shared, refusal, &states));
            }
            metrics::would_reject(RejectionKind::RateLimited);
        }
        let mut held = Held::default();
        if !states.is_empty() {
            count_near_limit(shared, &states);
            // The headers are written into the response itself when it is ready: no map of
            // their own to build and copy.
            if options.on_allowed && options.wants_state() {
                held.headers = Some(PendingHeaders {
                    policies: Arc::clone(&shared.limits.policies),
                    options,
                    states,
                    // Read now: the future has no clock.
                    wall: (options.legacy && options.reset_style == ResetStyle::UnixTimestamp)
                        .then(|| shared.clock.system_now()),
                });
            }
        }

        if let Some((limit, in_flight)) = &shared.concurrency
            && let Some(key) = limit.key.extract(&head)
        {
            let max = (limit.max)(&head);
            match in_flight.try_acquire(key, max) {
                Some(guard) => held.guard = Some(guard),
                None => {
                    if let Some(response) = refuse(shared, RejectionKind::Concurrency, limit.status)
                    {
                        return ResponseFuture::ready(response);
                    }
                }
            }
        }

        let Some((config, admission)) = &shared.priority else {
            return ResponseFuture::called(inner.call(request), held);
        };
        match admission.arrive((config.tier)(&head)) {
            Admit::Now(permit) => {
                held.permit = Some(permit);
                ResponseFuture::called(inner.call(request), held)
            }
            Admit::Rejected => {
                match refuse(
                    shared,
                    RejectionKind::QueueFull,
                    StatusCode::SERVICE_UNAVAILABLE,
                ) {
                    Some(response) => ResponseFuture::ready(response),
                    None => ResponseFuture::called(inner.call(request), held),
                }
            }
            Admit::Wait(waiting) => {
                // Wait with the service that was made ready; leave a clone in its place.
                let clone = inner.clone();
                let ready = std::mem::replace(inner, clone);
                let evicted = (!shared.shadow).then(|| {
                    shared.rejection.response(
                        RejectionKind::QueueFull,
                        StatusCode::SERVICE_UNAVAILABLE,
                        None,
                        None,
                    )
                });
                ResponseFuture::waiting(waiting, ready, request, held, evicted)
            }
        }
    }
}

/// The answer when a fleet's store cannot decide and a limit that applies fails closed: `503`
/// with the [`StoreUnavailable`](tollway_core::StoreUnavailable) in the response's extensions
/// (as an `Arc<StoreUnavailable>`)
/// (in shadow mode, `None`: the request goes ahead).
pub(crate) fn unavailable<C: LimiterClock>(
    shared: &Shared<C>,
    error: tollway_core::StoreUnavailable,
) -> Option<Response<Body>> {
    tracing::debug!(%error, "rate limits unavailable: refused (fail closed)");
    let mut response = refuse(
        shared,
        RejectionKind::StoreUnavailable,
        StatusCode::SERVICE_UNAVAILABLE,
    )?;
    response.extensions_mut().insert(Arc::new(error));
    Some(response)
}

/// The response to a request a rate limit refused.
#[cold]
fn rate_refusal<C: LimiterClock>(
    shared: &Shared<C>,
    refusal: Refusal,
    states: &States,
) -> Response<Body> {
    metrics::rejected(RejectionKind::RateLimited);
    let policy = shared.limits.policies.get(refusal.policy);
    let mut response = shared.rejection.response(
        RejectionKind::RateLimited,
        shared.rejection.status(),
        Some(refusal.wait),
        policy.map(|p| p.name.as_str()),
    );
    headers::write(
        &shared.headers,
        response.headers_mut(),
        &shared.limits.policies,
        states.as_slice(),
        Some(refusal.wait),
        || shared.clock.system_now(),
    );
    tracing::debug!(wait = ?refusal.wait, "request refused by a rate limit");
    response
}

/// Counts a refusal; the response to send, or `None` in shadow mode.
fn refuse<C: LimiterClock>(
    shared: &Shared<C>,
    kind: RejectionKind,
    status: StatusCode,
) -> Option<Response<Body>> {
    shared.limits.would_reject.fetch_add(1, Relaxed);
    if shared.shadow {
        metrics::would_reject(kind);
        return None;
    }
    metrics::rejected(kind);
    tracing::debug!(?kind, %status, "request refused");
    Some(shared.rejection.response(kind, status, None, None))
}

fn count_near_limit<C: LimiterClock>(shared: &Shared<C>, states: &States) {
    let policies = &shared.limits.policies;
    let near = states.as_slice().iter().find(|&&(policy, view)| {
        policies
            .get(policy)
            .is_some_and(|info| view.available.saturating_mul(10) <= info.advertised)
    });
    if let Some(&(policy, view)) = near {
        shared.limits.near_limit.fetch_add(1, Relaxed);
        if let Some(info) = policies.get(policy) {
            metrics::near_limit(&info.name);
            tracing::trace!(policy = %info.name, remaining = view.available, "near a limit");
        }
    }
}
