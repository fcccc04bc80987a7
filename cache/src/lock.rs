//! Cross-process coalescing: a lock file per key in the shared folder.
//!
//! The process that creates `<shard>/<key>.lock` (with `O_EXCL`) fetches; the others poll for
//! the entry to appear or the lock to go. A lock whose holder is dead (its pid, written in the
//! file, has no `/proc` entry) or that is older than [`LOCK_MAX_AGE`] is abandoned and broken.
//! This is best effort: two processes breaking the same abandoned lock at once may both fetch,
//! and a waiter gives up waiting after [`LOCK_WAIT_MAX`] and fetches anyway.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A lock older than this is abandoned, whoever holds it.
pub(crate) const LOCK_MAX_AGE: Duration = Duration::from_secs(300);
/// How long a process waits for another's fetch before it fetches itself.
pub(crate) const LOCK_WAIT_MAX: Duration = Duration::from_secs(30);
/// How often a waiting process looks again.
pub(crate) const LOCK_POLL: Duration = Duration::from_millis(25);
/// A lock file with no pid in it yet may be in the middle of being written.
const UNWRITTEN_GRACE: Duration = Duration::from_secs(10);

/// A held lock; dropping it removes the file.
#[derive(Debug)]
pub(crate) struct KeyLock {
    path: PathBuf,
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "could not remove a cache lock file"),
        }
    }
}

/// The result of trying to take a lock.
#[derive(Debug)]
pub(crate) enum TryLock {
    Acquired(KeyLock),
    Held,
}

/// Tries to take the lock at `path` (in the shard folder `dir`, created if missing).
pub(crate) fn try_lock(dir: &Path, path: PathBuf) -> io::Result<TryLock> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for _ in 0..2 {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut file) => {
                // No fsync: a lock need not survive a crash, and a dead holder is detected.
                write!(file, "{}", std::process::id())?;
                return Ok(TryLock::Acquired(KeyLock { path }));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !is_abandoned(&path) {
                    return Ok(TryLock::Held);
                }
                tracing::warn!(path = %path.display(), "breaking an abandoned cache lock");
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(TryLock::Held)
}

fn is_abandoned(path: &Path) -> bool {
    let age = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| m.elapsed().ok())
        .unwrap_or_default();
    if age > LOCK_MAX_AGE {
        return true;
    }
    let pid = fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    match pid {
        Some(pid) => {
            pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
        }
        None => age > UNWRITTEN_GRACE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_release_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("ab");
        let path = shard.join("k.lock");
        let TryLock::Acquired(lock) = try_lock(&shard, path.clone()).unwrap() else {
            panic!("first taker wins")
        };
        assert!(matches!(
            try_lock(&shard, path.clone()).unwrap(),
            TryLock::Held
        ));
        drop(lock);
        assert!(!path.exists());
        assert!(matches!(
            try_lock(&shard, path).unwrap(),
            TryLock::Acquired(_)
        ));
    }

    #[test]
    fn a_dead_holder_is_broken_but_a_fresh_unwritten_lock_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("ab");
        fs::create_dir(&shard).unwrap();
        let path = shard.join("k.lock");
        fs::write(&path, "4000000000").unwrap(); // no such pid
        assert!(matches!(
            try_lock(&shard, path.clone()).unwrap(),
            TryLock::Acquired(_)
        ));
        fs::write(&path, "").unwrap();
        assert!(matches!(try_lock(&shard, path).unwrap(), TryLock::Held));
    }
}
