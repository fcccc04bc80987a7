//! The journal: an append-only file of fixed-size records, and a copy of its records in memory.
//!
//! The copy is what the file must hold. While the file holds exactly that (it is *clean*),
//! records are appended to it. An append that fails (disk full, a file-size limit, EIO) may
//! leave part of a record behind: the file is cut back to its last whole record, marked dirty,
//! and nothing more is appended to it; the failed record stays in the copy. A dirty file is
//! replaced as a whole from the copy before anything is durable again. So a short write can
//! never shift the records after it, and nothing the ledger did is lost while the process lives.
//!
//! A rewrite (also how the journal is compacted) is staged in a temporary file and synced
//! without the ledger's lock; appends meanwhile go on as usual. Then, under the lock, the records
//! appended meanwhile are added to the temporary file and it is renamed over the journal.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tollway_core::durable::Staged;

use super::disk::Disk;
use super::records::{RECORD_LEN, Record, compact, encode_all, replay};
use crate::window::WindowState;

/// A rewrite in flight.
#[derive(Debug)]
pub(crate) struct Rewrite {
    /// The compacted journal, to stage.
    pub(crate) bytes: Vec<u8>,
    /// How many records of the copy it holds.
    records: usize,
    /// The sequence number of the last record it holds.
    pub(crate) through: u64,
    /// Whether the file was dirty when it started (then its failure fails waiting grants).
    pub(crate) repair: bool,
}

#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    disk: Arc<dyn Disk>,
    file: Arc<File>,
    /// Every record the journal holds, in order.
    copy: Vec<Record>,
    /// Bytes of whole records in the file (meaningful while clean).
    file_len: u64,
    /// The sequence number of the last record appended (the first is 1).
    written: u64,
    clean: bool,
    rewriting: bool,
    since_rewrite: u64,
    compact_every: u64,
}

impl Journal {
    /// Replaces whatever is at `path` with `copy`, durably, and opens it for appending.
    pub(crate) fn create(
        path: &Path,
        disk: Arc<dyn Disk>,
        copy: Vec<Record>,
        compact_every: u64,
    ) -> io::Result<Self> {
        let staged = disk.stage(path, &encode_all(&copy))?;
        disk.install(staged, &[])?;
        disk.sync_dir(path)?;
        let file = Arc::new(disk.open(path)?);
        Ok(Self {
            path: path.to_owned(),
            disk,
            file,
            file_len: (copy.len() * RECORD_LEN) as u64,
            copy,
            written: 0,
            clean: true,
            rewriting: false,
            since_rewrite: 0,
            compact_every,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }

    /// The sequence number of the last record appended.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Appends `records` and returns the sequence number of the last. Never fails: a record
    /// the file refused stays in the copy and makes the file dirty (see the module docs).
    pub(crate) fn append(&mut self, records: &[Record]) -> u64 {
        self.copy.extend_from_slice(records);
        self.written += records.len() as u64;
        self.since_rewrite += records.len() as u64;
        if self.clean {
            let bytes = encode_all(records);
            match self.disk.append(&self.file, &bytes) {
                Ok(()) => self.file_len += bytes.len() as u64,
                Err(e) => self.fail(&e),
            }
        }
        self.written
    }

    /// An append failed: cut the torn record off so that the records after it can never be
    /// misread, and stop appending until the file is rewritten.
    fn fail(&mut self, error: &io::Error) {
        self.clean = false;
        match self.disk.truncate(&self.file, self.file_len) {
            Ok(()) => tracing::error!(
                path = %self.path.display(),
                %error,
                "budget journal: append failed; cut back to the last whole record, rewriting it"
            ),
            Err(cut) => tracing::error!(
                path = %self.path.display(),
                %error,
                truncate_error = %cut,
                "budget journal: append failed and could not be cut back; rewriting it"
            ),
        }
    }

    /// A sync failed: what the file holds can no longer be trusted.
    pub(crate) fn mark_dirty(&mut self, error: &io::Error) {
        tracing::error!(
            path = %self.path.display(),
            %error,
            "budget journal: sync failed; rewriting it"
        );
        self.clean = false;
    }

    /// Whether the file must be rewritten: it is dirty, or enough was appended to compact.
    pub(crate) fn wants_rewrite(&self) -> bool {
        !self.rewriting && (!self.clean || self.since_rewrite >= self.compact_every)
    }

    /// The file to sync, while it is clean.
    pub(crate) fn file_to_sync(&self) -> Option<Arc<File>> {
        self.clean.then(|| Arc::clone(&self.file))
    }

    /// Compacts the copy and returns what to stage in place of the file.
    pub(crate) fn begin_rewrite(&mut self, windows: &[WindowState], now: i64) -> Rewrite {
        let (events, _) = replay(&self.copy, false);
        self.copy = compact(&events, windows, now);
        self.rewriting = true;
        self.since_rewrite = 0;
        Rewrite {
            bytes: encode_all(&self.copy),
            records: self.copy.len(),
            through: self.written,
            repair: !self.clean,
        }
    }

    /// Completes `rewrite` with its staged file: appends what arrived meanwhile, renames it
    /// over the journal and reopens it. On failure the old file is untouched (and as clean as
    /// it was).
    pub(crate) fn install(&mut self, rewrite: &Rewrite, staged: Staged) -> io::Result<()> {
        self.rewriting = false;
        let tail = encode_all(&self.copy[rewrite.records..]);
        self.disk.install(staged, &tail)?;
        match self.disk.open(&self.path) {
            Ok(file) => {
                self.file = Arc::new(file);
                self.file_len = (self.copy.len() * RECORD_LEN) as u64;
                self.clean = true;
                tracing::debug!(
                    path = %self.path.display(),
                    records = self.copy.len(),
                    "budget journal rewritten"
                );
                Ok(())
            }
            Err(error) => {
                self.clean = false;
                Err(error)
            }
        }
    }

    /// `rewrite` failed before it was installed.
    pub(crate) fn abort_rewrite(&mut self, error: &io::Error) {
        self.rewriting = false;
        tracing::error!(
            path = %self.path.display(),
            %error,
            dirty = !self.clean,
            "budget journal: rewrite failed"
        );
    }
}
