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
//! opening fails with [`JournalError::Corrupt`] and the file is left as it is.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The journal's file name inside the cache directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";

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
            Self::Corrupt { .. } => None,
        }
    }
}

/// What a user's entries in the journal say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserState {
    /// Every page is held.
    Done,
    /// Failed for good, with the reason.
    Failed(String),
    /// The cursor of the next page to fetch (empty for the first).
    Next(String),
}

/// What the journal held when it was opened.
#[derive(Debug, Default)]
pub struct Replay {
    /// `(user_id, page_id)` → (`next_page_id`, number of followers).
    pages: HashMap<(String, String), (Option<String>, usize)>,
    failed: BTreeMap<String, String>,
    /// Dead letters written by earlier runs, for inspection.
    pub dead_letters: Vec<DeadLetter>,
    /// A torn last line was dropped.
    pub dropped_torn_line: bool,
}

impl Replay {
    /// Where `user_id` stands, and the pages and followers already held for it.
    pub fn user(&self, user_id: &str) -> (UserState, u64, u64) {
        if let Some(reason) = self.failed.get(user_id) {
            return (UserState::Failed(reason.clone()), 0, 0);
        }
        let (mut pages, mut followers) = (0, 0);
        let mut cursor = String::new();
        // Bounded by the number of pages held, so a (corrupt) cycle cannot loop forever.
        for _ in 0..=self.pages.len() {
            match self.pages.get(&(user_id.to_owned(), cursor.clone())) {
                None => return (UserState::Next(cursor), pages, followers),
                Some((next, count)) => {
                    pages += 1;
                    followers += *count as u64;
                    match next {
                        None => return (UserState::Done, pages, followers),
                        Some(next) => cursor.clone_from(next),
                    }
                }
            }
        }
        (UserState::Next(cursor), pages, followers)
    }

    /// How many distinct pages the journal holds.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }
}

/// An open journal, ready to append to.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` and replays it.
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`] if the directory or file cannot be created, read or truncated;
    /// [`JournalError::Corrupt`] if a line other than the last is malformed.
    pub fn open(dir: &Path) -> Result<(Self, Replay), JournalError> {
        let path = dir.join(JOURNAL_FILE);
        let io_err = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err)?;
        let (replay, good_len) = replay(&path, &file)?;
        if replay.dropped_torn_line {
            file.set_len(good_len).map_err(io_err)?;
            file.sync_data().map_err(io_err)?;
        }
        Ok((Self { path, file }, replay))
    }

    /// Appends `records` as whole lines and syncs them to disk before returning.
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`] if the write or the sync fails.
    pub fn append(&mut self, records: &[Record]) -> Result<(), JournalError> {
        let mut buf = Vec::new();
        for record in records {
            serde_json::to_writer(&mut buf, record).expect("records always serialize");
            buf.push(b'\n');
        }
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every record into `each`; returns the length of the well-formed prefix and whether a
/// torn last line followed it.
fn read_records(
    path: &Path,
    file: &File,
    mut each: impl FnMut(Record),
) -> Result<(u64, bool), JournalError> {
    let mut reader = BufReader::new(file);
    let mut good_len = 0u64;
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| JournalError::Io {
                path: path.to_owned(),
                source,
            })?;
        if read == 0 {
            return Ok((good_len, false));
        }
        number += 1;
        let complete = line.last() == Some(&b'\n');
        match serde_json::from_slice::<Record>(&line) {
            Ok(record) if complete => {
                good_len += read as u64;
                each(record);
            }
            // A last line without its newline was cut off mid-append, even if it parses.
            Ok(_) => return Ok((good_len, true)),
            Err(error) => {
                let is_last = reader.fill_buf().map(<[u8]>::is_empty).unwrap_or(false);
                if is_last {
                    return Ok((good_len, true));
                }
                return Err(JournalError::Corrupt {
                    path: path.to_owned(),
                    line: number,
                    reason: error.to_string(),
                });
            }
        }
    }
}

fn replay(path: &Path, file: &File) -> Result<(Replay, u64), JournalError> {
    let mut replay = Replay::default();
    let (good_len, torn) = read_records(path, file, |record| match record {
        Record::Page(page) => {
            replay.pages.insert(
                (page.user_id, page.page_id),
                (page.next_page_id, page.followers.len()),
            );
        }
        Record::UserFailed(failure) => {
            replay.failed.insert(failure.user_id, failure.reason);
        }
        Record::DeadLetter(letter) => replay.dead_letters.push(letter),
    })?;
    replay.dropped_torn_line = torn;
    Ok((replay, good_len))
}

