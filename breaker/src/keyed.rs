//! Keyed breakers: one breaker per key in a bounded registry (see [`KeyedBreakerLayer`]).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use parking_lot::RwLock;
use tollway_core::headers::request_authority;
use tollway_core::{BoxError, Clock, SharedClock};
use tower::{Layer, Service};

use crate::circuit::{Circuit, Ticket};
use crate::config::BreakerConfig;
use crate::event::{Mode, State};
use crate::future::{Recorder, Report, ResponseFuture};
use crate::handle::BreakerHandle;

/// How many registry entries a new key looks at for one to replace.
const EVICTION_CANDIDATES: usize = 8;

/// Picks the breaker a request belongs to. `None` puts the request in the breaker keyed `""`.
///
/// Implemented by [`ByAuthority`] (the default) and by any
/// `Fn(&Request<B>) -> Option<String> + Clone + Send + Sync + 'static`.
pub trait BreakerKey<B>: Clone + Send + Sync + 'static {
    /// The key for `request`.
    fn key<'r>(&self, request: &'r Request<B>) -> Option<Cow<'r, str>>;
}

/// Keys by the request's authority, lowercased: the URI's (`host:port`), or the `Host` header
/// when the URI has none (server side); see
/// [`request_authority`](tollway_core::headers::request_authority).
#[derive(Debug, Clone, Copy, Default)]
pub struct ByAuthority;

impl<B> BreakerKey<B> for ByAuthority {
    fn key<'r>(&self, request: &'r Request<B>) -> Option<Cow<'r, str>> {
        request_authority(request)
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

struct Registry {
    entries: RwLock<Entries>,
    config: BreakerConfig,
    clock: SharedClock,
    max_keys: usize,
}

#[derive(Default)]
struct Entries {
    breakers: HashMap<Arc<str>, Arc<Circuit>>,
    /// The keys, oldest first: where a new key looks for one to replace.
    order: VecDeque<Arc<str>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("keys", &self.entries.read().breakers.len())
            .field("max_keys", &self.max_keys)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The breaker for `key`, created if there is room; `None` when the registry is full of
    /// breakers that must not be evicted.
    fn get(&self, key: &str) -> Option<Arc<Circuit>> {
        if let Some(circuit) = self.entries.read().breakers.get(key) {
            return Some(Arc::clone(circuit));
        }
        let mut entries = self.entries.write();
        if let Some(circuit) = entries.breakers.get(key) {
            return Some(Arc::clone(circuit));
        }
        if entries.breakers.len() >= self.max_keys && !entries.evict_one() {
            tracing::debug!(
                max_keys = self.max_keys,
                "breaker registry full of busy or open breakers: request goes through unkeyed"
            );
            return None;
        }
        let name: Arc<str> = Arc::from(key);
        let circuit = Circuit::new(self.config.with_name(Arc::clone(&name)), self.clock.clone());
        entries.order.push_back(Arc::clone(&name));
        entries.breakers.insert(name, Arc::clone(&circuit));
        Some(circuit)
    }
}

impl Entries {
    /// Evicts a closed, normal-mode breaker idle for a second or more among the oldest few
    /// keys; the others go to the back. Never an open, half-open or overridden breaker.
    fn evict_one(&mut self) -> bool {
        for _ in 0..EVICTION_CANDIDATES.min(self.order.len()) {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            let Some(circuit) = self.breakers.get(&key) else {
                continue;
            };
            let evictable = circuit.state() == State::Closed
                && circuit.mode() == Mode::Normal
                && circuit.idle_secs() >= 1;
            if evictable {
                self.breakers.remove(&key);
                return true;
            }
            self.order.push_back(key);
        }
        false
    }
}

