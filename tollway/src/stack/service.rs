//! [`ClientStack`]: the service [`ClientStackLayer`](super::ClientStackLayer) makes.

use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response};
use tollway_breaker::Breaker;
use tollway_budget::Budget;
use tollway_budget::store::{MemoryStore, Store};
use tollway_cache::{Cache, CacheBody};
use tollway_core::BoxError;
use tollway_limiter::store::{MemoryStore as LocalLimits, Store as LimiterStore};
use tollway_limiter::{AdaptiveLimiter, LimiterClock, QuantaClock};
use tollway_retry::Retry;
use tower::Service;
use tower::util::{BoxCloneSyncService, Either};

use super::uncached::Uncached;

/// Budget (when configured) over the limiter.
type Billed<S, C, St, L> = Either<Budget<AdaptiveLimiter<S, C, L>, St>, AdaptiveLimiter<S, C, L>>;
/// Breaker (when configured) over [`Billed`].
type Guarded<S, C, St, L> = Either<Breaker<Billed<S, C, St, L>>, Billed<S, C, St, L>>;
/// Cache (or its pass-through) over retry over [`Guarded`].
type Layers<S, C, St, L> =
    Either<Cache<Retry<Guarded<S, C, St, L>>>, Uncached<Retry<Guarded<S, C, St, L>>>>;

/// The client stack over `S`: cache → retry → breaker → budget → limiter → `S`. One concrete,
/// unboxed type whichever optional layers are configured.
///
/// For `S: Service<Request<ReplayBody<B>>, Response = Response<R>>` it is a
/// `Service<Request<B>, Response = Response<CacheBody<R>>, Error = BoxError>`: the retry layer
/// sends [`ReplayBody`](tollway_retry::ReplayBody)s inward so that it can resend a body, and
/// the cache answers with [`CacheBody`]s. Errors are the inner service's error or one of the
/// layers' rejections (`RateLimited`, `CircuitOpen`, `BudgetExhausted`, `RetryAfterTooLong`),
/// boxed; find them with [`tollway_core::error::find_cause`].
///
/// When `S`'s own error is a [`BoxError`], box the stack with [`boxed`](Self::boxed) before
/// awaiting it in `tokio::spawn` (see the [module docs](crate::stack#spawning)).
pub struct ClientStack<
    S,
    C: LimiterClock = QuantaClock,
    St: Store = MemoryStore,
    L: LimiterStore<C> = LocalLimits,
> {
    inner: Layers<S, C, St, L>,
}

impl<S, C: LimiterClock, St: Store, L: LimiterStore<C>> ClientStack<S, C, St, L> {
    pub(super) fn from_parts(inner: Layers<S, C, St, L>) -> Self {
        Self { inner }
    }

    /// The wrapped client.
    pub fn get_ref(&self) -> &S {
        let retry = match &self.inner {
            Either::Left(cache) => cache.get_ref(),
            Either::Right(uncached) => uncached.get_ref(),
        };
        let billed = match retry.get_ref() {
            Either::Left(breaker) => breaker.get_ref(),
            Either::Right(billed) => billed,
        };
        match billed {
            Either::Left(budget) => budget.get_ref().get_ref(),
            Either::Right(limiter) => limiter.get_ref(),
        }
    }

    /// The wrapped client, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        let retry = match &mut self.inner {
            Either::Left(cache) => cache.get_mut(),
            Either::Right(uncached) => uncached.get_mut(),
        };
        let billed = match retry.get_mut() {
            Either::Left(breaker) => breaker.get_mut(),
            Either::Right(billed) => billed,
        };
        match billed {
            Either::Left(budget) => budget.get_mut().get_mut(),
            Either::Right(limiter) => limiter.get_mut(),
        }
    }

    /// Unwraps the client.
    pub fn into_inner(self) -> S {
        let retry = match self.inner {
            Either::Left(cache) => cache.into_inner(),
            Either::Right(uncached) => uncached.into_inner(),
        };
        let billed = match retry.into_inner() {
            Either::Left(breaker) => breaker.into_inner(),
            Either::Right(billed) => billed,
        };
        match billed {
            Either::Left(budget) => budget.into_inner().into_inner(),
            Either::Right(limiter) => limiter.into_inner(),
        }
    }

    /// The stack as a [`BoxCloneSyncService`]: a type that is short to name, and the way to
    /// await the stack inside `tokio::spawn` when the client's error is itself a [`BoxError`]
    /// (see the [module docs](crate::stack#spawning)).
    pub fn boxed<B, R>(self) -> BoxCloneSyncService<Request<B>, Response<CacheBody<R>>, BoxError>
    where
        Self: Service<Request<B>, Response = Response<CacheBody<R>>, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        <Self as Service<Request<B>>>::Future: Send + 'static,
    {
        BoxCloneSyncService::new(self)
    }
}

impl<S: Clone, C: LimiterClock, St: Store, L: LimiterStore<C>> Clone for ClientStack<S, C, St, L> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S, C: LimiterClock, St: Store, L: LimiterStore<C>> fmt::Debug for ClientStack<S, C, St, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cache = matches!(self.inner, Either::Left(_));
        f.debug_struct("ClientStack")
            .field("cache", &cache)
            .finish_non_exhaustive()
    }
}

impl<S, C, St, L, Req> Service<Req> for ClientStack<S, C, St, L>
where
    C: LimiterClock,
    St: Store,
    L: LimiterStore<C>,
    Layers<S, C, St, L>: Service<Req>,
{
    type Response = <Layers<S, C, St, L> as Service<Req>>::Response;
    type Error = <Layers<S, C, St, L> as Service<Req>>::Error;
    type Future = <Layers<S, C, St, L> as Service<Req>>::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        self.inner.call(request)
    }
}
