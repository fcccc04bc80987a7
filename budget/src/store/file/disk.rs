//! The journal's I/O, behind a trait so that tests can make any call fail, part-way through a
//! record if they like.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use tollway_core::durable::{self, Staged};

/// What the journal asks of the file system.
pub(crate) trait Disk: fmt::Debug + Send + Sync + 'static {
    /// Opens the journal for appending (created `0600` if missing).
    fn open(&self, path: &Path) -> io::Result<File>;
    /// Appends `bytes` (may fail part-way, leaving some of them written).
    fn append(&self, file: &File, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable.
    fn sync(&self, file: &File) -> io::Result<()>;
    /// Cuts the file back to `len` bytes.
    fn truncate(&self, file: &File, len: u64) -> io::Result<()>;
    /// A temporary file beside `path` holding `bytes`, durably: the first half of a rewrite.
    fn stage(&self, path: &Path, bytes: &[u8]) -> io::Result<Staged>;
    /// Appends `tail` to `staged` and renames it over its target: the second half.
    fn install(&self, staged: Staged, tail: &[u8]) -> io::Result<()>;
    /// Makes the folder's entries (the rename) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// The real file system, through [`tollway_core::durable`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RealDisk;

impl Disk for RealDisk {
    fn open(&self, path: &Path) -> io::Result<File> {
        durable::open_append(path)
    }

    fn append(&self, mut file: &File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    fn truncate(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn stage(&self, path: &Path, bytes: &[u8]) -> io::Result<Staged> {
        let mut staged = Staged::create(path)?;
        staged.file_mut().write_all(bytes)?;
        staged.sync()?;
        Ok(staged)
    }

    fn install(&self, mut staged: Staged, tail: &[u8]) -> io::Result<()> {
        staged.file_mut().write_all(tail)?;
        staged.install()
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        durable::sync_dir(durable::parent_dir(path))
    }
}

/// A disk that fails on command, for tests.
#[cfg(test)]
pub(crate) mod faulty {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    /// Which calls fail from now on.
    #[derive(Debug, Default)]
    pub(crate) struct Faults {
        /// The next append writes this many bytes, then fails (`usize::MAX`: no fault).
        pub(crate) torn_append: AtomicUsize,
        /// Every sync fails while set.
        pub(crate) sync: AtomicBool,
        /// Every truncate fails while set.
        pub(crate) truncate: AtomicBool,
        /// Every rewrite (its staging) fails while set.
        pub(crate) rewrite: AtomicBool,
        /// Each sync takes this many milliseconds more.
        pub(crate) sync_delay_ms: AtomicUsize,
        /// How many syncs were asked for.
        pub(crate) syncs: AtomicUsize,
    }

    impl Faults {
        pub(crate) fn new() -> Arc<Self> {
            let faults = Self::default();
            faults.torn_append.store(usize::MAX, Ordering::SeqCst);
            Arc::new(faults)
        }
    }

    #[derive(Debug)]
    pub(crate) struct FaultyDisk(pub(crate) Arc<Faults>);

    fn injected() -> io::Error {
        io::Error::other("injected fault")
    }

    impl Disk for FaultyDisk {
        fn open(&self, path: &Path) -> io::Result<File> {
            RealDisk.open(path)
        }

        fn append(&self, file: &File, bytes: &[u8]) -> io::Result<()> {
            let torn = self.0.torn_append.swap(usize::MAX, Ordering::SeqCst);
            if torn == usize::MAX {
                return RealDisk.append(file, bytes);
            }
            RealDisk.append(file, &bytes[..torn.min(bytes.len())])?;
            Err(injected())
        }

        fn sync(&self, file: &File) -> io::Result<()> {
            self.0.syncs.fetch_add(1, Ordering::SeqCst);
            let delay = self.0.sync_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                std::thread::sleep(std::time::Duration::from_millis(delay as u64));
            }
            if self.0.sync.load(Ordering::SeqCst) {
                return Err(injected());
            }
            RealDisk.sync(file)
        }

        fn truncate(&self, file: &File, len: u64) -> io::Result<()> {
            if self.0.truncate.load(Ordering::SeqCst) {
                return Err(injected());
            }
            RealDisk.truncate(file, len)
        }

        fn stage(&self, path: &Path, bytes: &[u8]) -> io::Result<Staged> {
            if self.0.rewrite.load(Ordering::SeqCst) {
                return Err(injected());
            }
            RealDisk.stage(path, bytes)
        }

        fn install(&self, staged: Staged, tail: &[u8]) -> io::Result<()> {
            RealDisk.install(staged, tail)
        }

        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            RealDisk.sync_dir(path)
        }
    }
}
