//! [`CacheLayer`] and its [`CacheBuilder`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, Method};
use tollway_core::{Classifier, Classify, Clock, MonotonicClock};
use tower::Layer;

use crate::coalesce::Flights;
use crate::key::KeyParts;
use crate::policy::Policy;
use crate::service::Cache;
use crate::store::DiskStore;

/// The state every clone of a layer and of its services shares: one store, one index, one set
/// of flights.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) policy: Policy,
    pub(crate) store: DiskStore,
    pub(crate) flights: Arc<Flights>,
}

/// Wraps services in a [`Cache`]; see the [crate docs](crate) for an example.
///
/// Clones share one cache: one folder, one index, one set of requests in flight.
#[derive(Debug, Clone)]
pub struct CacheLayer {
    shared: Arc<Shared>,
}

impl CacheLayer {
    /// Starts configuring a cache kept in the folder `dir` (created if missing, mode 0700).
    pub fn builder(dir: impl Into<PathBuf>) -> CacheBuilder {
        CacheBuilder::new(dir.into())
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        self.shared.store.root()
    }

    /// How many entries the cache holds (as far as this process knows: files another process
    /// writes join the index when first read).
    pub fn len(&self) -> usize {
        self.shared.store.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes its entries take on disk.
    pub fn total_bytes(&self) -> u64 {
        self.shared.store.total_bytes()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Cache<S> {
        Cache::from_shared(inner, Arc::clone(&self.shared))
    }
}

/// Configures a [`CacheLayer`]. Every setting has a default; see each method.
#[derive(Debug)]
pub struct CacheBuilder {
    dir: PathBuf,
    max_bytes: u64,
    memory_bytes: u64,
    policy: Policy,
}

impl CacheBuilder {
    fn new(dir: PathBuf) -> Self {
        let clock = MonotonicClock;
        Self {
            dir,
            max_bytes: 256 * 1024 * 1024,
            memory_bytes: 32 * 1024 * 1024,
            policy: Policy {
                methods: vec![Method::GET, Method::HEAD],
                keyed_methods: Vec::new(),
                classifier: Arc::new(Classifier::default()),
                default_ttl: Duration::from_secs(300),
                routes: Vec::new(),
                ttl_fn: None,
                not_found_ttl: None,
                max_stale: Duration::ZERO,
                respect_no_store: true,
                max_entry_bytes: 8 * 1024 * 1024,
                cross_process: true,
                key: KeyParts {
                    vary: Vec::new(),
                    credentials: vec![
                        http::header::AUTHORIZATION,
                        HeaderName::from_static("x-access-key"),
                        HeaderName::from_static("x-api-key"),
                    ],
                },
                clock: Arc::new(move || clock.system_now()),
            },
        }
    }

    /// The most bytes the cache's files may take together (default 256 MiB). Past it, the least
    /// recently used entries are removed, a few at a time, as new ones are written.
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Whether processes sharing the folder coalesce their misses (default `true`): the first
    /// to miss creates `<key>.lock` next to the entry and fetches; the others poll (every
    /// 25 ms) until the entry appears or the lock goes. A lock whose holder died is broken; a
    /// waiter fetches anyway after 30 s. Each miss costs one extra file create and remove.
    #[must_use]
    pub fn cross_process_coalescing(mut self, yes: bool) -> Self {
        self.policy.cross_process = yes;
        self
    }

    /// How many bytes of recently used entries to also keep in memory (default 32 MiB; zero
    /// turns the memory tier off). A hit from memory skips the file read; it never serves
    /// anything the disk would not, since entries leave memory when they leave the disk.
    /// Entries larger than an eighth of this are not held in memory.
    #[must_use]
    pub fn memory_bytes(mut self, memory_bytes: u64) -> Self {
        self.memory_bytes = memory_bytes;
        self
    }

    /// The largest body stored (default 8 MiB). A larger response streams through to the
    /// caller uncached.
    #[must_use]
    pub fn max_entry_bytes(mut self, max_entry_bytes: usize) -> Self {
        self.policy.max_entry_bytes = max_entry_bytes;
        self
    }

    /// How long a successful response stays fresh when no route rule matches (default five
    /// minutes). Zero stores nothing by default (see [`route_ttl`](Self::route_ttl)).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.policy.default_ttl = ttl;
        self
    }

    /// How long successful responses for paths starting with `path_prefix` stay fresh. The
    /// longest matching prefix wins. Zero means "never store these": such requests bypass the
    /// cache entirely (no lookup, no coalescing), unless [`cache_not_found`](Self::cache_not_found)
    /// is set, in which case only their 404s are stored.
    #[must_use]
    pub fn route_ttl(mut self, path_prefix: impl Into<String>, ttl: Duration) -> Self {
        self.policy.routes.push((path_prefix.into(), ttl));
        self
    }

    /// A closure that picks the lifetime for a request, consulted before the route rules;
    /// `None` falls through to them.
    #[must_use]
    pub fn ttl_fn(
        mut self,
        ttl_fn: impl Fn(&Parts) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.policy.ttl_fn = Some(Arc::new(ttl_fn));
        self
    }

    /// Also stores `404 Not Found` answers, for `ttl` (default: they are not stored).
    #[must_use]
    pub fn cache_not_found(mut self, ttl: Duration) -> Self {
        self.policy.not_found_ttl = Some(ttl);
        self
    }

    /// Keeps expired entries for `max_stale` more, to serve (marked `stale`) when the upstream
    /// fails: a 5xx, a transport error or timeout, a 429 or 402, or a refusal by a tollway
    /// limiter, breaker or budget below this layer. Default zero: off.
    #[must_use]
    pub fn stale_if_error(mut self, max_stale: Duration) -> Self {
        self.policy.max_stale = max_stale;
        self
    }

    /// Whether `Cache-Control: no-store` on a response keeps it out of the cache (default
    /// `true`). Some APIs send it on everything; `false` stores such responses anyway.
    #[must_use]
    pub fn respect_no_store(mut self, yes: bool) -> Self {
        self.policy.respect_no_store = yes;
        self
    }

    /// Also caches requests with `method` when they carry an `Idempotency-Key`, which then
    /// becomes part of the key and stands for the request body (the body itself is not
    /// hashed: the key promises that one key means one request). Only GET and HEAD are cached
    /// by default.
    #[must_use]
    pub fn cache_method_with_idempotency_key(mut self, method: Method) -> Self {
        self.policy.keyed_methods.push(method);
        self
    }

    /// Which request headers identify the caller's credentials (default `Authorization`,
    /// `x-access-key`, `X-Api-Key`). Their values go into the key through the keyed hash only,
    /// so two credentials never share an entry and no credential reaches the disk.
    #[must_use]
    pub fn credential_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.policy.key.credentials = names.into_iter().collect();
        self
    }

