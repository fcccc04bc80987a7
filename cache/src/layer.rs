//! [`CacheLayer`]: the cache, ready to wrap services.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tower::Layer;

use crate::builder::CacheBuilder;
use crate::coalesce::Flights;
use crate::handle::CacheHandle;
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
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// A handle on this cache, shared with every clone of the layer and its services: to
    /// invalidate entries the application found wrong (see [`CacheHandle`]).
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(Arc::clone(&self.shared))
    }

    /// Starts configuring a cache kept in the folder `dir` (created if missing, mode 0700).
    pub fn builder(dir: impl Into<PathBuf>) -> CacheBuilder {
        CacheBuilder::new(dir.into())
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        self.shared.store.root()
    }

    /// How many entries the folder holds, as of this process's last write (or open): the
    /// folder's journal tells each process what the others wrote.
    pub fn len(&self) -> usize {
        self.shared.store.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes the folder's entries take on disk, as of this process's last write (or
    /// open).
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
