//! What the cache stores, and for how long.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use tollway_core::idempotency::idempotency_key;
use tollway_core::{Classify, Outcome, OutcomeKind};

use crate::key::KeyParts;

pub(crate) type TtlFn = dyn Fn(&Parts) -> Option<Duration> + Send + Sync;
pub(crate) type SystemClock = dyn Fn() -> SystemTime + Send + Sync;

/// Everything the builder configured, shared by every clone of the layer and its services.
pub(crate) struct Policy {
    pub(crate) methods: Vec<Method>,
    pub(crate) keyed_methods: Vec<Method>,
    pub(crate) classifier: Arc<dyn Classify>,
    pub(crate) default_ttl: Duration,
    pub(crate) routes: Vec<(String, Duration)>,
    pub(crate) ttl_fn: Option<Arc<TtlFn>>,
    pub(crate) not_found_ttl: Option<Duration>,
    pub(crate) max_stale: Duration,
    pub(crate) respect_no_store: bool,
    pub(crate) max_entry_bytes: usize,
    pub(crate) cross_process: bool,
    pub(crate) key: KeyParts,
    pub(crate) clock: Arc<SystemClock>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("methods", &self.methods)
            .field("keyed_methods", &self.keyed_methods)
            .field("default_ttl", &self.default_ttl)
            .field("routes", &self.routes)
            .field("ttl_fn", &self.ttl_fn.is_some())
            .field("not_found_ttl", &self.not_found_ttl)
            .field("max_stale", &self.max_stale)
            .field("respect_no_store", &self.respect_no_store)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .field("cross_process", &self.cross_process)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Policy {
    pub(crate) fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// Whether a request may be answered from, and stored in, the cache.
    pub(crate) fn is_cacheable_request(&self, parts: &Parts) -> bool {
        if parts.headers.contains_key(http::header::RANGE) {
            return false;
        }
        self.methods.contains(&parts.method)
            || (self.keyed_methods.contains(&parts.method)
                && idempotency_key(&parts.headers).is_some())
    }

    /// The lifetime of a successful response to this request: the closure's answer, else the
    /// longest matching route prefix, else the default. Zero means "do not store".
    pub(crate) fn route_ttl(&self, parts: &Parts) -> Duration {
        if let Some(ttl) = self.ttl_fn.as_ref().and_then(|f| f(parts)) {
            return ttl;
        }
        let path = parts.uri.path();
        self.routes
            .iter()
            .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.default_ttl, |&(_, ttl)| ttl)
    }

    /// How long to keep this response, or `None` if it must not be stored.
    pub(crate) fn store_ttl(
        &self,
        route_ttl: Duration,
        outcome: &Outcome,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<Duration> {
        if self.respect_no_store && has_no_store(headers) {
            return None;
        }
        let ttl = match outcome.kind() {
            OutcomeKind::Success => route_ttl,
            _ if status == StatusCode::NOT_FOUND => self.not_found_ttl?,
            _ => return None,
        };
        (!ttl.is_zero()).then_some(ttl)
    }
}

/// Whether an outcome is one the upstream failed at, so that a stale entry may stand in:
/// 5xx, transport errors and timeouts, being throttled or out of credit, and the refusals of
/// tollway's own limiter, breaker and budget.
pub(crate) fn may_serve_stale(outcome: &Outcome) -> bool {
    outcome.is_upstream_failure()
        || matches!(
            outcome.kind(),
            OutcomeKind::Rejected | OutcomeKind::CreditsExhausted | OutcomeKind::RateLimited
        )
}

fn has_no_store(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-store"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_store_is_found_among_directives() {
        let mut headers = HeaderMap::new();
        assert!(!has_no_store(&headers));
        headers.append("cache-control", "max-age=5, No-Store".parse().unwrap());
        assert!(has_no_store(&headers));
        let mut other = HeaderMap::new();
        other.append("cache-control", "no-cache".parse().unwrap());
        other.append("cache-control", "private".parse().unwrap());
        assert!(!has_no_store(&other));
    }

    #[test]
    fn stale_stands_in_for_failures_only() {
        assert!(may_serve_stale(&Outcome::new(OutcomeKind::ServerError)));
        assert!(may_serve_stale(&Outcome::new(OutcomeKind::Transport)));
        assert!(may_serve_stale(&Outcome::new(OutcomeKind::Rejected)));
        assert!(!may_serve_stale(&Outcome::new(OutcomeKind::ClientError)));
        assert!(!may_serve_stale(&Outcome::new(OutcomeKind::Success)));
    }
}
