//! The file store: the ledger in memory, every change journaled to a file that survives
//! `kill -9` at any instant.
//!
//! - **Exclusive**: opening takes an advisory lock beside the journal (`<journal>.lock`,
//!   `flock`, released by the kernel when the process dies); a second opener, in this process or
//!   another, gets an error holding [`Locked`](tollway_core::durable::Locked). A journal named
//!   through a symlink is locked (and rewritten) as the file the link names.
//! - **Private**: the journal is `0600`, folders created for it `0700`.
//! - **Durable grants**: a reservation is granted only once its record is synced. Concurrent
//!   reservations share one sync (group commit, on a thread of the store's own, never on the
//!   async executor).
//! - **Never lost, never doubled**: see [`records`] for replay and [`journal`] for what happens
//!   when a write or a sync fails.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use tollway_core::StoreUnavailable;
use tollway_core::durable::{self, LockFile};

use self::commit::{Commit, Outcome};
pub(crate) use self::disk::Disk;
use self::disk::RealDisk;
use self::futures::Reserving;
#[allow(unreachable_pub)]
pub use self::futures::{FileDone, FileReserving};
use self::journal::Journal;
use self::records::{Event, Record, compact, decode_all, replay};
use super::backend::{Backend, Decision, Finish, Grant, SyncBackend};
use super::state::{Latch, State};
use super::{Store, StoreConfig, SyncStore};
use crate::snapshot::Snapshot;

/// How long opening a journal waits for a lock another owner is letting go of.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

mod commit;
mod disk;
mod futures;
mod journal;
mod records;
#[cfg(test)]
mod tests;

/// A ledger journaled to a file: [`LedgerBuilder::open`](crate::LedgerBuilder::open).
///
/// Its state is in memory and every change is appended to the journal; a reservation is granted
/// once its record is durable. After a crash, what the journal holds is replayed: spend is never
/// lower than what was charged (a reservation in flight counts as spent at its full cost) and no
/// reservation is counted twice. One process at a time: the journal is locked while open.
pub struct FileStore {
    shared: Arc<Shared>,
    committer: Option<JoinHandle<()>>,
    _lock: LockFile,
}

/// What the store, its futures and its committer thread share.
pub(crate) struct Shared {
    pub(crate) locked: Mutex<Locked>,
    pub(crate) commit: Mutex<Commit>,
    /// The committer waits here for work (with `locked`).
    pub(crate) work: Condvar,
    /// Synchronous waiters wait here for the committer (with `commit`).
    pub(crate) done: Condvar,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    name: Arc<str>,
}

/// The ledger's state and its journal, under one lock.
#[derive(Debug)]
pub(crate) struct Locked {
    pub(crate) state: State,
    pub(crate) journal: Journal,
    /// The latest time any operation brought (compaction judges windows by it).
    pub(crate) now: i64,
    pub(crate) shutdown: bool,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let locked = self.shared.locked.lock();
        f.debug_struct("FileStore")
            .field("path", &locked.journal.path())
            .field("windows", &locked.state.windows)
            .field("reserved", &locked.state.reserved)
            .field("balance", &locked.state.balance)
            .field("latched", &locked.state.latch.is_some())
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens (or creates) the journal at `path`: locks it, replays it, compacts it.
    pub(crate) fn open(path: &Path, config: &StoreConfig, now: i64) -> io::Result<Self> {
        Self::open_on(path, config, now, Arc::new(RealDisk))
    }

