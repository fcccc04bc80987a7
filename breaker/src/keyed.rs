//! Keyed breakers: one breaker per upstream host (or per a key of your choosing), kept in a
//! bounded registry.
//!
//! The key is computed in `call` (`poll_ready` cannot see the request), so a keyed breaker
//! always drives the inner service's `poll_ready` and rejects in `call`, with a ready
//! [`CircuitOpen`](crate::CircuitOpen) error, without calling the inner service. Finding a
//! key's breaker takes a read lock on the registry; the breaker itself takes none.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use parking_lot::RwLock;
use tollway_core::{BoxError, Clock, TokioClock};
use tower::{Layer, Service};

use crate::circuit::{Circuit, Ticket};
use crate::config::BreakerConfig;
use crate::event::{Mode, State};
use crate::future::{Recorder, ResponseFuture};
use crate::handle::BreakerHandle;

/// Picks the breaker a request belongs to. `None` puts the request in the breaker keyed `""`.
///
/// Implemented by [`ByAuthority`] (the default) and by any
/// `Fn(&Request<B>) -> Option<String> + Clone + Send + Sync + 'static`.
pub trait BreakerKey<B>: Clone + Send + Sync + 'static {
    /// The key for `request`.
    fn key<'r>(&self, request: &'r Request<B>) -> Option<Cow<'r, str>>;
}

/// Keys by the request's authority (`host:port` of its URI), or its `Host` header when the URI
/// has none (server side).
#[derive(Debug, Clone, Copy, Default)]
pub struct ByAuthority;

impl<B> BreakerKey<B> for ByAuthority {
    fn key<'r>(&self, request: &'r Request<B>) -> Option<Cow<'r, str>> {
        if let Some(authority) = request.uri().authority() {
            return Some(Cow::Borrowed(authority.as_str()));
        }
        request
            .headers()
            .get(http::header::HOST)
            .and_then(|host| host.to_str().ok())
            .map(Cow::Borrowed)
    }
}

impl<B, F> BreakerKey<B> for F
where
    F: Fn(&Request<B>) -> Option<String> + Clone + Send + Sync + 'static,
{
    fn key<'r>(&self, request: &'r Request<B>) -> Option<Cow<'r, str>> {
        self(request).map(Cow::Owned)
    }
}

struct Registry<C> {
    breakers: RwLock<HashMap<Arc<str>, Arc<Circuit<C>>>>,
    config: BreakerConfig,
    clock: C,
    max_keys: usize,
}

impl<C> fmt::Debug for Registry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("keys", &self.breakers.read().len())
            .field("max_keys", &self.max_keys)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<C: Clock> Registry<C> {
    fn get(&self, key: &str) -> Arc<Circuit<C>> {
        if let Some(circuit) = self.breakers.read().get(key) {
            return Arc::clone(circuit);
        }
        let mut breakers = self.breakers.write();
        if let Some(circuit) = breakers.get(key) {
            return Arc::clone(circuit);
        }
        if breakers.len() >= self.max_keys {
            Self::evict_one(&mut breakers);
        }
        let name: Arc<str> = Arc::from(key);
        let circuit = Arc::new(Circuit::new(
            self.config.with_name(Arc::clone(&name)),
            self.clock.clone(),
        ));
        breakers.insert(name, Arc::clone(&circuit));
        circuit
    }

    /// Evicts closed, normal-mode breakers first, the longest idle of them; only when there
    /// is none, the longest idle of the rest (whose protection is then lost: logged).
    fn evict_one(breakers: &mut HashMap<Arc<str>, Arc<Circuit<C>>>) {
        let victim = breakers
            .iter()
            .max_by_key(|(_, c)| {
                let healthy = c.state() == State::Closed && c.mode() == Mode::Normal;
                (healthy, c.idle_secs())
            })
            .map(|(key, c)| (Arc::clone(key), c.state()));
        if let Some((key, state)) = victim {
            if state != State::Closed {
                tracing::warn!(breaker = %key, state = state.as_str(), "evicting a breaker that is not closed: registry full");
            }
            breakers.remove(&key);
        }
    }
}

/// Wraps services in a [`KeyedBreaker`]: one breaker per key, all built from one
/// [`BreakerConfig`] (each named by its key). Clones share the registry.
#[derive(Debug)]
pub struct KeyedBreakerLayer<K = ByAuthority, C = TokioClock> {
    registry: Arc<Registry<C>>,
    key: K,
}

