//! What a request costs, and what its response is charged.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method, Uri};
use tollway_core::Outcome;

/// What a request reserves before it is sent: one credit, or a price per endpoint.
///
/// ```
/// use tollway_budget::Cost;
///
/// // The search endpoint costs 5 credits, everything else 1.
/// let cost = Cost::per_request(|_method, uri, _headers| {
///     if uri.path().starts_with("/search") { 5 } else { 1 }
/// });
/// let request = http::Request::get("/search?q=x").body(()).unwrap();
/// assert_eq!(cost.of(&request), 5);
/// assert_eq!(Cost::fixed(1).of(&http::Request::new(())), 1);
/// ```
#[derive(Clone)]
pub struct Cost {
    kind: CostKind,
}

type CostFn = dyn Fn(&Method, &Uri, &HeaderMap) -> u64 + Send + Sync;

#[derive(Clone)]
enum CostKind {
    Fixed(u64),
    PerRequest(Arc<CostFn>),
}

impl Cost {
    /// Every request costs `credits`.
    pub const fn fixed(credits: u64) -> Self {
        Self {
            kind: CostKind::Fixed(credits),
        }
    }

    /// A request costs what `price` says for its method, URI and headers.
    pub fn per_request(
        price: impl Fn(&Method, &Uri, &HeaderMap) -> u64 + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind: CostKind::PerRequest(Arc::new(price)),
        }
    }

    /// What `request` costs.
    pub fn of<B>(&self, request: &http::Request<B>) -> u64 {
        match &self.kind {
            CostKind::Fixed(credits) => *credits,
            CostKind::PerRequest(price) => {
                price(request.method(), request.uri(), request.headers())
            }
        }
    }
}

impl Default for Cost {
    fn default() -> Self {
        Self::fixed(1)
    }
}

impl fmt::Debug for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CostKind::Fixed(credits) => f.debug_tuple("Cost::fixed").field(credits).finish(),
            CostKind::PerRequest(_) => f.write_str("Cost::per_request(..)"),
        }
    }
}

/// What a response is charged, once it arrives. Requests that end in an error (no response) or
/// are cancelled are never charged.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tollway_budget::ChargePolicy;
/// use tollway_core::{Classifier, Classify};
///
/// let classifier = Classifier::default();
/// let headers = HeaderMap::new();
/// let failed = classifier.classify_response(StatusCode::INTERNAL_SERVER_ERROR, &headers);
/// assert_eq!(ChargePolicy::SuccessOnly.charge(1, &failed, &headers), 0);
/// assert_eq!(ChargePolicy::EveryResponse.charge(1, &failed, &headers), 1);
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-credits-used", "3".parse().unwrap());
/// let ok = classifier.classify_response(StatusCode::OK, &headers);
/// let policy = ChargePolicy::from_header("x-credits-used");
/// assert_eq!(policy.charge(1, &ok, &headers), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ChargePolicy {
    /// Charge the reserved cost for successful responses only (what most credit APIs bill);
    /// refund every other outcome. The default.
    #[default]
    SuccessOnly,
    /// Charge the reserved cost for every response, whatever its status.
    EveryResponse,
    /// Charge what the named response header says (a non-negative integer); when it is absent or
    /// malformed, fall back to `SuccessOnly`.
    Header(HeaderName),
}

impl ChargePolicy {
    /// [`ChargePolicy::Header`] for a header name given as text.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name.
    pub fn from_header(name: &str) -> Self {
        Self::Header(HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"))
    }

    /// Credits to charge for a response classified as `outcome`, for a request that reserved
    /// `reserved`.
    pub fn charge(&self, reserved: u64, outcome: &Outcome, headers: &HeaderMap) -> u64 {
        let success_only = if outcome.is_success() { reserved } else { 0 };
        match self {
            Self::SuccessOnly => success_only,
            Self::EveryResponse => reserved,
            Self::Header(name) => headers
                .get(name)
                .and_then(|v| parse_credits(v.as_bytes()))
                .unwrap_or(success_only),
        }
    }
}

/// A non-negative decimal integer, surrounding whitespace allowed; `None` otherwise. Saturates
/// rather than fails on huge values.
pub(crate) fn parse_credits(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_parse_strictly() {
        assert_eq!(parse_credits(b" 42 "), Some(42));
        assert_eq!(parse_credits(b"99999999999999999999999"), Some(u64::MAX));
        assert_eq!(parse_credits(b"-1"), None);
        assert_eq!(parse_credits(b"1.5"), None);
        assert_eq!(parse_credits(b""), None);
    }
}
