use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::HeaderValue;
use http::{Request, Response};
use http_body::Body;
use tollway_core::BoxError;
use tollway_core::idempotency::{IDEMPOTENCY_KEY, is_safe_to_resend};
use tower::Service;

use crate::body::ReplayBody;
use crate::extensions::StopReason;
use crate::future::{Resend, ResponseFuture};
use crate::layer::RetryLayer;
use crate::policy::RetryPolicy;

/// Retries requests to the inner service by a [`RetryPolicy`].
///
/// The inner service receives `Request<ReplayBody<B>>` and must be `Clone` (resends go to a
/// clone, polled ready first). A body that may be resent is read into memory before the first
/// send (see [`ReplayBody`]). The last response is returned with
/// [`Attempts`](crate::Attempts) (and [`RetriesStopped`](crate::RetriesStopped) when a
/// retryable outcome was not retried) in its extensions; the last error is returned as a
/// [`RequestFailed`](crate::RequestFailed) carrying the same, unless it is another tollway
/// layer's refusal, which is returned as it is. Clones share the policy's budget.
///
/// See the [crate docs](crate) for an example.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    policy: Arc<RetryPolicy>,
}

impl<S> Retry<S> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Self::from_shared(inner, Arc::new(policy))
    }

    pub(crate) fn from_shared(inner: S, policy: Arc<RetryPolicy>) -> Self {
        Self { inner, policy }
    }

    /// A layer applying `policy`.
    pub fn layer(policy: RetryPolicy) -> RetryLayer {
        RetryLayer::new(policy)
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let policy = &*self.policy;
        if let Some(budget) = &policy.budget {
            budget.deposit();
        }
        let safe = is_safe_to_resend(&request);
        if !safe && policy.resend_non_idempotent && policy.generate_idempotency_keys {
            let key = HeaderValue::try_from(policy.rng.hex_key())
                .expect("hex digits are a valid header value");
            request.headers_mut().insert(IDEMPOTENCY_KEY, key);
        }
        let declared = request.body().size_hint().exact();
        let never = if policy.max_attempts <= 1 {
            Some(StopReason::MaxAttempts)
        } else if !(safe || policy.resend_non_idempotent) {
            Some(StopReason::NotIdempotent)
        } else if declared.is_none_or(|len| len > policy.max_replay_bytes) {
            Some(StopReason::BodyNotReplayable)
        } else {
            None
        };
        let (parts, body) = request.into_parts();
        if let Some(reason) = never {
            let future = self
                .inner
                .call(Request::from_parts(parts, ReplayBody::forward(body)));
            return ResponseFuture::called(future, Arc::clone(&self.policy), Resend::Never(reason));
        }

        // Resends go to the service that was polled ready; the caller keeps a fresh clone.
        let fresh = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, fresh);
        let started = policy.deadline.map(|_| policy.clock.now());
        let resend = Resend::possible(service, parts, started);
        if body.is_end_stream() {
            // Nothing to read: the first send goes now.
            ResponseFuture::called_first(Arc::clone(&self.policy), resend)
        } else {
            // A body may not send more than it declared: that bounds what is read.
            let limit = declared.unwrap_or(0);
            ResponseFuture::buffering(body, limit, Arc::clone(&self.policy), resend)
        }
    }
}
