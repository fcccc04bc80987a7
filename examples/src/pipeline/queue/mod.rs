//! The durable work queue: an append-only journal of JSON lines in the cache directory.
//!
//! The queue is not stored as a list of pending tasks but as what was learnt: every page fetched
//! (with its followers and its `next_page_id`), every user that failed for good, every page given
//! up on. Each user's next task follows from that: the `next_page_id` of the last page held, or
//! the first page if none is, or nothing once a page answered `next_page_id: null`. So a run
//! killed at any moment resumes where it stopped: pages in the journal are never fetched again.
//!
//! Each append is written as whole lines and `fsync`ed before the run moves on. A process killed
//! mid-write leaves at most a torn last line, which [`Journal::open`] drops (and truncates away,
//! so the next append starts on a clean line). A malformed line anywhere else is not guessed at:
//! opening fails with [`JournalError::Corrupt`] and the file is left as it is. An append that
//! fails part-way (a full disk) is cut back to the last whole line before the error is returned,
//! so one failure never leaves a damaged line for later appends to bury.
//!
//! The folder and its files are private (`0700`, `0600`), and an open journal holds an exclusive
//! `flock` on `journal.lock` beside it ([`tollway_core::durable::LockFile`]): a second run on the
//! same folder is refused with [`JournalError::Locked`], and the kernel drops the lock when its
//! holder dies, `kill -9` included.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tollway_core::durable::{self, LockFile};

mod replay;
#[cfg(test)]
mod tests;

pub use replay::{Replay, UserReplay, UserState, load_followers};

/// The journal's file name inside the cache directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// The journal's lock file inside the cache directory.
pub const LOCK_FILE: &str = "journal.lock";

/// One line of the journal.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// A page was fetched (and paid for).
    Page(PageRecord),
    /// A user failed for a permanent reason (it does not exist): it is not asked for again.
    UserFailed(UserFailure),
    /// A page kept failing and was given up on in one run. A later run tries it again.
    DeadLetter(DeadLetter),
}

/// A fetched page: where it sits in its user's chain and what it held.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PageRecord {
    /// Whose followers.
    pub user_id: String,
    /// The cursor that fetched it (empty for the first page).
    pub page_id: String,
    /// The cursor of the next page; `None` on the last one.
    pub next_page_id: Option<String>,
    /// The followers, as the API listed them.
    pub followers: Vec<serde_json::Value>,
}

/// A user that failed for good, and why (`"not found"`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UserFailure {
    /// The user.
    pub user_id: String,
    /// Why it failed.
    pub reason: String,
}

/// A page that was given up on after too many failed tries, with its last error.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Whose page.
    pub user_id: String,
    /// The page's cursor (empty for the first page).
    pub page_id: String,
    /// How many times it was tried.
    pub tries: u32,
    /// The last error.
    pub error: String,
}

/// Why a journal could not be opened or written.
#[derive(Debug)]
pub enum JournalError {
    /// Reading, writing or syncing the file failed.
    Io {
        /// The journal file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Another process (or another run in this one) holds the journal's lock: two runs on one
    /// folder would fetch and journal the same pages twice.
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A record is larger, as a journal line, than the journal takes
    /// ([`Journal::with_max_line`]). Nothing was written.
    TooLarge {
        /// The record's length as a line, in bytes.
        len: usize,
        /// The most the journal takes.
        max: usize,
    },
    /// A line other than the last is not a record: the file was damaged by something other
    /// than an interrupted append, so it is left alone.
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What the parser said.
        reason: String,
    },
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "journal {}: {source}", path.display()),
            Self::Locked { path } => write!(
                f,
                "another pipeline is using this folder (it holds {}); wait for it to end or pass another --cache-dir",
                path.display()
            ),
            Self::TooLarge { len, max } => write!(
                f,
                "a record of {len} bytes is over the journal's limit of {max} bytes per line"
            ),
            Self::Corrupt { path, line, reason } => write!(
                f,
                "journal {} is damaged at line {line} ({reason}); move it away to start over",
                path.display()
            ),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Locked { .. } | Self::TooLarge { .. } | Self::Corrupt { .. } => None,
        }
    }
}

/// An open journal, ready to append to. It holds the folder's lock until dropped.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// The length of the whole lines written: where a failed append is cut back to.
    len: u64,
    max_line: usize,
    _lock: LockFile,
    #[cfg(test)]
    fail_after: Option<usize>,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, takes its lock, and replays it.
    ///
    /// # Errors
    ///
    /// [`JournalError::Locked`] if another run holds the folder; [`JournalError::Io`] if the
    /// directory or file cannot be created, read or truncated; [`JournalError::Corrupt`] if a
    /// line other than the last is malformed.
    pub fn open(dir: &Path) -> Result<(Self, Replay), JournalError> {
        let path = dir.join(JOURNAL_FILE);
        let io_err = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        durable::create_dir_all(dir).map_err(io_err)?;
        let lock_path = dir.join(LOCK_FILE);
        let Some(lock) = LockFile::try_lock(lock_path.clone()).map_err(io_err)? else {
            return Err(JournalError::Locked { path: lock_path });
        };
        let existed = path.exists();
        let file = durable::open_append(&path).map_err(io_err)?;
        if !existed {
            // The new file's name must survive a power cut as its first lines do.
            durable::sync_dir(dir).map_err(io_err)?;
        }
        let (replay, good_len) = replay::replay(&path, &file)?;
        if replay.dropped_torn_line {
            file.set_len(good_len).map_err(io_err)?;
            file.sync_data().map_err(io_err)?;
        }
        let journal = Self {
            path,
            file,
            len: good_len,
            max_line: usize::MAX,
            _lock: lock,
            #[cfg(test)]
            fail_after: None,
        };
        Ok((journal, replay))
    }

    /// Refuses records longer than `max` bytes as a line ([`JournalError::TooLarge`]), so that
    /// no page larger than the pipeline's body cap ever lands in the journal (and is replayed by
    /// every later run).
    #[must_use]
    pub fn with_max_line(mut self, max: usize) -> Self {
        self.max_line = max;
        self
    }

    /// Appends `records` as whole lines and syncs them to disk before returning.
    ///
    /// # Errors
    ///
    /// [`JournalError::TooLarge`] (nothing written) if a record is over the line limit;
    /// [`JournalError::Io`] if the write or the sync fails, after cutting the file back to its
    /// last whole line.
    pub fn append(&mut self, records: &[Record]) -> Result<(), JournalError> {
        let mut buf = Vec::new();
        for record in records {
            let start = buf.len();
            serde_json::to_writer(&mut buf, record).expect("records always serialize");
            buf.push(b'\n');
            let len = buf.len() - start;
            if len > self.max_line {
                return Err(JournalError::TooLarge {
                    len,
                    max: self.max_line,
                });
            }
        }
        match self.write_synced(&buf) {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(source) => {
                // Cut a partial write back off, or the next append would follow half a line.
                if let Err(error) = self.file.set_len(self.len) {
                    tracing::error!(%error, "journal: cannot cut a failed append back off");
                }
                Err(JournalError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    fn write_synced(&mut self, buf: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(after) = self.fail_after.take() {
            self.file.write_all(&buf[..after.min(buf.len())])?;
            return Err(io::Error::other("injected write failure"));
        }
        self.file.write_all(buf)?;
        self.file.sync_data()
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The length of the journal's whole lines, in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the journal holds no line.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the file really ends (tests check that a failed append left nothing behind).
    #[cfg(test)]
    fn file_len(&mut self) -> u64 {
        self.file.metadata().map_or(u64::MAX, |m| m.len())
    }
}