/// Every follower the journal in `dir` holds, per user, in page order (a user whose crawl is
/// unfinished has the pages held so far). Reads only; a torn last line is skipped.
///
/// # Errors
///
/// As [`Journal::open`], and [`JournalError::Io`] if there is no journal.
pub fn load_followers(
    dir: &Path,
) -> Result<BTreeMap<String, Vec<serde_json::Value>>, JournalError> {
    let path = dir.join(JOURNAL_FILE);
    let file = File::open(&path).map_err(|source| JournalError::Io {
        path: path.clone(),
        source,
    })?;
    let mut pages: HashMap<(String, String), PageRecord> = HashMap::new();
    read_records(&path, &file, |record| {
        if let Record::Page(page) = record {
            pages.insert((page.user_id.clone(), page.page_id.clone()), page);
        }
    })?;
    let users: std::collections::BTreeSet<String> =
        pages.keys().map(|(user, _)| user.clone()).collect();
    let mut out = BTreeMap::new();
    for user in users {
        let mut followers = Vec::new();
        let mut cursor = String::new();
        while let Some(page) = pages.remove(&(user.clone(), cursor)) {
            followers.extend(page.followers);
            match page.next_page_id {
                Some(next) => cursor = next,
                None => break,
            }
        }
        out.insert(user, followers);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tollway-queue-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn page(user: &str, page_id: &str, next: Option<&str>, followers: usize) -> Record {
        Record::Page(PageRecord {
            user_id: user.to_owned(),
            page_id: page_id.to_owned(),
            next_page_id: next.map(str::to_owned),
            followers: (0..followers)
                .map(|i| serde_json::json!({ "pk": i }))
                .collect(),
        })
    }

    #[test]
    fn replay_follows_each_users_chain() {
        let dir = temp_dir("chain");
        let (mut journal, replay) = Journal::open(&dir).unwrap();
        assert_eq!(replay.user("a"), (UserState::Next(String::new()), 0, 0));
        journal
            .append(&[
                page("a", "", Some("p2"), 3),
                page("b", "", None, 2),
                page("a", "p2", Some("p3"), 4),
            ])
            .unwrap();
        journal
            .append(&[Record::UserFailed(UserFailure {
                user_id: "c".to_owned(),
                reason: "not found".to_owned(),
            })])
            .unwrap();
        drop(journal);

        let (_, replay) = Journal::open(&dir).unwrap();
        assert_eq!(replay.user("a"), (UserState::Next("p3".to_owned()), 2, 7));
        assert_eq!(replay.user("b"), (UserState::Done, 1, 2));
        assert_eq!(
            replay.user("c"),
            (UserState::Failed("not found".to_owned()), 0, 0)
        );
        assert_eq!(replay.page_count(), 3);
        let followers = load_followers(&dir).unwrap();
        assert_eq!(followers["a"].len(), 7);
        assert_eq!(followers["b"].len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_truncated() {
        let dir = temp_dir("torn");
        let (mut journal, _) = Journal::open(&dir).unwrap();
        journal.append(&[page("a", "", Some("p2"), 1)]).unwrap();
        drop(journal);
        let path = dir.join(JOURNAL_FILE);
        let whole = fs::read(&path).unwrap();
        // Half of a second record, as a kill mid-append leaves it.
        let mut torn = whole.clone();
        torn.extend_from_slice(&whole[..whole.len() / 2]);
        fs::write(&path, &torn).unwrap();

        let (mut journal, replay) = Journal::open(&dir).unwrap();
        assert!(replay.dropped_torn_line);
        assert_eq!(replay.user("a").0, UserState::Next("p2".to_owned()));
        assert_eq!(fs::read(&path).unwrap(), whole, "the torn tail is cut off");
        journal.append(&[page("a", "p2", None, 1)]).unwrap();
        drop(journal);
        let (_, replay) = Journal::open(&dir).unwrap();
        assert!(!replay.dropped_torn_line);
        assert_eq!(replay.user("a"), (UserState::Done, 2, 2));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_complete_line_without_newline_counts_as_torn() {
        let dir = temp_dir("nonewline");
        fs::create_dir_all(&dir).unwrap();
        let line = serde_json::to_string(&page("a", "", None, 1)).unwrap();
        fs::write(dir.join(JOURNAL_FILE), line).unwrap();
        let (_, replay) = Journal::open(&dir).unwrap();
        assert!(replay.dropped_torn_line);
        assert_eq!(replay.user("a").0, UserState::Next(String::new()));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damage_before_the_last_line_is_an_error_and_nothing_is_lost() {
        let dir = temp_dir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        let good = serde_json::to_string(&page("a", "", None, 1)).unwrap();
        let content = format!("{good}\nnot json\n{good}\n");
        fs::write(dir.join(JOURNAL_FILE), &content).unwrap();
        let error = Journal::open(&dir).unwrap_err();
        assert!(
            matches!(error, JournalError::Corrupt { line: 2, .. }),
            "{error}"
        );
        assert_eq!(fs::read_to_string(dir.join(JOURNAL_FILE)).unwrap(), content);
        fs::remove_dir_all(&dir).unwrap();
    }
}
