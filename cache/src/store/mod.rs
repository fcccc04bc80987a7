//! The disk store: one file per entry under `<root>/<first two hex digits>/<key in hex>`.
//!
//! Writes are atomic and durable: the entry goes to a temporary file in the same folder
//! (mode 0600), is fsynced, renamed over the final name, and the folder is fsynced, so after a
//! crash a name holds either the previous complete entry or the new complete entry. Reads
//! verify the checksum; a file that fails is removed and reported as a miss. Renames,
//! evictions and removals happen under the folder lock and are recorded in the folder's
//! [journal], so the byte cap holds for every process sharing the folder. A write waits for
//! that lock at most [`FOLDER_LOCK_WAIT`], then gives up (the response is served unstored): a
//! holder that never lets go cannot hold every other process's responses hostage.
//!
//! Lock order, in-process and out: the journal cursor's mutex, then the folder lock, then the
//! index's mutex, then the memory tier's (the last two held briefly, never across I/O). Every call here may block: the service runs
//! them on tokio's blocking pool, except the reads of small files (see
//! [`DiskStore::open_entry`]).

mod file;
mod index;
mod journal;
mod lock;
mod memory;
mod scan;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tollway_core::durable::{self, LockFile};

use self::file::{Load, load, load_or_create_secret, remove_file, shard_of, write_new_file};
use self::index::Index;
use self::journal::{Cursor, FOLDER_LOCK, Record, Txn};
pub(crate) use self::lock::{KeyLock, LOCK_POLL, LOCK_WAIT_MAX};
use self::memory::MemoryTier;
use crate::entry::{self, StoredResponse};
use crate::key::CacheKey;

/// How long a write or removal waits for the folder lock before it gives up (the response is
/// served all the same, unstored). Healthy holders keep it for a few file operations; one that
/// never lets go (a process stopped with `SIGSTOP`, stuck on a stalled disk) must not hold the
/// responses of every other process hostage.
pub(crate) const FOLDER_LOCK_WAIT: Duration = Duration::from_secs(5);

/// What a read found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A verified entry.
    Found(Arc<StoredResponse>),
    /// Nothing under that key.
    Missing,
    /// A file that failed verification (the caller removes it).
    Corrupt,
}

/// When [`DiskStore::remove`] removes an entry, judged again under the folder lock (another
/// process may have replaced the file since the caller looked).
#[derive(Debug, Clone, Copy)]
pub(crate) enum RemoveIf {
    /// Whatever the file holds.
    Always,
    /// If it holds nothing worth keeping at this time.
    Expired(SystemTime),
    /// If it does not verify.
    Corrupt,
}

/// The files of one cache folder, its index and its memory tier.
#[derive(Debug)]
pub(crate) struct DiskStore {
    root: PathBuf,
    secret: [u8; 32],
    max_bytes: u64,
    index: Mutex<Index>,
    memory: MemoryTier,
    cursor: Mutex<Cursor>,
    tmp_counter: AtomicU64,
    /// Until when the folder lock counts as stuck (a wait for it just ran out): meanwhile
    /// writes try it once instead of each waiting [`FOLDER_LOCK_WAIT`] in turn.
    folder_stuck_until: Mutex<Option<Instant>>,
}

impl DiskStore {
    /// Opens (creating if needed) the cache folder at `root`, loads or creates its secret,
    /// indexes the entries there (oldest first by modification time), evicts down to the cap
    /// and rewrites the journal from what it found.
    pub(crate) fn open(root: &Path, max_bytes: u64, memory_bytes: u64) -> io::Result<Self> {
        durable::create_dir_all(root)?;
        let store = {
            let _folder = LockFile::lock(root.join(FOLDER_LOCK))?;
            let secret = load_or_create_secret(root)?;
            let store = Self {
                root: root.to_owned(),
                secret,
                max_bytes,
                index: Mutex::default(),
                memory: MemoryTier::new(memory_bytes),
                cursor: Mutex::default(),
                tmp_counter: AtomicU64::new(0),
                folder_stuck_until: Mutex::new(None),
            };
            *store.cursor.lock() = store.rebuild()?;
            store
        };
        Ok(store)
    }

    /// Indexes the folder from a scan, evicts down to the cap, and rewrites the journal. The
    /// caller holds the folder lock.
    fn rebuild(&self) -> io::Result<Cursor> {
        let mut index = Index::default();
        for found in scan::scan(&self.root)? {
            index.touch(found.key, found.size);
        }
        // A lowered cap, or the leftovers of a crash.
        while let Some(victim) = index.pop_victim(self.max_bytes) {
            remove_file(&self.path_of(&victim))?;
        }
        let entries: Vec<_> = index.by_use().collect();
        let cursor = journal::rewrite(&self.root, &entries)?;
        *self.index.lock() = index;
        self.memory.clear();
        Ok(cursor)
    }

