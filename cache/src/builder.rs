//! [`CacheBuilder`]: every setting of a cache, each with a default.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, Method, response};
use tollway_core::{Classifier, Classify, Clock, SharedClock};

use crate::coalesce::Flights;
use crate::freshness::Freshness;
use crate::key::KeyParts;
use crate::layer::{CacheLayer, Shared};
use crate::policy::Policy;
use crate::store::DiskStore;

/// Configures a [`CacheLayer`]. Every setting has a default; see each method.
#[derive(Debug)]
pub struct CacheBuilder {
    dir: PathBuf,
    max_bytes: u64,
    memory_bytes: u64,
    policy: Policy,
}

impl CacheBuilder {
    pub(crate) fn new(dir: PathBuf) -> Self {
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
                revalidate_for: Duration::from_secs(7 * 24 * 3600),
                respect_no_store: true,
                freshness: Freshness::Configured,
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
                validate: None,
                clock: SharedClock::default(),
            },
        }
    }

    /// The most bytes the cache's entry files may take together (default 256 MiB), counted for
    /// the folder: processes sharing it share the cap (the folder's journal tells each what
    /// the others wrote). Before each write, the least recently used entries are removed,
    /// folder-wide, until the new one fits. The journal, lock files and secret are not
    /// counted. Processes configured with different caps each keep to their own when they
    /// write.
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Whether processes sharing the folder coalesce their misses (default `true`): the first
    /// to miss locks `<key>.lock` next to the entry (an advisory `flock`, which the kernel
    /// releases if the holder dies, `kill -9` included) and fetches; the others poll (every
    /// 25 ms) until the entry appears or the lock is free, and read the entry again once they
    /// hold it. A waiter fetches anyway after 30 s. Each miss costs one extra file create,
    /// lock and remove.
    #[must_use]
    pub fn cross_process_coalescing(mut self, yes: bool) -> Self {
        self.policy.cross_process = yes;
        self
    }

    /// How many bytes of recently used entries to also keep in memory (default 32 MiB; zero
    /// turns the memory tier off). A hit from memory skips the file read. Entries leave memory
    /// when this process removes or replaces them on disk, and when it learns (at its next
    /// write) that another process did. Entries larger than an eighth of this are not held in
    /// memory.
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

    /// How long past its freshness an entry with a validator (`ETag` or `Last-Modified`) is
    /// kept to be revalidated (default seven days; zero: not kept for that). A GET for a
    /// stale entry then sends a conditional request (`If-None-Match`, `If-Modified-Since`);
    /// a `304 Not Modified` renews the entry without downloading the body again (and, where
    /// an API charges only for `200`s, without paying), served marked `revalidated`. Any
    /// other answer is handled as for a miss. Entries without a validator are removed once
    /// past their freshness and [`stale_if_error`](Self::stale_if_error) window.
    #[must_use]
    pub fn revalidate(mut self, keep_for: Duration) -> Self {
        self.policy.revalidate_for = keep_for;
        self
    }

    /// Where lifetimes come from (default [`Freshness::Configured`]: the builder's rules
    /// alone). [`Freshness::HttpPrivate`] and [`Freshness::HttpShared`] honour the response's
    /// `Cache-Control` (`max-age`, `no-cache`, `private`, `must-revalidate`, `s-maxage`) and
    /// `Expires`, as RFC 9111 reads them (through the `http-cache-semantics` crate); the
    /// builder's rules then give the lifetime of responses that state none.
    #[must_use]
    pub fn freshness(mut self, freshness: Freshness) -> Self {
        self.policy.freshness = freshness;
        self
    }

    /// A check every response must pass to be stored: `check(head, body)` sees the whole
    /// body, after the status and lifetime rules said "store it". A response it rejects (a
    /// `200` with malformed JSON, say) is still returned to its caller, marked `miss`, but not
    /// stored and not shared: a caller waiting for the same key takes the next turn upstream,
    /// so one broken answer never becomes every caller's, nor a permanent one. It runs again
    /// when a `304` renews an entry.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollway_cache::CacheLayer;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let cache = CacheLayer::builder(dir.path())
    ///     .ttl(Duration::from_secs(7 * 24 * 3600))
    ///     // Store only what parses: a truncated page is fetched again next time.
    ///     .validate(|_head, body| body.starts_with(b"{") && body.ends_with(b"}"))
    ///     .build()?;
    /// # drop(cache);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn validate(
        mut self,
        check: impl Fn(&response::Parts, &[u8]) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.policy.validate = Some(Arc::new(check));
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

    /// The clock whose wall-clock time (`Clock::system_now`) dates entries (default
    /// [`SharedClock::default`], the system's). Tests use
    /// [`FakeClock`](tollway_core::FakeClock).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.policy.clock = SharedClock::new(clock);
        self
    }

    /// Opens the folder (creating it and its secret if needed), indexes what is there (evicting
    /// down to the cap), rewrites the folder's journal, and returns the layer.
    ///
    /// # Errors
    ///
    /// An I/O error if the folder cannot be created, read or locked, or if its secret file is
    /// not a 32-byte secret this process can read.
    pub fn build(self) -> io::Result<CacheLayer> {
        let store = DiskStore::open(&self.dir, self.max_bytes, self.memory_bytes)?;
        Ok(CacheLayer::from_shared(Arc::new(Shared {
            policy: self.policy,
            store,
            flights: Arc::<Flights>::default(),
        })))
    }
}
