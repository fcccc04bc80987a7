//! Files that hold spend records, cached responses and work queues: private, atomic, locked.
//!
//! One small module, so the journal, the cache and the pipeline's queue get the same three
//! guarantees from the same code:
//!
//! - **Private**: files are created `0600` and folders `0700` on Unix, whatever the umask; spend
//!   records and cached responses are nobody else's business.
//! - **Atomic**: [`write_atomic`] writes a temporary file beside the target, fsyncs it, renames
//!   it over the target and fsyncs the folder, so a crash leaves the old bytes or the new ones,
//!   never a mix, and the rename itself survives a power cut.
//! - **Locked**: [`LockFile`] holds an exclusive advisory lock (`flock`) that the kernel
//!   releases when its holder dies, `kill -9` included. It is never trusted by pid (a dead
//!   process's pid is reused, and every container's first process is pid 1), and the lock file
//!   is never deleted, so two processes can never each hold "the" lock on different inodes.
//!
//! ```
//! use tollway_core::durable::{self, LockFile};
//!
//! let dir = std::env::temp_dir().join(format!("tollway-durable-doc-{}", std::process::id()));
//! durable::create_dir_all(&dir)?;
//! let lock = LockFile::try_lock(dir.join("ledger.lock"))?.expect("nobody else holds it");
//! // A second holder in this or any other process is refused while `lock` lives.
//! assert!(LockFile::try_lock(dir.join("ledger.lock"))?.is_none());
//! durable::write_atomic(dir.join("state.json"), b"{\"spent\":3}")?;
//! assert_eq!(std::fs::read(dir.join("state.json"))?, b"{\"spent\":3}");
//! drop(lock);
//! assert!(LockFile::try_lock(dir.join("ledger.lock"))?.is_some());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::error::Error;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mode of the files this module creates (owner read and write).
pub const FILE_MODE: u32 = 0o600;
/// The mode of the folders this module creates (owner only).
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents, each new one `0700`. Folders that already exist keep
/// their mode.
pub fn create_dir_all(dir: impl AsRef<Path>) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir.as_ref())
}

/// Options that create a missing file `0600` (then set read, write, append and so on as
/// usual).
pub fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options
}

/// Opens `path` for reading and appending, creating it `0600` if missing.
pub fn open_append(path: impl AsRef<Path>) -> io::Result<File> {
    private_options()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

/// Flushes a folder's entries (a new name, a rename, a removal) to disk. A no-op where the
/// platform cannot open folders as files.
pub fn sync_dir(dir: impl AsRef<Path>) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir.as_ref())?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Replaces `path` with `bytes` atomically and durably: after it returns, a crash shows the new
/// bytes; if it fails or the process dies part-way, the old file is untouched. The file is
/// `0600`.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// [`write_atomic`], with the bytes written by `fill` (which may stream them).
pub fn write_atomic_with(
    path: impl AsRef<Path>,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let path = path.as_ref();
    let mut staged = Staged::create(path)?;
    fill(staged.file_mut())?;
    staged.sync()?;
    staged.install()?;
    sync_dir(parent(path))
}

/// An atomic replacement in two steps, for writers that must not hold a lock while the bulk
/// of the bytes reaches the disk: [`create`](Self::create) a temporary file beside the target
/// (`0600`), write and [`sync`](Self::sync) it, then, with the lock held, append the last few
/// bytes and [`install`](Self::install) it over the target (a rename), and finally
/// [`sync_dir`] the folder. Dropped before it is installed, the temporary file is removed and
/// the target is untouched.
///
/// ```
/// use std::io::Write;
/// use tollway_core::durable::{self, Staged};
///
/// let dir = std::env::temp_dir().join(format!("tollway-staged-doc-{}", std::process::id()));
/// durable::create_dir_all(&dir)?;
/// let path = dir.join("journal");
/// std::fs::write(&path, b"old")?;
/// let mut staged = Staged::create(&path)?;
/// staged.file_mut().write_all(b"new, compacted")?;
/// staged.sync()?;
/// // ... take the lock, append what arrived meanwhile, install, release the lock ...
/// staged.file_mut().write_all(b", and the tail")?;
/// staged.install()?;
/// durable::sync_dir(&dir)?;
/// assert_eq!(std::fs::read(&path)?, b"new, compacted, and the tail");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Staged {
    file: File,
    temp: PathBuf,
    target: PathBuf,
    installed: bool,
}

