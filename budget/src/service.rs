//! The budget service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tollway_core::BoxError;
use tower::Service;

use crate::future::ResponseFuture;
use crate::layer::{BudgetLayer, Config};
use crate::ledger::Ledger;
use crate::priority::Priority;

/// Reserves credit for every request before calling the inner service, and settles it when the
/// response arrives; see [`BudgetLayer`].
///
/// A refused request never reaches the inner service: the call fails with a
/// [`BudgetExhausted`](tollway_core::BudgetExhausted) that callers can `downcast_ref` from the
/// returned [`BoxError`].
pub struct Budget<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Budget<S> {
    /// Wraps `inner`, spending from `ledger` with the defaults of [`BudgetLayer::new`].
    pub fn new(inner: S, ledger: Ledger) -> Self {
        Self::from_config(inner, BudgetLayer::new(ledger).config)
    }

    pub(crate) fn from_config(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The ledger this service spends from.
    pub fn ledger(&self) -> &Ledger {
        &self.config.ledger
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for Budget<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Budget<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("inner", &self.inner)
            .field("ledger", &self.config.ledger)
            .finish_non_exhaustive()
    }
}

impl<S> Budget<S> {
    /// Reserves synchronously (in-memory and file-backed ledgers) and calls the inner service.
    fn reserve_and_call<ReqBody, ResBody>(
        &mut self,
        request: http::Request<ReqBody>,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    {
        let cost = self.config.cost.of(&request);
        let priority = Priority::of(&request);
        match self.config.ledger.reserve(cost, priority) {
            Ok(reservation) => ResponseFuture::called(
                self.inner.call(request),
                reservation,
                Arc::clone(&self.config),
            ),
            Err(refused) => ResponseFuture::refused(refused.into_box_error()),
        }
    }
}

#[cfg(not(feature = "redis"))]
impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Budget<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        self.reserve_and_call(request)
    }
}

/// With the `redis` feature, a [Redis](crate::LedgerBuilder::redis) ledger reserves before the
/// inner service is called, so the request waits in the response future: the service that was
/// made ready is moved into it (and a clone left in its place, as `tower`'s async filters do),
/// hence the `Clone + Send + 'static` bounds. Other ledgers take the synchronous path.
#[cfg(feature = "redis")]
impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Budget<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    ReqBody: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if !self.config.ledger.is_shared() {
            return self.reserve_and_call(request);
        }
        let cost = self.config.cost.of(&request);
        let priority = Priority::of(&request);
        // A task, not an inline future: if the caller drops the response future mid-reserve,
        // the task still sees the lease granted and its reservation's drop refunds it.
        let reserve = match self.config.ledger.spawn_reserve(cost, priority) {
            Ok(reserve) => reserve,
            Err(error) => return ResponseFuture::refused(Box::new(error)),
        };
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::reserving(
            reserve,
            Box::new(move || ready.call(request)),
            Arc::clone(&self.config),
        )
    }
}
