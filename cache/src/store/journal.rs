//! The folder's journal: which entries exist and how large they are, shared by every process
//! that uses the folder, so the byte cap holds for the folder and not per process.
//!
//! `<root>/journal` is a 16-byte header (magic, then a random generation number) followed by
//! fixed 45-byte records, each `Put(key, size)` or `Remove(key)` with its own checksum. Every
//! change to the folder's entries (a rename into place, an eviction, a removal) happens while
//! holding the folder lock (`<root>/folder.lock`, a `flock`), together with its record, after
//! reading the records other processes appended since this one last looked. So each process's
//! index is the folder's, and the process that writes evicts whatever, folder-wide, it sees as
//! least recently used (recency is each process's own view; sizes are exact).
//!
//! The journal errs on the side of counting too much, never too little: a removal is recorded
//! after the file is gone, and a write reserves the larger of its old and new sizes before
//! the rename. A crash between the two leaves a record that overstates, never a file it does
//! not count. A torn record at the end (a crash mid-append) is cut off by the next process to
//! take the lock. The journal is not fsynced: after a power cut, the folder scan that every
//! [`DiskStore::open`](super::DiskStore::open) does rebuilds it from the files themselves.
//! When it holds far more records than entries, the writer rewrites it with a new generation,
//! and the other processes, seeing the new generation, read it afresh.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use tollway_core::durable;

use super::index::Index;
use super::memory::MemoryTier;
use crate::key::CacheKey;

/// The journal's file name in the cache folder.
pub(crate) const JOURNAL: &str = "journal";
/// The folder lock's file name.
pub(crate) const FOLDER_LOCK: &str = "folder.lock";

const MAGIC: &[u8; 8] = b"TWJRNL01";
const HEADER_LEN: u64 = 16;
const RECORD_LEN: usize = 1 + 32 + 8 + 4;
const PUT: u8 = 1;
const REMOVE: u8 = 2;

/// One change to the folder's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// `key`'s file holds (at most) this many bytes.
    Put(CacheKey, u64),
    /// `key` has no file.
    Remove(CacheKey),
}

impl Record {
    fn encode(self, out: &mut Vec<u8>) {
        let start = out.len();
        let (op, key, size) = match self {
            Self::Put(key, size) => (PUT, key, size),
            Self::Remove(key) => (REMOVE, key, 0),
        };
        out.push(op);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        let check = check(&out[start..]);
        out.extend_from_slice(&check);
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (body, tail) = bytes.split_at_checked(RECORD_LEN - 4)?;
        if tail.len() != 4 || check(body) != tail {
            return None;
        }
        let key = CacheKey::from_bytes(body[1..33].try_into().ok()?);
        let size = u64::from_le_bytes(body[33..41].try_into().ok()?);
        match body[0] {
            PUT => Some(Self::Put(key, size)),
            REMOVE => Some(Self::Remove(key)),
            _ => None,
        }
    }
}

fn check(bytes: &[u8]) -> [u8; 4] {
    let hash = twox_hash::XxHash3_128::oneshot(bytes).to_le_bytes();
    [hash[0], hash[1], hash[2], hash[3]]
}

/// How far this process has read the journal.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cursor {
    generation: u64,
    offset: u64,
    records: u64,
}

/// The journal, open and caught up, while the caller holds the folder lock.
#[derive(Debug)]
pub(crate) struct Txn<'a> {
    file: File,
    cursor: &'a mut Cursor,
    index: &'a parking_lot::Mutex<Index>,
    memory: &'a MemoryTier,
}

impl<'a> Txn<'a> {
    /// Opens the journal in `root` and applies what other processes appended. `None` if it is
    /// missing or not a journal: the caller rebuilds it from a folder scan.
    pub(crate) fn begin(
        root: &Path,
        cursor: &'a mut Cursor,
        index: &'a parking_lot::Mutex<Index>,
        memory: &'a MemoryTier,
    ) -> io::Result<Option<Self>> {
        let mut file = match durable::private_options()
            .read(true)
            .append(true)
            .open(root.join(JOURNAL))
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let mut header = [0; HEADER_LEN as usize];
        if len < HEADER_LEN || file.read_exact(&mut header).is_err() || &header[..8] != MAGIC {
            return Ok(None);
        }
        let generation = u64::from_le_bytes(header[8..].try_into().unwrap_or_default());
        if generation != cursor.generation || cursor.offset > len || cursor.offset < HEADER_LEN {
            // Rewritten by another process (or never read): start over from its records.
            index.lock().clear();
            memory.clear();
            *cursor = Cursor {
                generation,
                offset: HEADER_LEN,
                records: 0,
            };
        }
        let mut txn = Self {
            file,
            cursor,
            index,
            memory,
        };
        txn.catch_up(len)?;
        Ok(Some(txn))
    }

