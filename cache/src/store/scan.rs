//! Reading the folder when a cache opens: the entries there, and the leftovers of crashes.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tollway_core::durable;

use super::lock;
use crate::key::CacheKey;

/// Temporary files older than this are leftovers of a crash (a live writer finishes in far
/// less), and are removed.
const STALE_TMP_AGE: Duration = Duration::from_secs(600);

/// An entry file found in the folder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Found {
    pub(crate) modified: SystemTime,
    pub(crate) key: CacheKey,
    pub(crate) size: u64,
}

/// Whether `name` is a shard folder's (two lowercase hex digits).
fn is_shard(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lists the entry files under `root`, least recently modified first. On the way it removes
/// temporary files a crashed writer left (older than ten minutes: entries in the shard
/// folders, the journal and secret in the root) and the lock files of holders that died
/// before removing them.
pub(crate) fn scan(root: &Path) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for shard in fs::read_dir(root)? {
        let shard = shard?;
        let is_dir = shard.file_type()?.is_dir();
        let name = shard.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_dir && durable::is_temp_name(name) {
            remove_if_old(&shard.path());
        }
        if !is_dir || !is_shard(name) {
            continue;
        }
        for file in fs::read_dir(shard.path())? {
            let file = file?;
            let name = file.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(key) = CacheKey::from_hex(name) {
                let meta = match file.metadata() {
                    Ok(meta) => meta,
                    // Removed by another process since the listing.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                found.push(Found {
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    key,
                    size: meta.len(),
                });
            } else if durable::is_temp_name(name) || name.starts_with(".tmp-") {
                remove_if_old(&file.path());
            } else if name.ends_with(".lock")
                && let Err(e) = lock::remove_if_free(&file.path())
            {
                tracing::debug!(error = %e, "could not sweep a cache lock file");
            }
        }
    }
    found.sort_by_key(|f| f.modified);
    Ok(found)
}

/// Removes the temporary file at `path` if it is older than [`STALE_TMP_AGE`].
fn remove_if_old(path: &Path) {
    let old = fs::metadata(path)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age > STALE_TMP_AGE);
    if old {
        let _ = fs::remove_file(path);
    }
}