    /// The secret cache keys are hashed with.
    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The folder.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Total bytes of the folder's entries, as of this process's last look at the journal.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.index.lock().total()
    }

    /// Number of the folder's entries, as of this process's last look at the journal.
    pub(crate) fn len(&self) -> usize {
        self.index.lock().len()
    }

    /// The file of `key` (in its shard folder): one allocation, since every read needs it.
    fn path_of(&self, key: &CacheKey) -> PathBuf {
        let mut hex = [0; 64];
        let hex = key.hex_in(&mut hex);
        let mut path = PathBuf::with_capacity(self.root.as_os_str().len() + 80);
        path.push(&self.root);
        path.push(&hex[..2]);
        path.push(hex);
        path
    }

    /// `key`'s entry if the memory tier holds it (marked as used in both tiers). Never blocks
    /// on I/O.
    pub(crate) fn read_memory(&self, key: &CacheKey) -> Option<Arc<StoredResponse>> {
        let entry = self.memory.get(key)?;
        self.index.lock().touch_existing(key);
        Some(entry)
    }

    /// Tries to take the cross-process lock for `key`: `None` if another holder has it.
    pub(crate) fn try_lock(&self, key: &CacheKey) -> io::Result<Option<KeyLock>> {
        let file = self.path_of(key);
        lock::try_lock(shard_of(&file), &file.with_extension("lock"))
    }

    /// Opens `key`'s file and reads its length: two system calls, cheap enough to make on an
    /// async task, so the caller can read small files there too and leave only large ones to
    /// the blocking pool. `None` if there is no file.
    pub(crate) fn open_entry(&self, key: &CacheKey) -> io::Result<Option<Opened>> {
        let since = self.memory.since();
        let file = match File::open(self.path_of(key)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        Ok(Some(Opened { file, len, since }))
    }

    /// Reads and verifies the file [`open_entry`](Self::open_entry) opened; a verified entry
    /// joins the memory tier, unless an entry was written or removed since it was opened.
    pub(crate) fn read_open(&self, key: &CacheKey, opened: Opened) -> Lookup {
        match load(key, opened.file, opened.len) {
            Ok(found) => {
                self.index.lock().touch_existing(key);
                let found = Arc::new(found);
                self.memory
                    .insert_read(*key, Arc::clone(&found), opened.since);
                Lookup::Found(found)
            }
            Err(Load::Io(e)) => {
                tracing::warn!(error = %e, "cache file unreadable; treating as a miss");
                Lookup::Missing
            }
            Err(Load::Corrupt(reason)) => {
                tracing::warn!(reason, "corrupt cache file");
                Lookup::Corrupt
            }
        }
    }

    /// Reads and verifies `key`'s entry.
    #[cfg(test)]
    pub(crate) fn read(&self, key: &CacheKey) -> Lookup {
        match self.open_entry(key) {
            Ok(Some(opened)) => self.read_open(key, opened),
            Ok(None) => Lookup::Missing,
            Err(e) => {
                tracing::warn!(error = %e, "cache file unreadable; treating as a miss");
                Lookup::Missing
            }
        }
    }

    /// Takes the folder lock, waiting at most [`FOLDER_LOCK_WAIT`] (not at all while a wait
    /// just ran out); an error holding [`Locked`](tollway_core::durable::Locked) after that.
    fn lock_folder(&self) -> io::Result<LockFile> {
        let stuck = self
            .folder_stuck_until
            .lock()
            .is_some_and(|until| Instant::now() < until);
        let patience = if stuck {
            Duration::ZERO
        } else {
            FOLDER_LOCK_WAIT
        };
        match LockFile::lock_within(self.root.join(FOLDER_LOCK), patience) {
            Ok(lock) => {
                *self.folder_stuck_until.lock() = None;
                Ok(lock)
            }
            Err(error) => {
                if error.kind() == io::ErrorKind::WouldBlock {
                    *self.folder_stuck_until.lock() = Instant::now().checked_add(FOLDER_LOCK_WAIT);
                }
                Err(error)
            }
        }
    }

    /// Runs `change` under the folder lock, with the journal caught up.
    fn mutate<T>(&self, change: impl FnOnce(&mut Txn<'_>) -> io::Result<T>) -> io::Result<T> {
        let mut cursor = self.cursor.lock();
        let _folder = self.lock_folder()?;
        let mut txn = match Txn::begin(&self.root, &mut cursor, &self.index, &self.memory)? {
            Some(txn) => txn,
            None => {
                tracing::warn!("cache journal missing or unreadable; rebuilding it");
                *cursor = self.rebuild()?;
                Txn::begin(&self.root, &mut cursor, &self.index, &self.memory)?
                    .ok_or_else(|| io::Error::other("the cache journal vanished while held"))?
            }
        };
        let out = change(&mut txn)?;
        txn.finish(&self.root)?;
        Ok(out)
    }

    /// Writes `entry` under `key` atomically and durably, first evicting least recently used
    /// entries (folder-wide) until it fits under the cap. Returns how many were evicted. An
    /// entry larger than the whole cap is not written, and removes the older one.
    pub(crate) fn write(&self, key: &CacheKey, entry: &Arc<StoredResponse>) -> io::Result<u64> {
        let bytes = entry::encode(key, entry);
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            self.remove(key, RemoveIf::Always)?;
            return Ok(0);
        }
        let path = self.path_of(key);
        let dir = shard_of(&path);
        if !dir.is_dir() {
            durable::create_dir_all(dir)?;
            durable::sync_dir(&self.root)?;
        }
        let tmp = dir.join(format!(
            ".{}.{}.{}.tmp",
            key.hex(),
            std::process::id(),
            self.tmp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(e) = write_new_file(&tmp, &bytes) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let evicted = self.mutate(|txn| {
            let old = txn.size_of(key).unwrap_or(0);
            let mut evicted = 0;
            while txn.total() - old + size > self.max_bytes {
                let Some(victim) = txn.lru_except(key) else {
                    break;
                };
                remove_file(&self.path_of(&victim))?;
                self.memory.remove(&victim);
                txn.append(&[Record::Remove(victim)])?;
                evicted += 1;
            }
            // Reserve the larger size before the rename, so a crash between the two never
            // leaves a file larger than the journal says.
            txn.append(&[Record::Put(*key, old.max(size))])?;
            if let Err(e) = fs::rename(&tmp, &path) {
                let _ = fs::remove_file(&tmp);
                let undo = if old > 0 {
                    Record::Put(*key, old)
                } else {
                    Record::Remove(*key)
                };
                txn.append(&[undo])?;
                return Err(e);
            }
            if size < old {
                txn.append(&[Record::Put(*key, size)])?;
            }
            // Under the journal's mutex, so a removal of this key is ordered before or after.
            self.memory.insert(*key, Arc::clone(entry));
            Ok(evicted)
        });
        let evicted = match evicted {
            Ok(evicted) => evicted,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        durable::sync_dir(dir)?;
        Ok(evicted)
    }

    /// Removes `key`'s entry if `when` still holds under the folder lock. Returns whether a
    /// file was removed.
    pub(crate) fn remove(&self, key: &CacheKey, when: RemoveIf) -> io::Result<bool> {
        let path = self.path_of(key);
        self.mutate(|txn| {
            let judged = match when {
                RemoveIf::Always => None,
                RemoveIf::Expired(_) | RemoveIf::Corrupt => Some(match File::open(&path) {
                    Ok(file) => {
                        let len = file.metadata()?.len();
                        load(key, file, len)
                    }
                    Err(e) => Err(Load::Io(e)),
                }),
            };
            let doomed = match (when, judged) {
                (RemoveIf::Always, _) => true,
                (_, Some(Err(Load::Io(e)))) if e.kind() == io::ErrorKind::NotFound => false,
                (_, Some(Err(Load::Io(e)))) => return Err(e),
                (_, Some(Err(Load::Corrupt(_)))) => true,
                (RemoveIf::Expired(now), Some(Ok(entry))) => !entry.is_kept(now),
                (_, _) => false,
            };
            let removed = doomed && remove_file(&path)?;
            if doomed {
                // After the file is gone: a read that began before cannot bring it back.
                self.memory.remove(key);
            }
            // The journal follows the disk: a file gone, now or before, keeps no record.
            if txn.size_of(key).is_some() && !path.exists() {
                txn.append(&[Record::Remove(*key)])?;
            }
            Ok(removed)
        })
    }
}

/// An entry file, open, with its length and the memory tier's change counter from before it
/// was opened.
#[derive(Debug)]
pub(crate) struct Opened {
    file: File,
    len: u64,
    since: u64,
}

impl Opened {
    /// Its length when opened.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests;
