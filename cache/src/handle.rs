//! [`CacheHandle`]: what an application does to the cache besides sending requests through it.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use http::Request;

use crate::layer::Shared;
use crate::store::RemoveIf;

/// A handle on a cache, from [`CacheLayer::handle`](crate::CacheLayer::handle) or
/// [`Cache::handle`](crate::Cache::handle). Clones, and every clone of the layer and its
/// services, share one cache.
///
/// Its main use is taking back an answer the application found wrong after it was stored (a
/// `200` with a truncated or malformed body, say), so the next request fetches it again rather
/// than being served the same broken answer until it expires:
///
/// ```
/// use std::convert::Infallible;
///
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tollway_cache::{CacheLayer, CacheStatus};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tollway_core::BoxError> {
/// let dir = tempfile::tempdir()?;
/// let layer = CacheLayer::builder(dir.path()).build()?;
/// let service = layer.layer(service_fn(|_: Request<()>| async {
///     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("{\"users\": [tru"))))
/// }));
/// let request = || Request::get("https://api.example/v2/users").body(()).unwrap();
/// let first = service.clone().oneshot(request()).await?;
/// // The application finds the body broken and takes it back.
/// assert!(layer.handle().invalidate(&request()).await?);
/// let again = service.clone().oneshot(request()).await?;
/// assert_eq!(CacheStatus::from_headers(again.headers()), Some(CacheStatus::Miss));
/// # drop(first);
/// # Ok(())
/// # }
/// ```
///
/// To keep such answers out in the first place, see
/// [`CacheBuilder::validate`](crate::CacheBuilder::validate).
#[derive(Clone)]
pub struct CacheHandle {
    shared: Arc<Shared>,
}

impl CacheHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Removes the entry `request` would be answered from (its method, URL, credential and
    /// vary headers make the key; the body is not read), from disk and from this process's
    /// memory. Returns whether there was one on disk. Other processes sharing the folder stop
    /// serving it from disk at once, and from their memory tiers at their next write.
    ///
    /// A GET and a HEAD of one URL are separate entries: invalidate each you use.
    ///
    /// # Errors
    ///
    /// An I/O error from removing the file or recording its removal.
    pub async fn invalidate<B>(&self, request: &Request<B>) -> io::Result<bool> {
        let key = self.shared.policy.key.key(
            self.shared.store.secret(),
            request.method(),
            request.uri(),
            request.headers(),
        );
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.store.remove(&key, RemoveIf::Always))
            .await
            .map_err(io::Error::other)?
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        self.shared.store.root()
    }

    /// How many entries the folder holds, as of this process's last write (or open).
    pub fn len(&self) -> usize {
        self.shared.store.len()
    }

    /// Whether the folder holds no entry, as of this process's last write (or open).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes the folder's entries take on disk, as of this process's last write (or open).
    pub fn total_bytes(&self) -> u64 {
        self.shared.store.total_bytes()
    }
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("dir", &self.dir())
            .finish_non_exhaustive()
    }
}