    fn catch_up(&mut self, len: u64) -> io::Result<()> {
        if len == self.cursor.offset {
            return Ok(());
        }
        self.file.seek(SeekFrom::Start(self.cursor.offset))?;
        let mut tail = Vec::new();
        self.file.read_to_end(&mut tail)?;
        let mut good = 0;
        {
            let mut index = self.index.lock();
            for chunk in tail.chunks(RECORD_LEN) {
                let Some(record) = Record::decode(chunk) else {
                    break;
                };
                apply(&mut index, record);
                // Another process's write or removal: whatever this one holds in memory for
                // the key is no longer what the disk holds.
                let (Record::Put(key, _) | Record::Remove(key)) = record;
                self.memory.remove(&key);
                good += RECORD_LEN;
                self.cursor.records += 1;
            }
        }
        self.cursor.offset += good as u64;
        if good < tail.len() {
            // A record torn by a crash mid-append (we hold the lock: nobody is appending).
            tracing::warn!(
                bytes = tail.len() - good,
                "cutting a torn record off the cache journal"
            );
            self.file.set_len(self.cursor.offset)?;
        }
        Ok(())
    }

    /// The size the journal records for `key`.
    pub(crate) fn size_of(&self, key: &CacheKey) -> Option<u64> {
        self.index.lock().size_of(key)
    }

    /// The bytes the journal records in all.
    pub(crate) fn total(&self) -> u64 {
        self.index.lock().total()
    }

    /// The least recently used entry other than `keep` (still indexed).
    pub(crate) fn lru_except(&self, keep: &CacheKey) -> Option<CacheKey> {
        self.index.lock().lru_except(keep)
    }

    /// Appends `records` and applies them to the index. On failure the journal is cut back to
    /// where it was, so no torn record stays behind a good one.
    pub(crate) fn append(&mut self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(records.len() * RECORD_LEN);
        for record in records {
            record.encode(&mut bytes);
        }
        if let Err(e) = self.file.write_all(&bytes) {
            let _ = self.file.set_len(self.cursor.offset);
            return Err(e);
        }
        self.cursor.offset += bytes.len() as u64;
        self.cursor.records += records.len() as u64;
        let mut index = self.index.lock();
        for record in records {
            apply(&mut index, *record);
        }
        Ok(())
    }

    /// Rewrites the journal from the index when it holds many times more records than
    /// entries.
    pub(crate) fn finish(self, root: &Path) -> io::Result<()> {
        let live = self.index.lock().len() as u64;
        if self.cursor.records > 4 * live + 1024 {
            // A snapshot, so the index's mutex is not held across the write.
            let entries: Vec<_> = self.index.lock().by_use().collect();
            *self.cursor = rewrite(root, &entries)?;
        }
        Ok(())
    }
}

fn apply(index: &mut Index, record: Record) {
    match record {
        Record::Put(key, size) => index.touch(key, size),
        Record::Remove(key) => index.remove(&key),
    }
}

/// Replaces the journal with one `Put` per entry (least recently used first), under a new
/// generation. The caller holds the folder lock.
pub(crate) fn rewrite(root: &Path, entries: &[(CacheKey, u64)]) -> io::Result<Cursor> {
    let generation = rand::random::<u64>();
    let mut bytes = Vec::with_capacity(HEADER_LEN as usize + entries.len() * RECORD_LEN);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&generation.to_le_bytes());
    for &(key, size) in entries {
        Record::Put(key, size).encode(&mut bytes);
    }
    durable::write_atomic(root.join(JOURNAL), &bytes)?;
    Ok(Cursor {
        generation,
        offset: bytes.len() as u64,
        records: entries.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u8) -> CacheKey {
        CacheKey::from_bytes([n; 32])
    }

    #[test]
    fn records_round_trip_and_any_flipped_byte_is_refused() {
        for record in [Record::Put(k(3), 12_345), Record::Remove(k(4))] {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            assert_eq!(bytes.len(), RECORD_LEN);
            assert_eq!(Record::decode(&bytes), Some(record));
            for at in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[at] ^= 0x10;
                assert_eq!(Record::decode(&bad), None, "byte {at}");
            }
            assert_eq!(Record::decode(&bytes[..RECORD_LEN - 1]), None);
        }
    }
}
