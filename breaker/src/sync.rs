//! The atomics and the lock the breaker's state is made of: std's (and `parking_lot`'s), or
//! loom's when the crate is built with `--cfg tollway_loom` for the model checks.

#[cfg(tollway_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};
#[cfg(not(tollway_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};

pub(crate) use std::sync::atomic::Ordering;

/// A mutex for short critical sections that never panic inside.
#[derive(Debug)]
pub(crate) struct Lock<T>(
    #[cfg(not(tollway_loom))] parking_lot::Mutex<T>,
    #[cfg(tollway_loom)] loom::sync::Mutex<T>,
);

impl<T> Lock<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(tollway_loom))]
        return Self(parking_lot::Mutex::new(value));
        #[cfg(tollway_loom)]
        return Self(loom::sync::Mutex::new(value));
    }

    #[cfg(not(tollway_loom))]
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
        self.0.lock()
    }

    #[cfg(tollway_loom)]
    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().expect("no critical section panics")
    }
}