impl Staged {
    /// A new, empty temporary file beside `path`.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        let target = path.as_ref().to_owned();
        let temp = temp_path(&target);
        let file = private_options().write(true).create_new(true).open(&temp)?;
        Ok(Self {
            file,
            temp,
            target,
            installed: false,
        })
    }

    /// The temporary file, to write into.
    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// Makes what was written so far durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Renames the temporary file over the target. The rename survives a crash of this
    /// process at once; call [`sync_dir`] on the folder for it to survive a power cut.
    pub fn install(mut self) -> io::Result<()> {
        fs::rename(&self.temp, &self.target)?;
        self.installed = true;
        Ok(())
    }

    /// The file this will replace.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.installed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// The folder `path` lives in (`.` for a bare name); [`sync_dir`] it after an install.
pub fn parent_dir(path: &Path) -> &Path {
    parent(path)
}

/// The folder `path` lives in (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary name beside `path`, unique within this process and across processes.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Removes the temporary files a crash left beside `path` (those [`write_atomic`] and
/// [`Staged`] make for this very target, none other), and returns how many. Call it while
/// holding the lock that guards `path`: another process's write in progress would be removed
/// too.
pub fn remove_stale_temps(path: impl AsRef<Path>) -> io::Result<usize> {
    let path = path.as_ref();
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(0);
    };
    let prefix = format!(".{name}.");
    let mut removed = 0;
    for entry in fs::read_dir(parent(path))? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if is_temp_of(file_name, &prefix) {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Whether `file_name` is exactly `{prefix}{pid}.{counter}.tmp`, as [`temp_path`] names them:
/// the temporary files of another target whose name merely starts alike (`journal.old` beside
/// `journal`) are another writer's, guarded by another lock.
fn is_temp_of(file_name: &str, prefix: &str) -> bool {
    let Some(middle) = file_name
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(".tmp"))
    else {
        return false;
    };
    let number = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    middle
        .split_once('.')
        .is_some_and(|(pid, counter)| number(pid) && number(counter))
}

/// Whether `name` is a temporary file left by [`write_atomic`] (a crash between create and
/// rename), for folder sweeps.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// An exclusive advisory lock on a file, held until this value is dropped or the process dies.
///
/// Built on `flock` (through [`File::try_lock`]): the kernel drops it when the last descriptor
/// closes, `kill -9` included, so a stale lock cannot outlive its holder. The lock file is
/// created `0600` and left in place (deleting it would let a waiter lock an unlinked inode
/// while a newcomer locks a new file). Two `LockFile`s in one process on one path exclude each
/// other too.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Takes the lock at `path` if nobody holds it: `Ok(None)` when another holder (this
    /// process or another) has it.
    pub fn try_lock(path: impl Into<PathBuf>) -> io::Result<Option<Self>> {
        let path = path.into();
        let file = Self::open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { file, path })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Takes the lock at `path`, or fails with [`Locked`] (inside the `io::Error`, kind
    /// `WouldBlock`) when another holder has it.
    pub fn lock_or_fail(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        Self::try_lock(path.clone())?
            .ok_or_else(|| io::Error::new(io::ErrorKind::WouldBlock, Locked { path }))
    }

    /// Takes the lock at `path`, waiting at most `patience` for another holder to let go, then
    /// fails with [`Locked`] (inside the `io::Error`, kind `WouldBlock`). This blocks the
    /// thread for up to `patience`.
    ///
    /// A short patience is worth having even when a second owner is an error: a holder that
    /// just closed the lock may not have released it yet, because a child process forked by
    /// any thread of this process holds a copy of every descriptor until it `exec`s.
    pub fn lock_within(
        path: impl Into<PathBuf>,
        patience: std::time::Duration,
    ) -> io::Result<Self> {
        let path = path.into();
        let give_up = std::time::Instant::now().checked_add(patience);
        loop {
            if let Some(lock) = Self::try_lock(path.clone())? {
                return Ok(lock);
            }
            if give_up.is_none_or(|at| std::time::Instant::now() >= at) {
                return Err(io::Error::new(io::ErrorKind::WouldBlock, Locked { path }));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Waits until the lock at `path` is free, then takes it. This blocks the thread: call it
    /// from `spawn_blocking` in async code.
    pub fn lock(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let file = Self::open(&path)?;
        file.lock()?;
        Ok(Self { file, path })
    }

    fn open(path: &Path) -> io::Result<File> {
        private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    }

    /// Where the lock lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The locked file (to write diagnostics into, say; its contents mean nothing to the lock).
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Someone else holds a [`LockFile`]: another process (or another owner in this one) has the
/// file open for writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    path: PathBuf,
}

impl Locked {
    /// A refusal for the lock at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The lock file another holder has.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Display for Locked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is locked by another process (or another owner in this one)",
            self.path.display()
        )
    }
}

impl Error for Locked {}

#[cfg(test)]
mod tests;
