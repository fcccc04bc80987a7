//! What the cache stores, and for how long.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::request::Parts;
use http::response;
use http::{HeaderMap, Method, StatusCode};
use tollway_core::idempotency::idempotency_key;
use tollway_core::{Classify, Outcome, OutcomeKind, SharedClock};

use crate::freshness::{self, Freshness, RequestView};
use crate::key::KeyParts;
use crate::revalidate;

pub(crate) type TtlFn = dyn Fn(&Parts) -> Option<Duration> + Send + Sync;
pub(crate) type ValidateFn = dyn Fn(&response::Parts, &[u8]) -> bool + Send + Sync;

/// The longest lifetime an entry gets, whatever a rule or a header says: far enough to mean
/// "for good", near enough that adding it to a date never overflows.
const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

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
    pub(crate) revalidate_for: Duration,
    pub(crate) respect_no_store: bool,
    pub(crate) freshness: Freshness,
    pub(crate) max_entry_bytes: usize,
    pub(crate) cross_process: bool,
    pub(crate) key: KeyParts,
    pub(crate) validate: Option<Arc<ValidateFn>>,
    pub(crate) clock: SharedClock,
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
            .field("revalidate_for", &self.revalidate_for)
            .field("respect_no_store", &self.respect_no_store)
            .field("freshness", &self.freshness)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .field("cross_process", &self.cross_process)
            .field("key", &self.key)
            .field("validate", &self.validate.is_some())
            .finish_non_exhaustive()
    }
}

/// How long a response stays fresh, then usable in place of a failure, then kept to be
/// revalidated, each counted from when it was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetimes {
    pub(crate) fresh: Duration,
    pub(crate) stale: Duration,
    pub(crate) keep: Duration,
}

impl Lifetimes {
    /// The entry's times, stored at `now`: fresh until, usable stale until, kept until.
    pub(crate) fn deadlines(self, now: SystemTime) -> [SystemTime; 3] {
        let at = |d: Duration| now.checked_add(d.min(MAX_LIFETIME)).unwrap_or(now);
        [at(self.fresh), at(self.stale), at(self.keep)]
    }
}

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Store it for these lifetimes.
    Store(Lifetimes),
    /// A good answer that must not be stored (`no-store`, `private` in a shared cache, a zero
    /// lifetime): it cannot be shared with waiters either, who each send their own.
    Unshareable,
    /// A failure (or a status never stored, such as a 304): not stored, not shared; one waiter
    /// takes over.
    Failure,
}

impl Policy {
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.system_now()
    }

    /// Whether a request may be answered from, and stored in, the cache. A conditional request
    /// (`If-None-Match` and the like) asks what only the origin knows: it goes straight there.
    pub(crate) fn is_cacheable_request(&self, parts: &Parts) -> bool {
        if parts.headers.contains_key(http::header::RANGE)
            || revalidate::is_conditional(&parts.headers)
            || (self.freshness.is_http() && freshness::request_forbids_store(&parts.headers))
        {
            return false;
        }
        self.methods.contains(&parts.method)
            || (self.keyed_methods.contains(&parts.method)
                && idempotency_key(&parts.headers).is_some())
    }

    /// Whether the request refuses a stored answer it has not seen revalidated
    /// (`Cache-Control: no-cache` or `max-age=0`, in the HTTP modes only).
    pub(crate) fn request_forces_revalidation(&self, headers: &HeaderMap) -> bool {
        self.freshness.is_http() && freshness::request_wants_revalidation(headers)
    }

    /// Whether a stale entry may be revalidated with a conditional request for `method`.
    pub(crate) fn revalidates(&self, method: &Method) -> bool {
        method == Method::GET
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

    /// What to do with a response of `status` and `headers`, classified `outcome`, to the
    /// request `request` (kept for the HTTP modes only).
    pub(crate) fn decide(
        &self,
        route_ttl: Duration,
        outcome: &Outcome,
        status: StatusCode,
        headers: &HeaderMap,
        request: Option<&RequestView>,
        now: SystemTime,
    ) -> Decision {
        // A 304 answers a conditional request, a 206 a range: neither is the resource.
        if matches!(
            status,
            StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT
        ) {
            return Decision::Failure;
        }
        let configured = match outcome.kind() {
            OutcomeKind::Success => route_ttl,
            _ if status == StatusCode::NOT_FOUND && self.not_found_ttl.is_some() => {
                self.not_found_ttl.unwrap_or_default()
            }
            _ => return Decision::Failure,
        };
        if self.respect_no_store && freshness::has_directive(headers, "no-store") {
            return Decision::Unshareable;
        }
        let has_validator = revalidate::has_validator(headers);
        let keep_extra = if has_validator {
            self.revalidate_for
        } else {
            Duration::ZERO
        };
        let (fresh, stale) = match (self.freshness.shared(), request) {
            (Some(shared), Some(request)) => {
                let verdict = freshness::judge(shared, &self.key, request, headers, now);
                if !verdict.storable || configured.is_zero() {
                    return Decision::Unshareable;
                }
                let fresh = verdict.fresh.unwrap_or(configured);
                let stale = if verdict.no_stale {
                    Duration::ZERO
                } else {
                    self.max_stale
                };
                (fresh, stale)
            }
            _ => {
                if configured.is_zero() {
                    return Decision::Unshareable;
                }
                (configured, self.max_stale)
            }
        };
        if fresh.is_zero() && stale.is_zero() && keep_extra.is_zero() {
            return Decision::Unshareable;
        }
        let stale = fresh.saturating_add(stale);
        Decision::Store(Lifetimes {
            fresh,
            stale,
            keep: stale.max(fresh.saturating_add(keep_extra)),
        })
    }

    /// Whether the application's check (if any) accepts this response for storing.
    pub(crate) fn accepts(&self, head: &response::Parts, body: &[u8]) -> bool {
        self.validate
            .as_ref()
            .is_none_or(|validate| validate(head, body))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_stands_in_for_failures_only() {
        assert!(may_serve_stale(&Outcome::new(OutcomeKind::ServerError)));
        assert!(may_serve_stale(&Outcome::new(OutcomeKind::Transport)));
        assert!(may_serve_stale(&Outcome::new(OutcomeKind::Rejected)));
        assert!(!may_serve_stale(&Outcome::new(OutcomeKind::ClientError)));
        assert!(!may_serve_stale(&Outcome::new(OutcomeKind::Success)));
    }

    #[test]
    fn lifetimes_never_overflow_a_date() {
        let now = SystemTime::now();
        let huge = Lifetimes {
            fresh: Duration::MAX,
            stale: Duration::MAX,
            keep: Duration::MAX,
        };
        let [fresh, stale, keep] = huge.deadlines(now);
        assert_eq!(fresh, now + MAX_LIFETIME);
        assert_eq!((stale, keep), (fresh, fresh));
    }
}
