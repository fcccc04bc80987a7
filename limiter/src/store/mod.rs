//! Where a limiter keeps its state: [`MemoryStore`] (this process: lock-free GCRA words, the
//! default) or `fleet::RedisStore` (feature `redis`: shared by every process of a fleet).
//!
//! A [`RateLimiter`](crate::RateLimiter) is generic over its store, with the memory store as
//! the default, so the in-memory hot path is compiled for it alone: no branch, no virtual call
//! for fleet mode. The limiter owns what every store shares (the quotas as set, the fair queue
//! of waiters, pauses, AIMD); the store decides admissions: at once from atomic words, or at
//! the head of the queue after a round trip.
//!
//! The trait is sealed: the stores are this crate's.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use tollway_core::{BoxError, RateLimited};

use crate::clock::LimiterClock;
use crate::gcra::Grant;
use crate::limiter::Shared;
use crate::queue::{Acquire, WaitQueue};

mod memory;

pub use memory::MemoryStore;

/// A limiter's state: [`MemoryStore`] or `fleet::RedisStore`. Sealed.
pub trait Store<C: LimiterClock>: backend::Backend<C> {}

impl<C: LimiterClock, T: backend::Backend<C>> Store<C> for T {}

/// What a caller that finds no free permit should do, as its store sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Enqueue {
    /// The permit is free after all: take it (nobody is queued).
    Admit(Grant),
    /// It is due in this many nanoseconds (bounded by `max_wait` before queueing).
    Wait(u64),
    /// Only the store knows: queue, and the head asks it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Ask,
}

/// Fleet-mode settings a builder carries until it builds a shared store (read only there).
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct SharedOptions {
    pub(crate) fail_open: Option<crate::quota::Quota>,
    pub(crate) lease: Option<(std::num::NonZeroU32, Duration)>,
    pub(crate) timeout: Duration,
    pub(crate) retry: Duration,
}

impl Default for SharedOptions {
    fn default() -> Self {
        Self {
            fail_open: None,
            lease: None,
            timeout: Duration::from_secs(1),
            retry: Duration::from_secs(1),
        }
    }
}

// The sealed half: public in a private module, so that `Store` can be named in bounds but not
// implemented outside this crate. Its methods see the limiter's private state.
#[allow(unreachable_pub, private_interfaces, private_bounds)]
pub(crate) mod backend {
    use super::{
        Acquire, BoxError, Context, Enqueue, LimiterClock, Poll, RateLimited, Shared, WaitQueue,
        fmt,
    };
    use crate::gcra::Grant;

    /// A store's decisions.
    pub trait Backend<C: LimiterClock>: fmt::Debug + Sized + Send + Sync + 'static {
        /// What the head of the queue keeps between polls (a round trip in flight).
        type Head: Default + Send + Sync + Unpin;

        /// A permit at `now` without waiting, or a nominal wait in nanoseconds.
        fn try_now(shared: &Shared<C, Self>, now: u64, cost: u32) -> Result<Grant, u64>;

        /// The wait before `cost` would be admitted now, taking nothing (0: now).
        fn peek(shared: &Shared<C, Self>, now: u64, cost: u32) -> u64;

        /// How many cost-1 requests would be admitted now.
        fn available(shared: &Shared<C, Self>, now: u64) -> u64;

        /// What a caller that found no free permit does; `queue` is locked.
        fn enqueue(shared: &Shared<C, Self>, queue: &WaitQueue, now: u64, cost: u32) -> Enqueue;

        /// Drives `acquire`, queued with `ticket`, until it is admitted or refused.
        fn poll_queued(
            acquire: &mut Acquire<C, Self>,
            cx: &mut Context<'_>,
            ticket: u64,
        ) -> Poll<Result<(), RateLimited>>;

        /// The error to report instead of the refusal `head` ended with, if any.
        fn take_failure(_head: &mut Self::Head) -> Option<BoxError> {
            None
        }

        /// A pause until `until` (the limiter's nanoseconds, `duration` from now) was
        /// ordered: shared stores tell the fleet.
        fn paused(_shared: &Shared<C, Self>, _duration: std::time::Duration) {}
    }
}