impl<K: Clone, C> Clone for KeyedBreakerLayer<K, C> {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
            key: self.key.clone(),
        }
    }
}

impl KeyedBreakerLayer {
    /// One breaker per request authority, at most `max_keys` of them (at least 1), on tokio's
    /// clock.
    pub fn new(config: BreakerConfig, max_keys: usize) -> Self {
        Self::with_clock(config, max_keys, TokioClock)
    }
}

impl<C: Clock> KeyedBreakerLayer<ByAuthority, C> {
    /// One breaker per request authority, reading time from `clock`.
    pub fn with_clock(config: BreakerConfig, max_keys: usize, clock: C) -> Self {
        Self {
            registry: Arc::new(Registry {
                breakers: RwLock::new(HashMap::new()),
                config,
                clock,
                max_keys: max_keys.max(1),
            }),
            key: ByAuthority,
        }
    }
}

impl<K, C: Clock> KeyedBreakerLayer<K, C> {
    /// Keys requests with `key` instead (a closure `Fn(&Request<B>) -> Option<String>`, say).
    pub fn key_by<K2>(self, key: K2) -> KeyedBreakerLayer<K2, C> {
        KeyedBreakerLayer {
            registry: self.registry,
            key,
        }
    }

    /// A handle on the registry.
    pub fn handle(&self) -> KeyedBreakerHandle<C> {
        KeyedBreakerHandle {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<S, K: Clone, C: Clock> Layer<S> for KeyedBreakerLayer<K, C> {
    type Service = KeyedBreaker<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedBreaker {
            inner,
            registry: Arc::clone(&self.registry),
            key: self.key.clone(),
        }
    }
}

/// Reads and overrides the breakers of a [`KeyedBreakerLayer`].
#[derive(Debug)]
pub struct KeyedBreakerHandle<C = TokioClock> {
    registry: Arc<Registry<C>>,
}

impl<C> Clone for KeyedBreakerHandle<C> {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<C: Clock> KeyedBreakerHandle<C> {
    /// The breaker for `key`, if the registry holds one.
    pub fn get(&self, key: &str) -> Option<BreakerHandle<C>> {
        let breakers = self.registry.breakers.read();
        breakers
            .get(key)
            .map(|circuit| BreakerHandle::new(Arc::clone(circuit)))
    }

    /// The breaker for `key`, created if absent (to force it open before any traffic, say).
    pub fn get_or_create(&self, key: &str) -> BreakerHandle<C> {
        BreakerHandle::new(self.registry.get(key))
    }

    /// The keys the registry holds.
    pub fn keys(&self) -> Vec<Arc<str>> {
        self.registry.breakers.read().keys().cloned().collect()
    }

    /// How many breakers the registry holds.
    pub fn len(&self) -> usize {
        self.registry.breakers.read().len()
    }

    /// Whether the registry holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One circuit breaker per key around `S`. See the [module docs](self).
#[derive(Debug)]
pub struct KeyedBreaker<S, K = ByAuthority, C = TokioClock> {
    inner: S,
    registry: Arc<Registry<C>>,
    key: K,
}

impl<S: Clone, K: Clone, C> Clone for KeyedBreaker<S, K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            registry: Arc::clone(&self.registry),
            key: self.key.clone(),
        }
    }
}

impl<S, K, C> KeyedBreaker<S, K, C> {
    /// The inner service.
    pub const fn get_ref(&self) -> &S {
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

impl<S, K, C, ReqBody, ResBody> Service<Request<ReqBody>> for KeyedBreaker<S, K, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    K: BreakerKey<ReqBody>,
    C: Clock,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let circuit = {
            let key = self.key.key(&request);
            self.registry.get(key.as_deref().unwrap_or(""))
        };
        circuit.touch();
        match circuit.admit() {
            Err(open) => ResponseFuture::rejected(open),
            Ok(Ticket::Untracked) => ResponseFuture::called(self.inner.call(request), None),
            Ok(ticket) => {
                let recorder = Recorder::new(circuit, ticket).started();
                ResponseFuture::called(self.inner.call(request), Some(recorder))
            }
        }
    }
}
