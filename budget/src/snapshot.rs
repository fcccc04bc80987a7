//! What a ledger reports about itself.

use std::time::Duration;

use crate::window::Window;

/// A ledger's state at one instant; see [`Ledger::snapshot`](crate::Ledger::snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Each limit, in the order they were configured.
    pub windows: Vec<WindowUsage>,
    /// Credits held by requests in flight.
    pub reserved: u64,
    /// The upstream balance, if it was ever synced, less what was charged since.
    pub balance: Option<u64>,
    /// Whether a 402 latch holds.
    pub latched: bool,
    /// How long the latch holds unless lifted sooner, if it lifts by itself.
    pub latched_for: Option<Duration>,
    /// What [`Ledger::remaining`](crate::Ledger::remaining) says.
    pub remaining: u64,
    /// The configured critical reserve.
    pub critical_reserve: u64,
    /// A fleet ledger's epoch in Redis (written when the fleet's state was created): keep it
    /// to [rejoin](crate::LedgerBuilder::redis_rejoin) after a restart. `None` elsewhere.
    pub epoch: Option<u64>,
}

/// One limit's usage in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WindowUsage {
    /// The window.
    pub window: Window,
    /// Credits allowed per window.
    pub limit: u64,
    /// Credits charged in the current window.
    pub spent: u64,
    /// Credits left for new reservations (after those in flight).
    pub remaining: u64,
    /// Time until the window next gives credit back, if it ever does.
    pub resets_in: Option<Duration>,
}
