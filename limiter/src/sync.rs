//! The synchronisation primitives of the lock-free state, swapped for loom's under `cfg(tollway_loom)`
//! so that the model checks in `loom_tests` explore every interleaving of the real code.

#[cfg(all(test, tollway_loom))]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(all(test, tollway_loom)))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A mutex with parking_lot's interface (`lock` returns the guard).
#[cfg(not(all(test, tollway_loom)))]
pub(crate) type Mutex<T> = parking_lot::Mutex<T>;

#[cfg(all(test, tollway_loom))]
#[derive(Debug)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(all(test, tollway_loom))]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One turn of waiting for another thread to finish a short critical section (a quota change
/// holds a bucket for a few stores).
#[inline]
pub(crate) fn spin_wait(turns: &mut u32) {
    #[cfg(all(test, tollway_loom))]
    {
        let _ = turns;
        loom::thread::yield_now();
    }
    #[cfg(not(all(test, tollway_loom)))]
    {
        *turns += 1;
        if *turns < 64 {
            std::hint::spin_loop();
        } else {
            // The writer was preempted: let it run.
            std::thread::yield_now();
        }
    }
}
