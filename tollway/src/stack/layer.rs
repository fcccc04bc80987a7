//! [`ClientStackLayer`] and its builder.

use std::fmt;
use std::time::Duration;

use tollway_breaker::{BreakerHandle, BreakerLayer};
use tollway_budget::store::{MemoryStore, Store};
use tollway_budget::{BudgetLayer, Ledger};
use tollway_cache::CacheLayer;
use tollway_limiter::store::{MemoryStore as LocalLimits, Store as LimiterStore};
use tollway_limiter::{AdaptiveLimiter, LimiterClock, QuantaClock, RateLimiter};
use tollway_retry::{RetryLayer, RetryPolicy};
use tower::Layer;
use tower::util::Either;

use super::service::ClientStack;
use super::uncached::Uncached;

/// How long a caller of the stack waits for a rate permit at most, unless
/// [`ClientStackBuilder::max_wait`] says otherwise.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

/// The whole client stack as one tower [`Layer`], outermost to innermost
/// **cache → retry → breaker → budget → limiter**, in front of the service it wraps (see the
/// [module docs](crate::stack) for why this order).
///
/// The limiter and the retry layer are always there; the cache, the breaker and the budget are
/// there when given to the [builder](ClientStackLayer::builder). Cloning the layer (or a
/// service it made) never creates a second limiter, breaker, ledger or cache: they are shared.
///
/// Waits are bounded: no caller waits for a rate permit longer than
/// [`max_wait`](ClientStackBuilder::max_wait) (default [`DEFAULT_MAX_WAIT`]), however long a
/// pause the upstream orders (`Retry-After: 120`); it gets a
/// [`RateLimited`](tollway_core::RateLimited) carrying the time left instead.
/// `St` is the budget's [store](tollway_budget::store) (in memory unless a journal or Redis
/// ledger is given); `L` is the limiter's [store](tollway_limiter::store) (in memory unless
/// a fleet limiter is given).
pub struct ClientStackLayer<
    C: LimiterClock = QuantaClock,
    St: Store = MemoryStore,
    L: LimiterStore<C> = LocalLimits,
> {
    limiter: RateLimiter<C, L>,
    max_wait: Duration,
    retry: RetryLayer,
    breaker: Option<BreakerLayer>,
    budget: Option<BudgetLayer<St>>,
    cache: Option<CacheLayer>,
}

impl<C: LimiterClock, L: LimiterStore<C>> ClientStackLayer<C, MemoryStore, L> {
    /// A builder over `limiter`, with [`RetryPolicy::default`] and no cache, breaker or budget.
    pub fn builder(limiter: RateLimiter<C, L>) -> ClientStackBuilder<C, MemoryStore, L> {
        ClientStackBuilder {
            layer: Self {
                limiter,
                max_wait: DEFAULT_MAX_WAIT,
                retry: RetryLayer::new(RetryPolicy::default()),
                breaker: None,
                budget: None,
                cache: None,
            },
        }
    }
}

impl<C: LimiterClock, St: Store, L: LimiterStore<C>> ClientStackLayer<C, St, L> {
    /// The shared rate limiter (read it, or change its rate at runtime).
    pub const fn limiter(&self) -> &RateLimiter<C, L> {
        &self.limiter
    }

    /// The longest a caller waits for a rate permit.
    pub const fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        self.retry.policy()
    }

    /// A handle on the breaker, if the stack has one.
    pub fn breaker(&self) -> Option<BreakerHandle> {
        self.breaker.as_ref().map(BreakerLayer::handle)
    }

    /// The budget's ledger, if the stack has one.
    pub fn ledger(&self) -> Option<&Ledger<St>> {
        self.budget.as_ref().map(BudgetLayer::ledger)
    }

    /// The cache, if the stack has one.
    pub const fn cache(&self) -> Option<&CacheLayer> {
        self.cache.as_ref()
    }
}

