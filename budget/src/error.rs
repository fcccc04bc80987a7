//! Why a reservation failed.

use std::error::Error;
use std::fmt;

use tollway_core::{BoxError, BudgetExhausted, StoreUnavailable};

/// A reservation that was refused.
///
/// Either the budget is exhausted (the usual case: the core [`BudgetExhausted`] rejection), or
/// the store could not grant it: a journal that could not make it durable, a Redis server that
/// could not be reached. Then it refuses rather than grant credit it cannot account for (fail
/// closed): [`StoreUnavailable`], whose source is the I/O or Redis error.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReserveError {
    /// No credit: a window is spent, only the critical reserve is left, or the upstream is out.
    Exhausted(BudgetExhausted),
    /// The store failed; nothing was reserved.
    Store(StoreUnavailable),
}

impl ReserveError {
    /// The budget rejection, if that is what this is.
    pub fn exhausted(&self) -> Option<&BudgetExhausted> {
        match self {
            Self::Exhausted(e) => Some(e),
            Self::Store(_) => None,
        }
    }

    /// The error a tollway service returns: a bare [`BudgetExhausted`] or [`StoreUnavailable`],
    /// so callers can `downcast_ref` it directly.
    pub fn into_box_error(self) -> BoxError {
        match self {
            Self::Exhausted(e) => Box::new(e),
            Self::Store(e) => Box::new(e),
        }
    }
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exhausted(e) => fmt::Display::fmt(e, f),
            Self::Store(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl Error for ReserveError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Exhausted(e) => Some(e),
            Self::Store(e) => Some(e),
        }
    }
}

impl From<StoreUnavailable> for ReserveError {
    fn from(e: StoreUnavailable) -> Self {
        Self::Store(e)
    }
}

impl From<BudgetExhausted> for ReserveError {
    fn from(e: BudgetExhausted) -> Self {
        Self::Exhausted(e)
    }
}

/// A balance response body that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceParseError {
    reason: String,
}

impl BalanceParseError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for BalanceParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed balance body: {}", self.reason)
    }
}

impl Error for BalanceParseError {}
