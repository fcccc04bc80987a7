//! How much a request matters when credit runs low.

/// A request's priority, read from its [extensions](http::Request::extensions) (absent means
/// [`Normal`](Priority::Normal)).
///
/// When the credit left falls to the ledger's critical reserve, normal and backfill requests fail
/// fast and critical ones may spend the reserve; backfill requests stop earlier still, at the
/// backfill reserve.
///
/// ```
/// use tollway_budget::Priority;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Priority::Critical);
/// assert_eq!(Priority::of(&request), Priority::Critical);
/// assert_eq!(Priority::of(&http::Request::new(())), Priority::Normal);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum Priority {
    /// Work that can wait for the next window: stops first.
    Backfill,
    /// Ordinary work: stops at the critical reserve.
    #[default]
    Normal,
    /// Work that must run: may spend the critical reserve.
    Critical,
}

impl Priority {
    /// The priority a request carries in its extensions, or `Normal`.
    pub fn of<B>(request: &http::Request<B>) -> Self {
        request
            .extensions()
            .get::<Self>()
            .copied()
            .unwrap_or_default()
    }

    /// A short lowercase name, for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Backfill => "backfill",
            Self::Normal => "normal",
            Self::Critical => "critical",
        }
    }
}
