//! Group commit: one thread makes the journal durable for everyone waiting, off the async
//! executor.
//!
//! Callers append their records under the ledger's lock (a write to the page cache, so a
//! `kill -9` right after cannot lose them) and, for a reservation, wait until the committer has
//! synced past their record. The committer syncs whatever was appended since its last sync, so
//! concurrent reservations share one `fdatasync`. When the journal must be rewritten (a failed
//! append or sync, or compaction) the committer does that instead, staging the new file without
//! holding the ledger's lock. Closing the store tries one last rewrite of a dirty journal, and
//! a record waited on after the store closed fails at once rather than waiting forever.
//!
//! Lock order: the ledger's lock (`Shared::locked`) before the commit lock (`Shared::commit`);
//! the committer never holds both.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;

use super::Shared;

/// How long the committer waits before trying a failed rewrite again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

// 0: pending.
const DURABLE: u8 = 1;
const FAILED: u8 = 2;

/// What a waiting record learns from the committer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Durable,
    Failed,
}

/// One waiter's place in line.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    status: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl Slot {
    fn outcome(&self) -> Option<Outcome> {
        match self.status.load(Ordering::Acquire) {
            DURABLE => Some(Outcome::Durable),
            FAILED => Some(Outcome::Failed),
            _ => None,
        }
    }

    /// The outcome, or `Pending` with `cx`'s waker registered.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        if let Some(outcome) = self.outcome() {
            return Poll::Ready(outcome);
        }
        *self.waker.lock() = Some(cx.waker().clone());
        // The committer may have finished between the first look and the registration.
        self.outcome().map_or(Poll::Pending, Poll::Ready)
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
    }
}

/// The committer's bookkeeping, under `Shared::commit`.
#[derive(Debug, Default)]
pub(crate) struct Commit {
    /// Every record with a sequence number up to this is durable.
    synced: u64,
    waiters: Vec<(u64, Arc<Slot>)>,
    /// Why the last durability attempt failed.
    last_error: Option<String>,
    /// The committer has stopped: nothing not yet durable ever will be.
    closed: bool,
}

impl Commit {
    pub(crate) fn last_error(&self) -> String {
        self.last_error
            .clone()
            .unwrap_or_else(|| String::from("the journal could not be made durable"))
    }
}

/// A slot that resolves once record `seq` is durable (at once if it already is).
pub(crate) fn register(shared: &Shared, seq: u64) -> Arc<Slot> {
    let slot = Arc::new(Slot::default());
    let mut commit = shared.commit.lock();
    if commit.synced >= seq {
        slot.status.store(DURABLE, Ordering::Release);
    } else if commit.closed {
        // Waited on after the store closed (a settle holding the last handle on the ledger):
        // nobody is left to make it durable.
        slot.status.store(FAILED, Ordering::Release);
    } else {
        commit.waiters.push((seq, Arc::clone(&slot)));
    }
    slot
}

/// Blocks this thread until `slot` resolves.
pub(crate) fn wait(shared: &Shared, slot: &Slot) -> Outcome {
    let mut commit = shared.commit.lock();
    loop {
        if let Some(outcome) = slot.outcome() {
            return outcome;
        }
        shared.done.wait(&mut commit);
    }
}

/// Resolves every waiter up to `through`: durable, or failed with `error`.
fn complete(shared: &Shared, through: u64, error: Option<&std::io::Error>) {
    resolve(shared, through, error, false);
}

/// [`complete`], for the last time: every waiter, now or later, is resolved.
fn close(shared: &Shared, through: u64, error: Option<&std::io::Error>) {
    resolve(shared, through, error, true);
}

fn resolve(shared: &Shared, through: u64, error: Option<&std::io::Error>, last: bool) {
    let status = if error.is_some() { FAILED } else { DURABLE };
    let mut woken = Vec::new();
    {
        let mut commit = shared.commit.lock();
        commit.closed |= last;
        match error {
            None => commit.synced = commit.synced.max(through),
            Some(e) => commit.last_error = Some(e.to_string()),
        }
        commit.waiters.retain(|(seq, slot)| {
            let beyond = *seq > through;
            if beyond && !last {
                return true;
            }
            // Under the commit lock, so that a thread in `wait` cannot miss it. At the close,
            // a record past what was made durable never will be.
            let status = if beyond { FAILED } else { status };
            slot.status.store(status, Ordering::Release);
            woken.push(Arc::clone(slot));
            false
        });
    }
    shared.done.notify_all();
    for slot in woken {
        slot.wake();
    }
}

/// The committer thread's loop; returns when the store is dropped.
pub(crate) fn run(shared: &Shared) {
    let mut synced = 0u64;
    let mut pause = false;
    // Whether the one rewrite tried at shutdown for a dirty journal was tried.
    let mut last_rewrite = false;
    loop {
        let mut locked = shared.locked.lock();
        // Closing does not wait: its one last try goes at once.
        if pause && !locked.shutdown {
            let _ = shared.work.wait_for(&mut locked, RETRY_PAUSE);
            pause = false;
        }
        while !locked.shutdown
            && !locked.journal.wants_rewrite()
            && locked.journal.written() <= synced
        {
            shared.work.wait(&mut locked);
        }
        let disk = Arc::clone(locked.journal.disk());
        let dirty = locked.journal.file_to_sync().is_none();
        if locked.shutdown && dirty && !last_rewrite {
            // What the file refused is still in the copy: one more try to write it out, so
            // that closing the store never drops records (a settle above its reservation's
            // cost would be lost for good).
            last_rewrite = true;
        } else if locked.shutdown {
            let target = locked.journal.written();
            let file = locked.journal.file_to_sync();
            drop(locked);
            // Make what was written durable; whatever cannot be is reported failed.
            let result = match file {
                Some(file) if target > synced => disk.sync(&file),
                Some(_) => Ok(()),
                None => Err(std::io::Error::other("the journal was dirty at shutdown")),
            };
            close(shared, target, result.as_ref().err());
            return;
        }
        if locked.journal.wants_rewrite() {
            let rewrite = {
                let locked = &mut *locked;
                locked
                    .journal
                    .begin_rewrite(&locked.state.windows, locked.now)
            };
            let path = locked.journal.path().to_owned();
            drop(locked);
            let staged = disk.stage(&path, &rewrite.bytes);
            let installed = {
                let mut locked = shared.locked.lock();
                let installed = match staged {
                    Ok(staged) => locked.journal.install(&rewrite, staged),
                    Err(e) => Err(e),
                };
                if let Err(e) = &installed {
                    locked.journal.abort_rewrite(e);
                }
                installed
            };
            match installed.map(|()| disk.sync_dir(&path)) {
                Ok(Ok(())) => {
                    synced = synced.max(rewrite.through);
                    complete(shared, rewrite.through, None);
                }
                Ok(Err(error)) => {
                    // Installed, but the rename might not survive a power cut: again.
                    shared.locked.lock().journal.mark_dirty(&error);
                    pause = true;
                }
                Err(error) => {
                    if rewrite.repair {
                        // Nothing appended since the failure is durable: refuse what waits.
                        complete(shared, rewrite.through, Some(&error));
                        pause = true;
                    }
                }
            }
            continue;
        }
        let target = locked.journal.written();
        let file = locked.journal.file_to_sync();
        drop(locked);
        let Some(file) = file else { continue };
        match disk.sync(&file) {
            Ok(()) => {
                synced = target;
                complete(shared, target, None);
            }
            Err(error) => shared.locked.lock().journal.mark_dirty(&error),
        }
    }
}
