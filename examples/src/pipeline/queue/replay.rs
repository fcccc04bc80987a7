//! Reading the journal back: [`Replay`], each user's state, and [`load_followers`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{DeadLetter, JOURNAL_FILE, JournalError, PageRecord, Record};

/// What a user's entries in the journal say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserState {
    /// Every page is held.
    Done,
    /// Failed for good, with the reason.
    Failed(String),
    /// The cursor of the next page to fetch (empty for the first).
    Next(String),
    /// The page at this cursor is held, and its `next_page_id` points back to a page earlier in
    /// the chain: the upstream's cursors loop. The page is asked for again through the stack
    /// (the cache answers while its copy is fresh; after that the upstream, which may have
    /// mended it); if it still loops it goes to the dead letters.
    Loops(String),
}

/// Where a user stands in the journal: see [`Replay::user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserReplay {
    /// What to do next.
    pub state: UserState,
    /// Pages held.
    pub pages: u64,
    /// Followers on them.
    pub followers: u64,
    /// The cursors of the pages held, in chain order (the first page's is empty). With
    /// [`UserState::Loops`], the looping page's cursor is the last.
    pub chain: Vec<String>,
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
    pub fn user(&self, user_id: &str) -> UserReplay {
        let mut replay = UserReplay {
            state: UserState::Next(String::new()),
            pages: 0,
            followers: 0,
            chain: Vec::new(),
        };
        if let Some(reason) = self.failed.get(user_id) {
            replay.state = UserState::Failed(reason.clone());
            return replay;
        }
        let mut seen = HashSet::new();
        let mut cursor = String::new();
        loop {
            let Some((next, count)) = self.pages.get(&(user_id.to_owned(), cursor.clone())) else {
                replay.state = UserState::Next(cursor);
                return replay;
            };
            replay.pages += 1;
            replay.followers += *count as u64;
            seen.insert(cursor.clone());
            replay.chain.push(cursor.clone());
            match next {
                None => {
                    replay.state = UserState::Done;
                    return replay;
                }
                Some(next) if seen.contains(next) => {
                    replay.state = UserState::Loops(cursor);
                    return replay;
                }
                Some(next) => cursor.clone_from(next),
            }
        }
    }

    /// How many distinct pages the journal holds.
    pub fn page_count(&self) -> usize {
        self.pages.len()
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

pub(super) fn replay(path: &Path, file: &File) -> Result<(Replay, u64), JournalError> {
    let mut replay = Replay::default();
    let (good_len, torn) = read_records(path, file, |record| match record {
        // A page journaled again (asked for anew after it looped) replaces the older answer.
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
/// unfinished has the pages held so far; a chain that loops stops before it repeats a page).
/// Reads only; a torn last line is skipped.
///
/// # Errors
///
/// As [`Journal::open`](super::Journal::open), and [`JournalError::Io`] if there is no
/// journal.
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
    let users: BTreeSet<String> = pages.keys().map(|(user, _)| user.clone()).collect();
    let mut out = BTreeMap::new();
    for user in users {
        let mut followers = Vec::new();
        let mut cursor = String::new();
        // Each page is taken out as it is read, so a loop ends at the first repeat.
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