/// Wraps services in a [`KeyedBreaker`]: one breaker per key, all built from one
/// [`BreakerConfig`] (each named by its key). Clones share the registry.
///
///
/// The key is computed in `call` (`poll_ready` cannot see the request), so a keyed breaker
/// always drives the inner service's `poll_ready` and rejects in `call`, with a ready
/// [`CircuitOpen`](crate::CircuitOpen) error, without calling the inner service. Finding a
/// key's breaker takes a read lock on the registry; the breaker itself takes none.
///
/// The registry never holds more than its `max_keys` breakers, and a new key never costs an
/// open breaker its place: on the server side keys come from the `Host` header, so a client
/// sending many hosts must not be able to flush the breakers that protect an upstream. When the
/// registry is full, a new key takes the place of a closed breaker that has been idle for a
/// second or more (a few candidates are looked at, oldest first, so the work per request is
/// bounded); if there is none, the request goes through without a breaker and the key is not
/// remembered.
#[derive(Debug)]
pub struct KeyedBreakerLayer<K = ByAuthority> {
    registry: Arc<Registry>,
    key: K,
}

impl<K: Clone> Clone for KeyedBreakerLayer<K> {
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
        Self::with_clock(config, max_keys, SharedClock::default())
    }

    /// One breaker per request authority, reading time from `clock`.
    pub fn with_clock(config: BreakerConfig, max_keys: usize, clock: impl Clock) -> Self {
        Self {
            registry: Arc::new(Registry {
                entries: RwLock::new(Entries::default()),
                config,
                clock: SharedClock::new(clock),
                max_keys: max_keys.max(1),
            }),
            key: ByAuthority,
        }
    }
}

impl<K> KeyedBreakerLayer<K> {
    /// Keys requests with `key` instead (a closure `Fn(&Request<B>) -> Option<String>`, say).
    pub fn key_by<K2>(self, key: K2) -> KeyedBreakerLayer<K2> {
        KeyedBreakerLayer {
            registry: self.registry,
            key,
        }
    }

    /// A handle on the registry.
    pub fn handle(&self) -> KeyedBreakerHandle {
        KeyedBreakerHandle {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<S, K: Clone> Layer<S> for KeyedBreakerLayer<K> {
    type Service = KeyedBreaker<S, K>;

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
pub struct KeyedBreakerHandle {
    registry: Arc<Registry>,
}

impl Clone for KeyedBreakerHandle {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl KeyedBreakerHandle {
    /// The breaker for `key`, if the registry holds one.
    pub fn get(&self, key: &str) -> Option<BreakerHandle> {
        let entries = self.registry.entries.read();
        entries
            .breakers
            .get(key)
            .map(|circuit| BreakerHandle::new(Arc::clone(circuit)))
    }

    /// The breaker for `key`, created if absent (to force it open before any traffic, say);
    /// `None` when the registry is full and none of its breakers may be replaced (see
    /// [`KeyedBreakerLayer`]).
    pub fn get_or_create(&self, key: &str) -> Option<BreakerHandle> {
        self.registry.get(key).map(BreakerHandle::new)
    }

    /// The keys the registry holds.
    pub fn keys(&self) -> Vec<Arc<str>> {
        self.registry
            .entries
            .read()
            .breakers
            .keys()
            .cloned()
            .collect()
    }

    /// How many breakers the registry holds.
    pub fn len(&self) -> usize {
        self.registry.entries.read().breakers.len()
    }

    /// Whether the registry holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One circuit breaker per key around `S`. See [`KeyedBreakerLayer`].
#[derive(Debug)]
pub struct KeyedBreaker<S, K = ByAuthority> {
    inner: S,
    registry: Arc<Registry>,
    key: K,
}

impl<S: Clone, K: Clone> Clone for KeyedBreaker<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            registry: Arc::clone(&self.registry),
            key: self.key.clone(),
        }
    }
}

impl<S, K> KeyedBreaker<S, K> {
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

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for KeyedBreaker<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    K: BreakerKey<ReqBody>,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let circuit = {
            let key = self.key.key(&request);
            self.registry.get(key.as_deref().unwrap_or(""))
        };
        let Some(circuit) = circuit else {
            return ResponseFuture::called(self.inner.call(request), None);
        };
        circuit.touch();
        match circuit.admit() {
            Err(open) => ResponseFuture::rejected(open),
            Ok(Ticket::Untracked) => ResponseFuture::called(self.inner.call(request), None),
            Ok(ticket) => {
                let recorder = Recorder::new(circuit, ticket).started();
                ResponseFuture::called(self.inner.call(request), Some(Report::Full(recorder)))
            }
        }
    }
}
