//! The disk store: one file per entry under `<root>/<first two hex digits>/<key in hex>`.
//!
//! Writes are atomic and durable: the entry goes to a temporary file in the same folder
//! (created with mode 0600), is fsynced, renamed over the final name, and the folder is fsynced,
//! so after a crash a name holds either the previous complete entry or the new complete entry.
//! Reads verify the checksum; a file that fails is removed and reported as a miss. Every call
//! here blocks: the service runs them on tokio's blocking pool.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use rand::RngCore;

use crate::entry::{self, StoredResponse};
use crate::index::Index;
use crate::key::CacheKey;
use crate::memory::MemoryTier;

const SECRET_FILE: &str = "secret";
const TMP_PREFIX: &str = ".tmp-";
/// Temporary files older than this at open are leftovers of a crash (a live writer finishes in
/// far less), and are removed.
const STALE_TMP_AGE: Duration = Duration::from_secs(600);

/// What a read found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A verified entry.
    Found(Arc<StoredResponse>),
    /// Nothing under that key.
    Missing,
    /// A file that failed verification; it has been removed.
    Corrupt,
}

/// The files of one cache folder and their index.
#[derive(Debug)]
pub(crate) struct DiskStore {
    root: PathBuf,
    secret: [u8; 32],
    max_bytes: u64,
    index: Mutex<Index>,
    memory: MemoryTier,
    tmp_counter: AtomicU64,
}

impl DiskStore {
    /// Opens (creating if needed) the cache folder at `root`, loads or creates its secret, and
    /// indexes the entries already there, oldest first by modification time.
    pub(crate) fn open(root: &Path, max_bytes: u64, memory_bytes: u64) -> io::Result<Self> {
        DirBuilder::new().recursive(true).mode(0o700).create(root)?;
        let secret = load_or_create_secret(root)?;
        let mut found = Vec::new();
        for shard in fs::read_dir(root)? {
            let shard = shard?;
            let name = shard.file_name();
            let is_shard = name.len() == 2
                && name
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_hexdigit()));
            if !is_shard || !shard.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(shard.path())? {
                let file = file?;
                let meta = file.metadata()?;
                let name = file.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(TMP_PREFIX) {
                    let old = meta
                        .modified()
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > STALE_TMP_AGE);
                    if old {
                        let _ = fs::remove_file(file.path());
                    }
                    continue;
                }
                if let Some(key) = CacheKey::from_hex(name) {
                    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    found.push((modified, key, meta.len()));
                }
            }
        }
        found.sort_by_key(|(modified, ..)| *modified);
        let mut index = Index::default();
        for (_, key, size) in found {
            index.touch(key, size);
        }
        Ok(Self {
            root: root.to_owned(),
            secret,
            max_bytes,
            index: Mutex::new(index),
            memory: MemoryTier::new(memory_bytes),
            tmp_counter: AtomicU64::new(0),
        })
    }

    /// The secret cache keys are hashed with.
    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The folder.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Total bytes of the indexed entries.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.index.lock().total()
    }

    /// Number of indexed entries.
    pub(crate) fn len(&self) -> usize {
        self.index.lock().len()
    }

    fn shard(&self, key: &CacheKey) -> (PathBuf, String) {
        let hex = key.hex();
        (self.root.join(&hex[..2]), hex)
    }

    /// `key`'s entry if the memory tier holds it (marked as used in both tiers). Never blocks
    /// on I/O.
    pub(crate) fn read_memory(&self, key: &CacheKey) -> Option<Arc<StoredResponse>> {
        let entry = self.memory.get(key)?;
        self.index.lock().touch_existing(key);
        Some(entry)
    }

    /// Tries to take the cross-process lock for `key`.
    pub(crate) fn try_lock(&self, key: &CacheKey) -> io::Result<crate::lock::TryLock> {
        let (dir, name) = self.shard(key);
        let path = dir.join(format!("{name}.lock"));
        crate::lock::try_lock(&dir, path)
    }

    /// Reads and verifies `key`'s entry. A corrupt file is removed.
    pub(crate) fn read(&self, key: &CacheKey) -> Lookup {
        let (dir, name) = self.shard(key);
        let path = dir.join(name);
        let bytes = match read_file(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.memory.remove(key);
                self.index.lock().remove(key);
                return Lookup::Missing;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cache file unreadable");
                return Lookup::Missing;
            }
        };
        let size = bytes.len() as u64;
        match entry::decode(key, &Bytes::from(bytes)) {
            Ok(found) => {
                // Files written by another process join the index on first use.
                self.index.lock().touch(*key, size);
                let found = Arc::new(found);
                self.memory.insert(*key, Arc::clone(&found));
                Lookup::Found(found)
            }
            Err(corrupt) => {
                tracing::warn!(
                    path = %path.display(),
                    reason = corrupt.0,
                    "corrupt cache file removed"
                );
                self.remove(key);
                Lookup::Corrupt
            }
        }
    }

    /// Writes `entry` under `key` atomically and durably, then evicts least recently used
    /// entries until the total is under the cap. Returns how many were evicted. An entry larger
    /// than the whole cap is not written.
    pub(crate) fn write(&self, key: &CacheKey, entry: &Arc<StoredResponse>) -> io::Result<u64> {
        let bytes = entry::encode(key, entry);
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Ok(0);
        }
        let (dir, name) = self.shard(key);
        let created_shard = match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        };
        if created_shard {
            sync_dir(&self.root)?;
        }
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{name}-{}-{}",
            std::process::id(),
            self.tmp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let result = write_new_file(&tmp, &bytes)
            .and_then(|()| fs::rename(&tmp, dir.join(&name)))
            .and_then(|()| sync_dir(&dir));
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.memory.insert(*key, Arc::clone(entry));
        let mut victims = Vec::new();
        {
            let mut index = self.index.lock();
            index.touch(*key, size);
            while let Some(victim) = index.pop_victim(self.max_bytes) {
                victims.push(victim);
            }
        }
        for victim in &victims {
            self.memory.remove(victim);
            let (dir, name) = self.shard(victim);
            match fs::remove_file(dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "could not remove evicted cache file"),
            }
        }
        Ok(victims.len() as u64)
    }

    /// Removes `key`'s entry, if any.
    pub(crate) fn remove(&self, key: &CacheKey) {
        let (dir, name) = self.shard(key);
        match fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "could not remove cache file"),
        }
        self.memory.remove(key);
        self.index.lock().remove(key);
    }
}

fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0).saturating_add(1));
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads the folder's secret, creating it (32 random bytes, mode 0600) if it is missing. Two
/// processes opening a new folder at once agree on one secret: each writes its own candidate
/// and hard-links it into place, which fails if the other was first.
fn load_or_create_secret(root: &Path) -> io::Result<[u8; 32]> {
    let path = root.join(SECRET_FILE);
    if !path.exists() {
        let mut candidate = [0u8; 32];
        rand::rng().fill_bytes(&mut candidate);
        let tmp = root.join(format!("{TMP_PREFIX}secret-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        write_new_file(&tmp, &candidate)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_dir(root)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let bytes = fs::read(&path)?;
    bytes.try_into().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a 32-byte cache secret", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use http::{HeaderMap, StatusCode};

    use super::*;

    fn entry(body: &'static [u8]) -> Arc<StoredResponse> {
        let now = SystemTime::now();
        Arc::new(StoredResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body),
            stored_at: now,
            expires_at: now + Duration::from_secs(60),
            stale_until: now + Duration::from_secs(60),
        })
    }

    fn k(n: u8) -> CacheKey {
        CacheKey::from_bytes([n; 32])
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn write_read_and_owner_only_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
        store.write(&k(0xab), &entry(b"hello")).unwrap();
        let Lookup::Found(found) = store.read(&k(0xab)) else {
            panic!("expected the entry")
        };
        assert_eq!(found.body, Bytes::from_static(b"hello"));
        let file = dir.path().join("ab").join(k(0xab).hex());
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir.path().join("secret")), 0o600);
        assert_eq!(mode(&dir.path().join("ab")), 0o700);
        assert!(matches!(store.read(&k(1)), Lookup::Missing));
    }

    #[test]
    fn secret_persists_and_index_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let first = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
        first.write(&k(1), &entry(b"one")).unwrap();
        first.write(&k(2), &entry(b"two")).unwrap();
        let second = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
        assert_eq!(first.secret(), second.secret());
        assert_eq!(second.len(), 2);
        assert_eq!(second.total_bytes(), first.total_bytes());
        fs::write(dir.path().join("secret"), b"short").unwrap();
        assert_eq!(
            DiskStore::open(dir.path(), 1, 0).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn truncated_and_garbage_files_are_misses_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
        store
            .write(&k(0xcd), &entry(b"a body of some length"))
            .unwrap();
        let file = dir.path().join("cd").join(k(0xcd).hex());
        let full = fs::read(&file).unwrap();
        fs::write(&file, &full[..full.len() / 2]).unwrap();
        assert!(matches!(store.read(&k(0xcd)), Lookup::Corrupt));
        assert!(!file.exists());
        assert_eq!(store.len(), 0);
        fs::write(&file, b"garbage").unwrap();
        assert!(matches!(store.read(&k(0xcd)), Lookup::Corrupt));
        assert!(!file.exists());
        fs::write(&file, b"").unwrap();
        assert!(matches!(store.read(&k(0xcd)), Lookup::Corrupt));
    }

    #[test]
    fn eviction_keeps_total_under_cap_dropping_least_recent() {
        let dir = tempfile::tempdir().unwrap();
        let one = entry::encode(&k(1), &entry(&[7; 100])).len() as u64;
        let store = DiskStore::open(dir.path(), one * 3, 0).unwrap();
        for n in 1..=3 {
            assert_eq!(store.write(&k(n), &entry(&[7; 100])).unwrap(), 0);
        }
        assert!(matches!(store.read(&k(1)), Lookup::Found(_))); // 2 is now least recent
        assert_eq!(store.write(&k(4), &entry(&[7; 100])).unwrap(), 1);
        assert!(matches!(store.read(&k(2)), Lookup::Missing));
        for n in [1, 3, 4] {
            assert!(matches!(store.read(&k(n)), Lookup::Found(_)), "{n}");
        }
        assert!(store.total_bytes() <= one * 3);
        // Too big for the whole cap: not written.
        assert_eq!(store.write(&k(5), &entry(&[7; 1000])).unwrap(), 0);
        assert!(matches!(store.read(&k(5)), Lookup::Missing));
    }

    #[test]
    fn leftover_temporary_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("aa")).unwrap();
        fs::write(dir.path().join("aa").join(".tmp-junk"), b"partial").unwrap();
        let store = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
        assert_eq!(store.len(), 0);
    }
}
