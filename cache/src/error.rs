//! The errors the cache itself returns (besides passing on its inner service's).

use std::error::Error;
use std::fmt;

/// The upstream answered a revalidation with `304 Not Modified` naming another version (an
/// `ETag` or `Last-Modified` that differs from the stored one's), so the stored body cannot be
/// served as current, and the request (whose body was sent) cannot be resent by the cache.
/// The entry has been removed: sending the request again fetches it whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RevalidationMismatch;

impl RevalidationMismatch {
    /// The error.
    pub const fn new() -> Self {
        Self
    }
}

impl fmt::Display for RevalidationMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the upstream answered 304 Not Modified for another version than the cached one; \
             the entry was dropped, send the request again",
        )
    }
}

impl Error for RevalidationMismatch {}
