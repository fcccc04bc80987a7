//! A type-erased [`Clock`], so policies and budgets are not generic over it.

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tollway_core::Clock;

trait DynClock: Send + Sync {
    fn now(&self) -> Instant;
    fn system_now(&self) -> SystemTime;
}

impl<K: Clock> DynClock for K {
    fn now(&self) -> Instant {
        Clock::now(self)
    }

    fn system_now(&self) -> SystemTime {
        Clock::system_now(self)
    }
}

/// Any [`Clock`], behind an `Arc`.
#[derive(Clone)]
pub(crate) struct SharedClock(Arc<dyn DynClock>);

impl SharedClock {
    pub(crate) fn new(clock: impl Clock) -> Self {
        Self(Arc::new(clock))
    }

    pub(crate) fn now(&self) -> Instant {
        self.0.now()
    }

    pub(crate) fn system_now(&self) -> SystemTime {
        self.0.system_now()
    }
}

impl Default for SharedClock {
    fn default() -> Self {
        Self::new(tollway_core::TokioClock)
    }
}

impl fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedClock")
    }
}
