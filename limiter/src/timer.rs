//! [`Timer`]: the head of the wait queue sleeps on tokio's timer until its permit is due.

use std::task::{Context, Poll};
#[cfg(not(all(test, tollway_loom)))]
use std::{future::Future, pin::Pin, time::Duration};

/// The head's sleep until its permit is due, on tokio's timer.
#[cfg(not(all(test, tollway_loom)))]
#[derive(Default)]
pub(crate) struct Timer(Option<Pin<Box<tokio::time::Sleep>>>);

#[cfg(not(all(test, tollway_loom)))]
impl Timer {
    /// Sleeps `wait_nanos` from now; ready once that time has passed.
    pub(crate) fn sleep(&mut self, cx: &mut Context<'_>, wait_nanos: u64) -> Poll<()> {
        let deadline = tokio::time::Instant::now()
            .checked_add(Duration::from_nanos(wait_nanos))
            .unwrap_or_else(far_future);
        let sleep = match &mut self.0 {
            Some(sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => self.0.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        sleep.as_mut().poll(cx)
    }
}

/// About 30 years from now: tokio's own idea of "never".
#[cfg(not(all(test, tollway_loom)))]
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// Under the model checker time does not pass: the head waits for a wake-up (a refund, a
/// quota change, the previous head leaving).
#[cfg(all(test, tollway_loom))]
#[derive(Default)]
pub(crate) struct Timer;

#[cfg(all(test, tollway_loom))]
impl Timer {
    pub(crate) fn sleep(&mut self, _cx: &mut Context<'_>, _wait_nanos: u64) -> Poll<()> {
        Poll::Pending
    }
}