    pub(crate) fn open_on(
        path: &Path,
        config: &StoreConfig,
        now: i64,
        disk: Arc<dyn Disk>,
    ) -> io::Result<Self> {
        // One journal has one lock, whatever name it is opened by: a symlink is followed to
        // the file it names (and a rewrite replaces that file, never the link).
        let path = &follow_links(path)?;
        let folder = durable::parent_dir(path);
        if !folder.exists() {
            durable::create_dir_all(folder)?;
        }
        // A little patience: a holder in this process that just closed the journal may not
        // have let go yet (a child forked meanwhile holds the descriptor until it execs).
        let lock = LockFile::lock_within(lock_path(path), LOCK_PATIENCE)?;
        // A process killed while compacting left its temporary file: ours to sweep, under the
        // lock.
        let swept = durable::remove_stale_temps(path)?;
        if swept > 0 {
            tracing::debug!(path = %path.display(), swept, "budget journal: removed stale temporary files");
        }
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (records, skipped) = decode_all(&bytes);
        if skipped > 0 {
            tracing::warn!(
                path = %path.display(),
                skipped,
                "budget journal: skipped torn or corrupt records"
            );
        }
        // A wall clock behind the journal (stepped back over a restart) must not put its
        // spend in a period that ends before the period it was made in: as while running,
        // time never goes back for the ledger.
        let now = records.iter().filter_map(Record::at).fold(now, i64::max);
        // Reservations still open belonged to a process that died: they count as spent.
        let (events, max_id) = replay(&records, true);
        let mut state = State::new(&config.limits, None, now);
        state.next_id = max_id + 1;
        for event in &events {
            apply(&mut state, event, now);
        }
        state.roll(now);
        let mut compacted = compact(&events, &state.windows, now);
        // The builder's balance is the balance now, unless the journal already knows one.
        if let Some(balance) = config.balance
            && state.balance.is_none()
        {
            state.sync(balance);
            compacted.push(Record::Sync { balance, at: now });
        }
        let journal = Journal::create(path, disk, compacted, config.compact_every)?;
        tracing::info!(
            path = %path.display(),
            records = records.len(),
            spent = ?state.windows.iter().map(|w| w.spent).collect::<Vec<_>>(),
            "budget journal opened"
        );
        let shared = Arc::new(Shared {
            locked: Mutex::new(Locked {
                state,
                journal,
                now,
                shutdown: false,
            }),
            commit: Mutex::new(Commit::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            name: Arc::clone(&config.name),
        });
        let committer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(String::from("tollway-budget-journal"))
                .spawn(move || commit::run(&shared))?
        };
        let store = Self {
            shared,
            committer: Some(committer),
            _lock: lock,
        };
        store.shared.with(now, |_| ());
        Ok(store)
    }

    /// Where the journal is.
    pub fn path(&self) -> PathBuf {
        self.shared.locked.lock().journal.path().to_owned()
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        self.shared.locked.lock().shutdown = true;
        self.shared.work.notify_all();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

/// `path` with every symbolic link in its last component followed.
fn follow_links(path: &Path) -> io::Result<PathBuf> {
    // Linux's own limit on links followed in one lookup.
    const MAX_LINKS: usize = 40;
    let mut path = path.to_owned();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                // A relative target is relative to the link's folder; `join` keeps an absolute
                // one as it is.
                let target = fs::read_link(&path)?;
                path = durable::parent_dir(&path).join(target);
            }
            _ => return Ok(path),
        }
    }
    Err(io::Error::other(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}

/// The lock file beside the journal at `path`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    path.with_file_name(name)
}

/// Applies one replayed event to a fresh state.
fn apply(state: &mut State, event: &Event, now: i64) {
    match *event {
        Event::Charge { amount, at } => state.charge(amount, at, now),
        Event::Pending { cost, .. } => state.reserved = state.reserved.saturating_add(cost),
        Event::Sync { balance } => state.sync(balance),
        Event::Latch { until } => {
            state.latch = Some(Latch {
                until,
                after: state.next_id,
            });
        }
        Event::Reset => state.latch = None,
    }
}

impl Shared {
    /// Runs `f` on the state and journal under the lock; wakes the committer if `f` appended.
    fn with<T>(&self, now: i64, f: impl FnOnce(&mut Locked) -> T) -> T {
        let mut locked = self.locked.lock();
        locked.now = locked.now.max(now);
        let before = locked.journal.written();
        let out = f(&mut locked);
        let appended = locked.journal.written() != before;
        #[cfg(feature = "metrics")]
        locked.state.record_gauges(&self.name);
        drop(locked);
        if appended {
            self.work.notify_one();
        }
        out
    }

