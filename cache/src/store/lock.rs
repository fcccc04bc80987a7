//! Cross-process coalescing: a lock file per key in the shared folder.
//!
//! The process that holds `<shard>/<key>.lock` fetches; the others poll for the entry to
//! appear or the lock to be free. The lock is a [`LockFile`] (`flock`): the kernel releases it
//! when its holder exits or is killed, so a dead process's lock is never trusted, whatever pid
//! it wrote or reused.
//!
//! The holder removes the file before it lets go, so lock files do not pile up one per key ever
//! fetched. That is safe only with one more check: a process that opened the file just before
//! the holder removed it would lock an unlinked inode nobody else will ever contend for. So a
//! lock counts only if the inode it locked is still the one at the path; if not, the taker
//! lets go and tries again. Nobody ever removes a lock file it does not hold.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use tollway_core::durable::{self, LockFile};

/// How long a process waits for another's fetch before it fetches itself.
pub(crate) const LOCK_WAIT_MAX: Duration = Duration::from_secs(30);
/// How often a waiting process looks again.
pub(crate) const LOCK_POLL: Duration = Duration::from_millis(25);

/// A held lock; dropping it removes the file, then releases the lock.
#[derive(Debug)]
pub(crate) struct KeyLock {
    lock: LockFile,
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        // Still held here: nobody else can hold this inode, and only holders remove the file,
        // so the file at the path is ours.
        match fs::remove_file(self.lock.path()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "could not remove a cache lock file"),
        }
    }
}

/// Tries to take the lock at `path` (in the shard folder `dir`, created if missing): `None`
/// when another holder, in this process or another, has it.
pub(crate) fn try_lock(dir: &Path, path: &Path) -> io::Result<Option<KeyLock>> {
    durable::create_dir_all(dir)?;
    // A handful of rounds: each failed one means a holder removed the file between our open
    // and our lock, which needs a release to happen in that instant.
    for _ in 0..4 {
        let Some(lock) = LockFile::try_lock(path)? else {
            return Ok(None);
        };
        if is_at_path(&lock, path)? {
            return Ok(Some(KeyLock { lock }));
        }
    }
    Ok(None)
}

/// Removes the lock file at `path` if nobody holds it: for sweeping the files of holders that
/// were killed before they could remove their own.
pub(crate) fn remove_if_free(path: &Path) -> io::Result<()> {
    if let Some(lock) = try_lock_existing(path)? {
        drop(KeyLock { lock });
    }
    Ok(())
}

fn try_lock_existing(path: &Path) -> io::Result<Option<LockFile>> {
    let Some(lock) = LockFile::try_lock(path)? else {
        return Ok(None);
    };
    Ok(is_at_path(&lock, path)?.then_some(lock))
}

/// Whether the inode `lock` holds is the one at `path` now.
fn is_at_path(lock: &LockFile, path: &Path) -> io::Result<bool> {
    let held = lock.file().metadata()?;
    match fs::metadata(path) {
        Ok(at_path) => Ok(held.dev() == at_path.dev() && held.ino() == at_path.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_holder_removes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("ab");
        let path = shard.join("k.lock");
        let lock = try_lock(&shard, &path).unwrap().expect("first taker wins");
        assert!(try_lock(&shard, &path).unwrap().is_none());
        // A plain flock holder (another process's cache) is honoured too.
        drop(lock);
        assert!(!path.exists());
        let other = LockFile::try_lock(&path).unwrap().unwrap();
        assert!(try_lock(&shard, &path).unwrap().is_none());
        remove_if_free(&path).unwrap();
        assert!(path.exists(), "a held lock's file is never removed");
        drop(other);
        remove_if_free(&path).unwrap();
        assert!(!path.exists(), "a free one is swept");
    }

    #[test]
    fn a_lock_on_a_removed_inode_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("ab");
        fs::create_dir(&shard).unwrap();
        let path = shard.join("k.lock");
        // A taker that opened the file just before the holder removed it.
        let stale = LockFile::try_lock(&path).unwrap().unwrap();
        fs::remove_file(&path).unwrap();
        assert!(!is_at_path(&stale, &path).unwrap());
        // The next taker makes a new file and locks that one, stale or not.
        let fresh = try_lock(&shard, &path).unwrap().expect("a new inode");
        assert!(is_at_path(&fresh.lock, &path).unwrap());
        drop(stale);
        assert!(
            try_lock(&shard, &path).unwrap().is_none(),
            "fresh still holds"
        );
    }

    #[test]
    fn a_pid_written_in_the_file_means_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("ab");
        fs::create_dir(&shard).unwrap();
        let path = shard.join("k.lock");
        for pid in [1, std::process::id()] {
            fs::write(&path, pid.to_string()).unwrap();
            let lock = try_lock(&shard, &path).unwrap();
            assert!(lock.is_some(), "pid {pid} holds nothing");
        }
    }
}
