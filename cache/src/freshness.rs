//! [`Freshness`]: whether `Cache-Control` and `Expires` decide lifetimes, read by
//! `http-cache-semantics` (RFC 9111's rules) rather than by hand.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_cache_semantics::{CacheOptions, CachePolicy};

use crate::key::KeyParts;

/// Where an entry's lifetime comes from; see [`CacheBuilder::freshness`](crate::CacheBuilder::freshness).
///
/// In every mode, [`route_ttl`](crate::CacheBuilder::route_ttl) zero means "never store", and
/// `Cache-Control: no-store` keeps a response out unless
/// [`respect_no_store(false)`](crate::CacheBuilder::respect_no_store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Freshness {
    /// The builder's rules alone ([`ttl`](crate::CacheBuilder::ttl),
    /// [`route_ttl`](crate::CacheBuilder::route_ttl), [`ttl_fn`](crate::CacheBuilder::ttl_fn)):
    /// what an API client paying per request wants, since many APIs send `no-cache` or
    /// `max-age=0` on everything. The default.
    #[default]
    Configured,
    /// The response's `Cache-Control` (`max-age`, `no-cache`, `must-revalidate`) and
    /// `Expires`, as a private cache reads them: the cache of one client, so `private`
    /// responses are stored and `s-maxage` is ignored. A response that states no lifetime gets
    /// the builder's. A response whose `Vary` names a request header that is not part of the
    /// key ([`vary_header`](crate::CacheBuilder::vary_header), the credential headers) is not
    /// stored. A request's own `Cache-Control: no-cache` (or `max-age=0`) makes a stored
    /// answer be revalidated first, and its `no-store` bypasses the cache.
    HttpPrivate,
    /// As [`HttpPrivate`](Self::HttpPrivate), read as a shared cache (one serving many users,
    /// such as one in front of a server): `private` responses are not stored and `s-maxage`
    /// wins. Requests with credentials are still cached, unlike in most shared caches: the
    /// [credential headers](crate::CacheBuilder::credential_headers) are part of the key, so
    /// each credential has entries of its own.
    HttpShared,
}

impl Freshness {
    /// Whether headers decide lifetimes.
    pub(crate) fn is_http(self) -> bool {
        self.shared().is_some()
    }

    /// For the HTTP modes, whether the cache is shared.
    pub(crate) fn shared(self) -> Option<bool> {
        match self {
            Self::Configured => None,
            Self::HttpPrivate => Some(false),
            Self::HttpShared => Some(true),
        }
    }
}

/// What the HTTP modes need of the request once its response is in: it is sent by then.
#[derive(Debug)]
pub(crate) struct RequestView {
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
}

/// What the response's headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Whether it may be stored at all.
    pub(crate) storable: bool,
    /// Its lifetime, if it states one (zero for `no-cache`).
    pub(crate) fresh: Option<Duration>,
    /// Whether it must never be served stale (`must-revalidate`, `no-cache`, and in a shared
    /// cache `proxy-revalidate`).
    pub(crate) no_stale: bool,
}

/// Reads a response's headers by RFC 9111, as `http-cache-semantics` does. The status the
/// caller already judged storable; the method is taken as GET (a method cached for its
/// `Idempotency-Key` is cached like one); the `key.credentials` headers are left out of the
/// request, since each of their values has entries of its own. A response that varies
/// (`Vary`) on a request header the key does not hold is not storable: one entry would answer
/// requests that differ in it.
pub(crate) fn judge(
    shared: bool,
    key: &KeyParts,
    request: &RequestView,
    headers: &HeaderMap,
    now: SystemTime,
) -> Verdict {
    let credentials = &key.credentials;
    let mut asked = Request::new(());
    *asked.method_mut() = Method::GET;
    *asked.uri_mut() = request.uri.clone();
    *asked.headers_mut() = request.headers.clone();
    for name in credentials {
        asked.headers_mut().remove(name);
    }
    let mut answered = Response::new(());
    *answered.status_mut() = StatusCode::OK;
    *answered.headers_mut() = headers.clone();
    sanitize_age(answered.headers_mut());
    let options = CacheOptions {
        shared,
        ..CacheOptions::default()
    };
    let policy = CachePolicy::new_options(&asked, &answered, now, options);
    let states_lifetime = has_directive(headers, "max-age")
        || has_directive(headers, "no-cache")
        || (shared && has_directive(headers, "s-maxage"))
        || headers.contains_key(http::header::EXPIRES)
        || (!headers.contains_key(http::header::CACHE_CONTROL) && pragma_no_cache(headers));
    Verdict {
        storable: policy.is_storable() && varies_within(headers, key),
        fresh: states_lifetime.then(|| policy.time_to_live(now)),
        no_stale: has_directive(headers, "must-revalidate")
            || has_directive(headers, "no-cache")
            || (shared && has_directive(headers, "proxy-revalidate")),
    }
}

