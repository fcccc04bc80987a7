//! The words a closed-state call's response future reads when the call completes: the
//! consecutive-failure count and the count window's head and running sums.
//!
//! They live in slots that last for the whole process, handed from breaker to breaker (a
//! dropped breaker's slot is reused by the next one made), so that a response future can hold a
//! plain `&'static` reference to them instead of a reference count on the breaker: in the
//! healthy steady state a call takes no atomic read-modify-write at all. When a completing call
//! finds something to record (a failure, or a success while the window holds failures), it
//! reaches the breaker through the slot's owner, checked against the serial it was given, so a
//! result never lands in another breaker that took the slot over.

use std::sync::{Arc, Weak};

use crate::circuit::Circuit;
use crate::sync::{AtomicU64, Lock, Ordering::Relaxed};
use crate::window::{BIAS, holds_at_least, pack};

pub(crate) struct HotWords {
    /// Changes each time the slot passes to another breaker.
    serial: AtomicU64,
    pub(crate) consecutive: AtomicU64,
    pub(crate) head: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) slow: AtomicU64,
    /// The count window's size, 0 without one.
    ring: AtomicU64,
    owner: Lock<Weak<Circuit>>,
}

impl HotWords {
    fn fresh() -> Self {
        Self {
            serial: AtomicU64::new(0),
            consecutive: AtomicU64::new(pack(0, 0)),
            head: AtomicU64::new(pack(0, 0)),
            failures: AtomicU64::new(pack(0, BIAS)),
            slow: AtomicU64::new(pack(0, BIAS)),
            ring: AtomicU64::new(0),
            owner: Lock::new(Weak::new()),
        }
    }

    fn reset(&self, ring: u64) {
        self.consecutive.store(pack(0, 0), Relaxed);
        self.head.store(pack(0, 0), Relaxed);
        self.failures.store(pack(0, BIAS), Relaxed);
        self.slow.store(pack(0, BIAS), Relaxed);
        self.ring.store(ring, Relaxed);
    }

    /// Whether a success of closed `generation` would change nothing: no failure in a row and a
    /// full count window (if any) without failures or slow calls.
    #[inline]
    pub(crate) fn success_is_a_no_op(&self, generation: u64) -> bool {
        if self.consecutive.load(Relaxed) != pack(generation, 0) {
            return false;
        }
        let ring = self.ring.load(Relaxed);
        ring == 0
            || (self.failures.load(Relaxed) == pack(generation, BIAS)
                && self.slow.load(Relaxed) == pack(generation, BIAS)
                && holds_at_least(self.head.load(Relaxed), generation, ring))
    }
}

#[cfg(not(tollway_loom))]
static FREE: parking_lot::Mutex<Vec<&'static HotWords>> = parking_lot::const_mutex(Vec::new());

/// A breaker's slot; given back for reuse when the breaker is dropped.
pub(crate) struct Slot {
    words: &'static HotWords,
    serial: u64,
}

impl Slot {
    /// A slot for the breaker `owner` (being made), with a count window of `ring` calls (0 for
    /// none).
    pub(crate) fn acquire(owner: Weak<Circuit>, ring: u64) -> Self {
        #[cfg(not(tollway_loom))]
        let reused = FREE.lock().pop();
        // Under the model checker every slot is new: its atomics belong to one execution.
        #[cfg(tollway_loom)]
        let reused = None;
        let words: &'static HotWords =
            reused.unwrap_or_else(|| Box::leak(Box::new(HotWords::fresh())));
        let mut current = words.owner.lock();
        words.reset(ring);
        let serial = words.serial.load(Relaxed);
        *current = owner;
        drop(current);
        Self { words, serial }
    }

    #[inline]
    pub(crate) const fn words(&self) -> &'static HotWords {
        self.words
    }

    /// The words, never given back (for tests of the windows alone).
    #[cfg(all(test, not(tollway_loom)))]
    pub(crate) fn leak(self) -> &'static HotWords {
        std::mem::ManuallyDrop::new(self).words
    }

    /// A reference a response future may keep past the breaker.
    #[inline]
    pub(crate) const fn light(&self) -> Light {
        Light {
            words: self.words,
            serial: self.serial,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut owner = self.words.owner.lock();
        *owner = Weak::new();
        // Under the owner lock: a future that checks the serial under it sees the change.
        self.words
            .serial
            .store(self.serial.wrapping_add(1), Relaxed);
        drop(owner);
        #[cfg(not(tollway_loom))]
        FREE.lock().push(self.words);
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("serial", &self.serial)
            .finish()
    }
}

/// What a closed-state response future holds instead of the breaker.
#[derive(Clone, Copy)]
pub(crate) struct Light {
    words: &'static HotWords,
    serial: u64,
}

impl Light {
    #[inline]
    pub(crate) const fn words(&self) -> &'static HotWords {
        self.words
    }

    /// The breaker this reference was given by, if it still exists.
    #[cold]
    pub(crate) fn circuit(&self) -> Option<Arc<Circuit>> {
        let owner = self.words.owner.lock();
        if self.words.serial.load(Relaxed) != self.serial {
            return None;
        }
        owner.upgrade()
    }
}

impl std::fmt::Debug for Light {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Light")
            .field("serial", &self.serial)
            .finish()
    }
}
