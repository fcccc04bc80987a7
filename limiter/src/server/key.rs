//! Who a request counts against: [`Key`] and the [`KeyExtractor`]s ([`HeaderKey`], [`Global`],
//! closures, and [`Or`] to fall back from one to another; [`PeerIp`](super::PeerIp) lives in
//! `peer.rs`).

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderName, Method, Request, Uri};
pub use tollway_core::TextDigest;

/// The identity a request is limited by. Fixed-size whatever the request carries: text (an
/// API key, a user id) is kept as a keyed 128-bit digest, so an attacker's 400 KB header
/// costs the key map what a short one does, and raw keys never sit in memory or in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// Every request shares one bucket.
    Global,
    /// A client address (IPv6 already grouped by its prefix).
    Ip(IpAddr),
    /// An API key, a user or account id, a tier name: its digest.
    Text(TextDigest),
}

impl Hash for Key {
    // One word for an IPv4 address or a digest: hashing is a fair share of a check's cost.
    // (Equal keys hash alike; different variants may meet in a bucket, never in a key.)
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Self::Global => state.write_u8(0),
            Self::Ip(IpAddr::V4(v4)) => state.write_u64(1 << 32 | u64::from(v4.to_bits())),
            Self::Ip(IpAddr::V6(v6)) => state.write_u128(v6.to_bits()),
            Self::Text(digest) => {
                let [a, b] = digest.words();
                state.write_u64(a ^ b.rotate_left(29));
            }
        }
    }
}

impl From<IpAddr> for Key {
    fn from(ip: IpAddr) -> Self {
        Self::Ip(ip)
    }
}

impl From<&str> for Key {
    fn from(text: &str) -> Self {
        Self::Text(TextDigest::of(text))
    }
}

impl From<String> for Key {
    fn from(text: String) -> Self {
        Self::from(text.as_str())
    }
}

/// A request's head, borrowed: what key extractors, tiers and concurrency limits read. The
/// layer builds it from the request without moving anything.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (axum's `ConnectInfo` lives here).
    pub extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The head of `request`.
    pub fn of<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }
}

impl<'a> From<&'a Parts> for RequestHead<'a> {
    fn from(parts: &'a Parts) -> Self {
        Self {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            extensions: &parts.extensions,
        }
    }
}

/// Computes a request's [`Key`] from its head; `None` means the limit does not apply to it
/// (a request without an API key is not counted against a per-key limit).
///
/// The layer calls it once per request and limit.
///
/// Implemented for closures `Fn(&RequestHead<'_>) -> Option<Key>`.
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key of the request whose head is `head`.
    fn extract(&self, head: &RequestHead<'_>) -> Option<Key>;

    /// Tries `self`, then `other` when `self` has no key.
    fn or<B: KeyExtractor>(self, other: B) -> Or<Self, B>
    where
        Self: Sized,
    {
        Or {
            first: self,
            second: other,
        }
    }
}

impl<F> KeyExtractor for F
where
    F: Fn(&RequestHead<'_>) -> Option<Key> + Send + Sync + 'static,
{
    fn extract(&self, head: &RequestHead<'_>) -> Option<Key> {
        self(head)
    }
}

/// One bucket for every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl KeyExtractor for Global {
    fn extract(&self, _head: &RequestHead<'_>) -> Option<Key> {
        Some(Key::Global)
    }
}

/// The first extractor's key, or else the second's: see [`KeyExtractor::or`].
#[derive(Debug, Clone, Copy)]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A: KeyExtractor, B: KeyExtractor> KeyExtractor for Or<A, B> {
    fn extract(&self, head: &RequestHead<'_>) -> Option<Key> {
        self.first
            .extract(head)
            .or_else(|| self.second.extract(head))
    }
}

/// The value of a request header (an API key, a client id), as a [`Key::Text`] digest.
/// Absent, empty or not visible ASCII: no key.
///
/// It does not authenticate: a client that invents a new value gets a new bucket. Keep a
/// per-IP limit next to it (as the example server does), or key by a closure that returns
/// `None` for keys your API does not know.
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys requests by the header `name` (e.g. `HeaderName::from_static("x-api-key")`).
    pub const fn new(name: HeaderName) -> Self {
        Self { name }
    }
}

impl KeyExtractor for HeaderKey {
    fn extract(&self, head: &RequestHead<'_>) -> Option<Key> {
        let value = head.headers.get(&self.name)?.to_str().ok()?.trim();
        (!value.is_empty()).then(|| Key::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_with(headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::get("/");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn header_key_or_another_and_closures() {
        let key = HeaderKey::new(HeaderName::from_static("x-api-key")).or(Global);
        let p = head_with(&[("x-api-key", " abc ")]);
        assert_eq!(key.extract(&RequestHead::from(&p)), Some(Key::from("abc")));
        let p = head_with(&[("x-api-key", "")]);
        assert_eq!(key.extract(&RequestHead::from(&p)), Some(Key::Global));
        let by_path = |p: &RequestHead<'_>| Some(Key::from(p.uri.path()));
        let p = head_with(&[]);
        assert_eq!(
            by_path.extract(&RequestHead::from(&p)),
            Some(Key::from("/"))
        );
    }

    /// Finding: keys were stored as the whole header value, so 4 KB keys took the example
    /// server to 525 MB. A key is a fixed-size digest now, and its `Debug` shows no text.
    #[test]
    fn text_keys_are_fixed_size_digests_that_never_print_the_text() {
        let long = "k".repeat(400_000);
        let key = Key::from(long.as_str());
        assert!(std::mem::size_of::<Key>() <= 24);
        assert_eq!(key, Key::from(long.clone()));
        assert_ne!(key, Key::from(&long[1..]));
        let shown = format!("{key:?}");
        assert!(!shown.contains("kkkk") && shown.len() < 40, "{shown}");
        assert!(!format!("{:?}", Key::from("secret-api-key")).contains("secret"));
    }
}
