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
use crate::store::{MemoryStore, Store};

/// Reserves credit for every request before anything else, then waits for the inner service
/// and calls it, and settles the reservation when the response arrives; see [`BudgetLayer`].
///
/// A refused request is refused at once: it never waits for the inner service to be ready (a
/// rate limiter's permit, say) and never reaches it. The call fails with a
/// [`BudgetExhausted`](tollway_core::BudgetExhausted) (or, when the store fails,
/// [`StoreUnavailable`](tollway_core::StoreUnavailable)) that callers can `downcast_ref` from
/// the returned [`BoxError`].
///
/// Because the budget decides first, the inner service is made ready inside the response future,
/// on a clone (as `tower::util::Oneshot` does): `S` must be `Clone`, and `poll_ready` is always
/// ready.
pub struct Budget<S, St: Store = MemoryStore> {
    inner: S,
    config: Arc<Config<St>>,
}

impl<S, St: Store> Budget<S, St> {
    /// Wraps `inner`, spending from `ledger` with the defaults of [`BudgetLayer::new`].
    pub fn new(inner: S, ledger: Ledger<St>) -> Self {
        Self::from_config(inner, BudgetLayer::new(ledger).config)
    }

    pub(crate) fn from_config(inner: S, config: Arc<Config<St>>) -> Self {
        Self { inner, config }
    }

    /// The ledger this service spends from.
    pub fn ledger(&self) -> &Ledger<St> {
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

impl<S: Clone, St: Store> Clone for Budget<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, St: Store> fmt::Debug for Budget<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("inner", &self.inner)
            .field("ledger", &self.config.ledger)
            .finish_non_exhaustive()
    }
}

impl<S, St, ReqBody, ResBody> Service<http::Request<ReqBody>> for Budget<S, St>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    St: Store,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, http::Request<ReqBody>, St>;

    /// Always ready: the budget decides in `call`, before the inner service is waited for.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let cost = self.config.cost.of(&request);
        let priority = Priority::of(&request);
        let ledger = &self.config.ledger;
        // Reserved now, before anything waits; the future only learns the outcome.
        let reserving = ledger
            .shared
            .store
            .reserve(cost, ledger.floor(priority), ledger.now());
        ResponseFuture::start(
            reserving,
            self.inner.clone(),
            request,
            Arc::clone(&self.config),
            cost,
            priority,
        )
    }
}
