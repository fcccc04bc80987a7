//! What the cache did for a response, told in the `x-tollway-cache` header and in metrics.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header every response from the cache carries: `hit`, `miss`, `stale`, `coalesced` or
/// `revalidated`.
pub const CACHE_STATUS_HEADER: HeaderName = HeaderName::from_static("x-tollway-cache");

/// What the cache did for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheStatus {
    /// Served from a fresh entry; the upstream was not called.
    Hit,
    /// Sent upstream (stored if cacheable). Requests the cache does not handle (a POST without
    /// an `Idempotency-Key`, say) are misses too.
    Miss,
    /// The upstream failed and an expired entry, within its stale window, was served instead.
    Stale,
    /// Another caller's identical request was in flight; this one shared its response.
    Coalesced,
    /// A stale entry was revalidated: the upstream answered `304 Not Modified` to a
    /// conditional request, and the stored body was served (and its lifetime renewed)
    /// without being downloaded again.
    Revalidated,
}

impl CacheStatus {
    /// The header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Coalesced => "coalesced",
            Self::Revalidated => "revalidated",
        }
    }

    /// Reads the status from a response's headers.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use tollway_cache::{CACHE_STATUS_HEADER, CacheStatus};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert(CACHE_STATUS_HEADER, "stale".parse().unwrap());
    /// assert_eq!(CacheStatus::from_headers(&headers), Some(CacheStatus::Stale));
    /// ```
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        match headers.get(CACHE_STATUS_HEADER)?.as_bytes() {
            b"hit" => Some(Self::Hit),
            b"miss" => Some(Self::Miss),
            b"stale" => Some(Self::Stale),
            b"coalesced" => Some(Self::Coalesced),
            b"revalidated" => Some(Self::Revalidated),
            _ => None,
        }
    }

    pub(crate) const fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }

    /// Counts this outcome (`tollway_cache_{hits,misses,stale,coalesced,revalidated}_total`)
    /// and logs it.
    pub(crate) fn record(self) {
        tracing::debug!(cache = self.as_str(), "cache outcome");
        #[cfg(feature = "metrics")]
        metrics::counter!(match self {
            Self::Hit => "tollway_cache_hits_total",
            Self::Miss => "tollway_cache_misses_total",
            Self::Stale => "tollway_cache_stale_total",
            Self::Coalesced => "tollway_cache_coalesced_total",
            Self::Revalidated => "tollway_cache_revalidated_total",
        })
        .increment(1);
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts evicted entries (`tollway_cache_evictions_total`).
pub(crate) fn record_evictions(count: u64) {
    if count > 0 {
        tracing::debug!(count, "cache entries evicted");
        #[cfg(feature = "metrics")]
        metrics::counter!("tollway_cache_evictions_total").increment(count);
    }
}