    /// A request header whose value selects a different response (`Accept`, say), to add to
    /// the key.
    #[must_use]
    pub fn vary_header(mut self, name: HeaderName) -> Self {
        self.policy.key.vary.push(name);
        self
    }

    /// How responses and errors are classified (default [`Classifier::default`]): which
    /// responses are successes worth storing, and which failures a stale entry may cover.
    #[must_use]
    pub fn classifier(mut self, classifier: impl Classify) -> Self {
        self.policy.classifier = Arc::new(classifier);
        self
    }

    /// The clock whose wall-clock time (`Clock::system_now`) dates entries (default the
    /// system's). Tests use [`FakeClock`](tollway_core::FakeClock).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.policy.clock = Arc::new(move || clock.system_now());
        self
    }

    /// Opens the folder (creating it and its secret if needed), indexes what is there, and
    /// returns the layer.
    ///
    /// # Errors
    ///
    /// An I/O error if the folder cannot be created or read, or if its secret file is not a
    /// 32-byte secret this process can read.
    pub fn build(self) -> io::Result<CacheLayer> {
        let store = DiskStore::open(&self.dir, self.max_bytes, self.memory_bytes)?;
        Ok(CacheLayer {
            shared: Arc::new(Shared {
                policy: self.policy,
                store,
                flights: Arc::default(),
            }),
        })
    }
}
