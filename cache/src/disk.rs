//! The service's side of the disk store: small files read on the calling task, everything
//! else on tokio's blocking pool.
//!
//! Reading a small file that the page cache holds takes a few microseconds, less than handing
//! the read to the blocking pool and waking up again (which made a disk hit ten times slower
//! than the read itself); a large or cold file could hold up the task's worker thread, so
//! entries above [`INLINE_READ_MAX`] go to the pool. Writes (two fsyncs) and removals (the
//! folder lock) always do.

use std::sync::Arc;

use crate::entry::StoredResponse;
use crate::key::CacheKey;
use crate::layer::Shared;
use crate::status::record_evictions;
use crate::store::{KeyLock, LOCK_POLL, LOCK_WAIT_MAX, Lookup, Opened, RemoveIf};

/// The largest entry file read on the calling task.
pub(crate) const INLINE_READ_MAX: u64 = 128 * 1024;

/// What a read found, judged against the time.
#[derive(Debug)]
pub(crate) enum Found {
    /// Fresh: serve it.
    Fresh(Arc<StoredResponse>),
    /// Past its freshness (or refused fresh by the request) but kept: revalidate it, or serve
    /// it in place of a failure.
    Stale(Arc<StoredResponse>),
    /// Nothing worth having.
    Nothing,
}

/// A read begun on the calling task: small files are read whole, large ones only opened.
#[derive(Debug)]
pub(crate) enum Read {
    /// What the read found.
    Done(Lookup),
    /// A file too large to read here, open.
    Large(Opened),
}

/// Begins reading `key`'s entry on the calling task: opens the file (two system calls) and
/// reads it if it is at most [`INLINE_READ_MAX`] bytes.
pub(crate) fn read_here(shared: &Shared, key: &CacheKey) -> Read {
    let store = &shared.store;
    match store.open_entry(key) {
        Ok(None) => Read::Done(Lookup::Missing),
        Ok(Some(opened)) if opened.len() <= INLINE_READ_MAX => {
            Read::Done(store.read_open(key, opened))
        }
        Ok(Some(opened)) => Read::Large(opened),
        Err(error) => {
            tracing::warn!(error = %error, "cache file unreadable; treating as a miss");
            Read::Done(Lookup::Missing)
        }
    }
}

/// Finishes a read (on the blocking pool if the file is large) and judges what it found
/// against the time. Past what it is kept for, or corrupt, it is removed. With `fresh_ok`
/// false a fresh entry counts as stale.
pub(crate) async fn finish(
    shared: &Arc<Shared>,
    key: CacheKey,
    read: Read,
    fresh_ok: bool,
) -> Found {
    let read = match read {
        Read::Done(read) => read,
        Read::Large(opened) => {
            let shared = Arc::clone(shared);
            let read = tokio::task::spawn_blocking(move || shared.store.read_open(&key, opened));
            match read.await {
                Ok(read) => read,
                Err(error) => {
                    tracing::warn!(error = %error, "cache read task failed; treating as a miss");
                    return Found::Nothing;
                }
            }
        }
    };
    let now = shared.policy.now();
    match read {
        Lookup::Found(entry) if fresh_ok && entry.is_fresh(now) => Found::Fresh(entry),
        Lookup::Found(entry) if entry.is_kept(now) => Found::Stale(entry),
        Lookup::Found(_) => {
            remove(shared, key, RemoveIf::Expired(now)).await;
            Found::Nothing
        }
        Lookup::Missing => Found::Nothing,
        Lookup::Corrupt => {
            remove(shared, key, RemoveIf::Corrupt).await;
            Found::Nothing
        }
    }
}

/// Reads `key`'s entry and judges it (see [`finish`]).
pub(crate) async fn lookup(shared: &Arc<Shared>, key: CacheKey, fresh_ok: bool) -> Found {
    let read = read_here(shared, &key);
    finish(shared, key, read, fresh_ok).await
}

/// Removes `key`'s entry if `when` still holds; whether a file was removed.
pub(crate) async fn remove(shared: &Arc<Shared>, key: CacheKey, when: RemoveIf) -> bool {
    let shared = Arc::clone(shared);
    match tokio::task::spawn_blocking(move || shared.store.remove(&key, when)).await {
        Ok(Ok(removed)) => removed,
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "could not remove a cache entry");
            false
        }
        Err(error) => {
            tracing::warn!(error = %error, "cache removal task failed");
            false
        }
    }
}

/// Writes `entry` under `key`; a failure is logged (the response is served all the same).
pub(crate) async fn store(shared: &Arc<Shared>, key: CacheKey, entry: Arc<StoredResponse>) {
    let shared = Arc::clone(shared);
    match tokio::task::spawn_blocking(move || shared.store.write(&key, &entry)).await {
        Ok(Ok(evicted)) => record_evictions(evicted),
        Ok(Err(error)) => tracing::warn!(error = %error, "could not store a cache entry"),
        Err(error) => tracing::warn!(error = %error, "cache write task failed"),
    }
}

/// The outcome of taking the key's cross-process lock.
#[derive(Debug)]
pub(crate) enum CrossProcess {
    /// Ours to fetch, with the newest stale entry (`lock` is `None` after an I/O error or a
    /// wait past [`LOCK_WAIT_MAX`]).
    Locked {
        lock: Option<KeyLock>,
        stale: Option<Arc<StoredResponse>>,
    },
    /// Another process fetched it while we waited.
    Fetched(Arc<StoredResponse>),
}

/// Takes `key`'s lock file, waiting (polling for the entry) while another process holds it,
/// for [`LOCK_WAIT_MAX`] at most. Once it holds the lock it reads the entry again: the holder
/// before it may have written it just before letting go.
pub(crate) async fn cross_process(
    shared: &Arc<Shared>,
    key: CacheKey,
    mut stale: Option<Arc<StoredResponse>>,
) -> CrossProcess {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT_MAX;
    loop {
        match shared.store.try_lock(&key) {
            Ok(Some(lock)) => {
                return match lookup(shared, key, true).await {
                    Found::Fresh(entry) => CrossProcess::Fetched(entry),
                    Found::Stale(entry) => CrossProcess::Locked {
                        lock: Some(lock),
                        stale: Some(entry),
                    },
                    Found::Nothing => CrossProcess::Locked {
                        lock: Some(lock),
                        stale: None,
                    },
                };
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %error, "cache lock failed; fetching without it");
                return CrossProcess::Locked { lock: None, stale };
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("another process held a cache lock too long; fetching anyway");
            return CrossProcess::Locked { lock: None, stale };
        }
        tokio::time::sleep(LOCK_POLL).await;
        match lookup(shared, key, true).await {
            Found::Fresh(entry) => return CrossProcess::Fetched(entry),
            Found::Stale(entry) => stale = Some(entry),
            Found::Nothing => {}
        }
    }
}