impl<C: LimiterClock, St: Store, L: LimiterStore<C>> Clone for ClientStackLayer<C, St, L> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            max_wait: self.max_wait,
            retry: self.retry.clone(),
            breaker: self.breaker.clone(),
            budget: self.budget.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<C: LimiterClock + fmt::Debug, St: Store, L: LimiterStore<C>> fmt::Debug
    for ClientStackLayer<C, St, L>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStackLayer")
            .field("cache", &self.cache)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("budget", &self.budget)
            .field("limiter", &self.limiter)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl<S, C: LimiterClock, St: Store, L: LimiterStore<C>> Layer<S> for ClientStackLayer<C, St, L> {
    type Service = ClientStack<S, C, St, L>;

    fn layer(&self, inner: S) -> Self::Service {
        // Innermost, fed every response (429s and rate-limit headers pause every caller), and
        // never holding a caller past the stack's bound.
        let limited = AdaptiveLimiter::new(inner, self.limiter.clone()).max_wait(self.max_wait);
        let budgeted = match &self.budget {
            Some(budget) => Either::Left(budget.layer(limited)),
            None => Either::Right(limited),
        };
        let guarded = match &self.breaker {
            Some(breaker) => Either::Left(breaker.layer(budgeted)),
            None => Either::Right(budgeted),
        };
        let retried = self.retry.layer(guarded);
        let cached = match &self.cache {
            Some(cache) => Either::Left(cache.layer(retried)),
            None => Either::Right(Uncached::new(retried)),
        };
        ClientStack::from_parts(cached)
    }
}

/// Builds a [`ClientStackLayer`]; see [`ClientStackLayer::builder`]. The order of the calls
/// does not matter: the layers always go in the documented order.
pub struct ClientStackBuilder<
    C: LimiterClock = QuantaClock,
    St: Store = MemoryStore,
    L: LimiterStore<C> = LocalLimits,
> {
    layer: ClientStackLayer<C, St, L>,
}

impl<C: LimiterClock + fmt::Debug, St: Store, L: LimiterStore<C>> fmt::Debug
    for ClientStackBuilder<C, St, L>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientStackBuilder")
            .field(&self.layer)
            .finish()
    }
}

impl<C: LimiterClock, St: Store, L: LimiterStore<C>> ClientStackBuilder<C, St, L> {
    /// The longest a caller waits for a rate permit (default [`DEFAULT_MAX_WAIT`]), on top of
    /// any bound the limiter itself was built with. A longer wait, such as a pause the
    /// upstream ordered with `Retry-After: 120`, fails at once with
    /// [`RateLimited`](tollway_core::RateLimited) carrying the time left; a caller already
    /// queued when such a pause arrives fails at its turn.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.layer.max_wait = max_wait;
        self
    }

    /// Retries with `policy` (default: [`RetryPolicy::default`]). Use
    /// `RetryPolicy::builder().max_attempts(1)` for no retries.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.layer.retry = RetryLayer::new(policy);
        self
    }

    /// A circuit breaker between the retry layer and the budget.
    pub fn breaker(mut self, breaker: BreakerLayer) -> Self {
        self.layer.breaker = Some(breaker);
        self
    }

    /// A credit budget between the breaker and the limiter: every attempt reserves its cost
    /// before it waits for a rate permit, and is settled when its response arrives. Its ledger
    /// may live in any store (memory, a journal, Redis).
    pub fn budget<T: Store>(self, budget: BudgetLayer<T>) -> ClientStackBuilder<C, T, L> {
        let ClientStackLayer {
            limiter,
            max_wait,
            retry,
            breaker,
            cache,
            ..
        } = self.layer;
        ClientStackBuilder {
            layer: ClientStackLayer {
                limiter,
                max_wait,
                retry,
                breaker,
                budget: Some(budget),
                cache,
            },
        }
    }

    /// A response cache in front of everything.
    pub fn cache(mut self, cache: CacheLayer) -> Self {
        self.layer.cache = Some(cache);
        self
    }

    /// The layer.
    pub fn build(self) -> ClientStackLayer<C, St, L> {
        self.layer
    }
}