/// Whether every request header the response's `Vary` names is part of the key (`*` never
/// is).
fn varies_within(headers: &HeaderMap, key: &KeyParts) -> bool {
    headers
        .get_all(http::header::VARY)
        .iter()
        .map(|v| v.to_str().unwrap_or("*"))
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .all(|name| {
            key.vary
                .iter()
                .chain(&key.credentials)
                .any(|held| held.as_str().eq_ignore_ascii_case(name))
        })
}

/// An `Age` far beyond any real one would overflow the library's arithmetic: cap it.
fn sanitize_age(headers: &mut HeaderMap) {
    let Some(age) = headers.get(http::header::AGE) else {
        return;
    };
    let capped = age
        .to_str()
        .ok()
        .and_then(|age| age.trim().parse::<u64>().ok())
        .map(|age| age.min(u64::from(u32::MAX)));
    match capped {
        Some(age) => {
            headers.insert(http::header::AGE, HeaderValue::from(age));
        }
        None => {
            headers.remove(http::header::AGE);
        }
    }
}

/// Whether `Cache-Control` carries `directive` (with or without a value), in any of its
/// lines.
pub(crate) fn has_directive(headers: &HeaderMap, directive: &str) -> bool {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.split_once('=').map_or(d, |(name, _)| name).trim())
        .any(|name| name.eq_ignore_ascii_case(directive))
}

fn directive_value<'a>(headers: &'a HeaderMap, directive: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| d.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case(directive))
        .map(|(_, value)| value.trim().trim_matches('"'))
}

fn pragma_no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::PRAGMA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("no-cache"))
}

/// Whether a request's `Cache-Control: no-store` keeps it, and its answer, out of the cache.
pub(crate) fn request_forbids_store(headers: &HeaderMap) -> bool {
    has_directive(headers, "no-store")
}