    /// Settles or refunds `grant` and journals what changed; returns the last record's number.
    fn finish(&self, grant: &Grant, finish: &Finish, now: i64) -> u64 {
        self.with(now, |locked| {
            let applied = locked.state.finish(grant, finish, now);
            let mut records = Vec::with_capacity(3);
            records.push(match finish.charge {
                Some(charge) => Record::Settle {
                    id: grant.id(),
                    charge,
                    at: now,
                },
                None => Record::Refund { id: grant.id() },
            });
            if let Some(balance) = applied.synced {
                records.push(Record::Sync { balance, at: now });
            }
            if let Some(until) = applied.latched {
                records.push(Record::Latch { until, at: now });
            }
            locked.journal.append(&records)
        })
    }

    /// A grant whose record never became durable, or whose caller gave up: release it.
    fn refund(&self, grant: &Grant) {
        let now = self.locked.lock().now;
        self.finish(grant, &Finish::refund(), now);
    }

    fn failure(&self, operation: &'static str) -> StoreUnavailable {
        let why = self.commit.lock().last_error();
        StoreUnavailable::new("budget", operation, format!("journal not durable: {why}"))
    }
}

impl Store for FileStore {}
impl SyncStore for FileStore {}

impl Backend for FileStore {
    type Reserving = FileReserving;
    type Pending = FileDone;
    type Snapshotting = std::future::Ready<Result<Snapshot, StoreUnavailable>>;

    fn reserve(&self, cost: u64, floor: u64, now: i64) -> FileReserving {
        let shared = &self.shared;
        shared.with(now, |locked| match locked.state.decide(cost, floor, now) {
            Decision::Granted(grant) => {
                let seq = locked.journal.append(&[Record::Reserve {
                    id: grant.id(),
                    cost,
                    at: now,
                }]);
                let slot = commit::register(shared, seq);
                FileReserving(Reserving::Waiting {
                    shared: Arc::clone(shared),
                    grant,
                    slot,
                })
            }
            refused @ Decision::Refused(..) => FileReserving(Reserving::Decided(Some(refused))),
        })
    }

    fn cancel(&self, reserving: FileReserving, _now: i64) {
        if let Reserving::Waiting { shared, grant, .. } = reserving.0 {
            shared.refund(&grant);
        }
    }

    fn finish(&self, grant: Grant, finish: Finish, now: i64) -> FileDone {
        let seq = self.shared.finish(&grant, &finish, now);
        FileDone::new(&self.shared, seq)
    }

    fn latch(&self, now: i64) -> FileDone {
        let seq = self.shared.with(now, |locked| {
            let until = locked.state.set_latch(now);
            locked.journal.append(&[Record::Latch { until, at: now }])
        });
        FileDone::new(&self.shared, seq)
    }

    fn reset(&self, now: i64) -> FileDone {
        let seq = self.shared.with(now, |locked| {
            locked.state.latch = None;
            locked.journal.append(&[Record::Reset { at: now }])
        });
        FileDone::new(&self.shared, seq)
    }

    fn sync_balance(&self, balance: u64, now: i64) -> FileDone {
        let seq = self.shared.with(now, |locked| {
            locked.state.sync(balance);
            locked.journal.append(&[Record::Sync { balance, at: now }])
        });
        FileDone::new(&self.shared, seq)
    }

    fn snapshot(&self, now: i64) -> Self::Snapshotting {
        std::future::ready(Ok(self.snapshot_now(now)))
    }

    fn flush(&self) -> FileDone {
        let seq = self.shared.locked.lock().journal.written();
        FileDone::new(&self.shared, seq)
    }
}

impl SyncBackend for FileStore {
    fn reserve_now(&self, cost: u64, floor: u64, now: i64) -> Result<Decision, StoreUnavailable> {
        match self.reserve(cost, floor, now).0 {
            Reserving::Decided(decision) => Ok(decision.unwrap_or(Decision::Refused(
                tollway_core::ExhaustedReason::Window,
                None,
            ))),
            Reserving::Waiting {
                shared,
                grant,
                slot,
            } => match commit::wait(&shared, &slot) {
                Outcome::Durable => Ok(Decision::Granted(grant)),
                Outcome::Failed => {
                    shared.refund(&grant);
                    Err(shared.failure("reserve"))
                }
            },
        }
    }

    fn snapshot_now(&self, now: i64) -> Snapshot {
        let mut locked = self.shared.locked.lock();
        locked.now = locked.now.max(now);
        locked.state.snapshot(now)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}