/// Whether a request refuses a stored answer without revalidation: `Cache-Control: no-cache`,
/// `max-age=0`, or (without `Cache-Control`) `Pragma: no-cache`.
pub(crate) fn request_wants_revalidation(headers: &HeaderMap) -> bool {
    has_directive(headers, "no-cache")
        || directive_value(headers, "max-age").is_some_and(|age| age == "0")
        || (!headers.contains_key(http::header::CACHE_CONTROL) && pragma_no_cache(headers))
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (HeaderName::from_static(name), value.parse().unwrap()))
            .collect()
    }

    fn view(pairs: &[(&'static str, &str)]) -> RequestView {
        RequestView {
            uri: "https://api.test/x".parse().unwrap(),
            headers: headers(pairs),
        }
    }

    fn key() -> KeyParts {
        KeyParts {
            vary: vec![HeaderName::from_static("accept")],
            credentials: vec![http::header::AUTHORIZATION],
        }
    }

    fn verdict(
        shared: bool,
        request: &[(&'static str, &str)],
        response: &[(&'static str, &str)],
    ) -> Verdict {
        judge(
            shared,
            &key(),
            &view(request),
            &headers(response),
            SystemTime::now(),
        )
    }

    #[test]
    fn max_age_and_no_cache_state_lifetimes_and_silence_states_none() {
        let v = verdict(false, &[], &[("cache-control", "max-age=30")]);
        assert_eq!(
            (v.storable, v.fresh, v.no_stale),
            (true, Some(Duration::from_secs(30)), false)
        );
        let v = verdict(false, &[], &[("cache-control", "no-cache")]);
        assert_eq!(
            (v.storable, v.fresh, v.no_stale),
            (true, Some(Duration::ZERO), true)
        );
        let v = verdict(false, &[], &[("content-type", "text/plain")]);
        assert_eq!((v.storable, v.fresh), (true, None));
        let v = verdict(
            false,
            &[],
            &[
                ("cache-control", "max-age=60, must-revalidate"),
                ("age", "20"),
            ],
        );
        assert_eq!((v.fresh, v.no_stale), (Some(Duration::from_secs(40)), true));
    }

    #[test]
    fn private_is_for_private_caches_and_s_maxage_for_shared_ones() {
        let private = [("cache-control", "private, max-age=30")];
        assert!(verdict(false, &[], &private).storable);
        assert!(!verdict(true, &[], &private).storable);
        let both = [("cache-control", "max-age=30, s-maxage=5")];
        assert_eq!(
            verdict(false, &[], &both).fresh,
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            verdict(true, &[], &both).fresh,
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn a_shared_cache_still_stores_answers_to_requests_with_credentials() {
        let v = verdict(
            true,
            &[("authorization", "Bearer k")],
            &[("cache-control", "max-age=30")],
        );
        assert!(v.storable, "the credential is part of the key");
        // A header not declared a credential is not left out: the library's rule applies.
        let bare = KeyParts {
            vary: Vec::new(),
            credentials: Vec::new(),
        };
        let v = judge(
            true,
            &bare,
            &view(&[("authorization", "Bearer k")]),
            &headers(&[("cache-control", "max-age=30")]),
            SystemTime::now(),
        );
        assert!(!v.storable);
    }

    #[test]
    fn a_response_varying_on_what_the_key_does_not_hold_is_not_stored() {
        let cc = ("cache-control", "max-age=30");
        assert!(verdict(false, &[], &[cc, ("vary", "Accept")]).storable);
        assert!(verdict(false, &[], &[cc, ("vary", "accept, Authorization")]).storable);
        assert!(!verdict(false, &[], &[cc, ("vary", "Accept-Language")]).storable);
        assert!(!verdict(false, &[], &[cc, ("vary", "accept"), ("vary", "*")]).storable);
    }

    #[test]
    fn hostile_ages_and_dates_do_not_panic() {
        for (name, value) in [
            ("age", "18446744073709551615"),
            ("age", "99999999999999999999999"),
            ("age", "-1"),
            ("expires", "Fri, 31 Dec 9999 23:59:59 GMT"),
            ("expires", "0"),
            ("date", "Mon, 01 Jan 0001 00:00:00 GMT"),
            ("last-modified", "Fri, 31 Dec 9999 23:59:59 GMT"),
        ] {
            let v = verdict(
                false,
                &[],
                &[
                    (name, value),
                    ("cache-control", "max-age=18446744073709551615"),
                ],
            );
            assert!(v.storable, "{name}: {value}");
        }
    }

    #[test]
    fn request_directives() {
        assert!(request_wants_revalidation(&headers(&[(
            "cache-control",
            "no-cache"
        )])));
        assert!(request_wants_revalidation(&headers(&[(
            "cache-control",
            "max-age=0"
        )])));
        assert!(request_wants_revalidation(&headers(&[(
            "pragma", "no-cache"
        )])));
        assert!(!request_wants_revalidation(&headers(&[(
            "cache-control",
            "max-age=10"
        )])));
        assert!(request_forbids_store(&headers(&[(
            "cache-control",
            "No-Store"
        )])));
        assert!(!has_directive(
            &headers(&[("cache-control", "no-storex")]),
            "no-store"
        ));
    }
}
