//! Cache keys: which requests share an entry.
//!
//! A key is a BLAKE3 hash, keyed with the cache's own random secret, of the method, scheme,
//! the URL's userinfo (`user:password@`, a credential), host, port, path, query parameters sorted by name (values of one name keep their order), the
//! selected `Vary` request headers, the credential headers, and, for methods cached only because
//! they carry one, the `Idempotency-Key`. Two API keys therefore never share an entry, and what
//! reaches the disk (file names, and the key inside each file) is a keyed hash from which no
//! credential can be read back or guessed without the secret.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use http::{HeaderMap, HeaderName, Method, Uri};
use tollway_core::idempotency::IDEMPOTENCY_KEY;

/// The 32-byte identity of a cache entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey([u8; 32]);

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.hex())
    }
}

impl CacheKey {
    pub(crate) const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex: the entry's file name.
    pub(crate) fn hex(&self) -> String {
        let mut buf = [0; 64];
        self.hex_in(&mut buf).to_owned()
    }

    /// Lowercase hex, written into `buf` (no allocation on the read path).
    pub(crate) fn hex_in<'b>(&self, buf: &'b mut [u8; 64]) -> &'b str {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (pair, byte) in buf.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        std::str::from_utf8(buf).unwrap_or_default()
    }

    /// Parses a file name written by [`hex`](Self::hex).
    pub(crate) fn from_hex(name: &str) -> Option<Self> {
        let bytes = name.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            if pair.iter().any(u8::is_ascii_uppercase) {
                return None;
            }
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }
}

/// A map by cache key. Keys are outputs of a hash keyed with a secret, uniform and unknown
/// to anyone who does not hold the secret (no one can choose keys that collide), so folding
/// their bytes together is as good a hash as SipHash's, at a fraction of the cost.
pub(crate) type KeyMap<V> = HashMap<CacheKey, V, BuildHasherDefault<KeyHasher>>;

/// The [`Hasher`] of [`KeyMap`]: the key's bytes folded into a word.
#[derive(Debug, Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // A key hashes as one 32-byte write; folding keeps any other input well-defined.
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What goes into a key besides the URL and method.
#[derive(Debug, Clone)]
pub(crate) struct KeyParts {
    pub(crate) vary: Vec<HeaderName>,
    pub(crate) credentials: Vec<HeaderName>,
}

impl KeyParts {
    /// The key of the request with this method, URI and headers.
    pub(crate) fn key(
        &self,
        secret: &[u8; 32],
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> CacheKey {
        let mut fields = Fields(Vec::with_capacity(256));
        fields.put(method.as_str().as_bytes());

        let scheme = uri.scheme_str().unwrap_or("http");
        // `user:password@` is a credential: two of them never share an entry (and, hashed
        // with the secret, it never reaches the disk).
        let userinfo = uri
            .authority()
            .and_then(|authority| authority.as_str().rsplit_once('@'))
            .map_or("", |(userinfo, _)| userinfo);
        let relative;
        let authority = match uri.authority() {
            Some(authority) => Some(authority),
            // A server sees relative URIs: the Host header names the authority.
            None => {
                relative = headers
                    .get(http::header::HOST)
                    .and_then(|host| host.to_str().ok())
                    .and_then(|host| host.parse::<http::uri::Authority>().ok());
                relative.as_ref()
            }
        };
        let (host, port) = authority.map_or(("", None), |a| (a.host(), a.port_u16()));
        let https = scheme.eq_ignore_ascii_case("https");
        let port = port.unwrap_or(if https { 443 } else { 80 });
        fields.put_lowercase(scheme);
        fields.put(userinfo.as_bytes());
        fields.put_lowercase(host);
        fields.put(&port.to_le_bytes());
        fields.put(uri.path().as_bytes());

        let mut query: Vec<(&str, &str)> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .collect();
        // Stable: repeated parameters keep their order, which may matter to the server.
        query.sort_by(|a, b| a.0.cmp(b.0));
        fields.len(query.len());
        for (name, value) in query {
            fields.put(name.as_bytes());
            fields.put(value.as_bytes());
        }

        fields.headers(headers, &self.vary);
        fields.headers(headers, &self.credentials);
        // Any method cached beyond GET and HEAD is cached on the strength of its
        // Idempotency-Key, which stands for its body: it must be part of the key (a PUT too,
        // though PUT is idempotent: two PUTs to one URL may carry different bodies).
        if method != Method::GET && method != Method::HEAD {
            fields.headers(headers, &[IDEMPOTENCY_KEY]);
        }
        // One keyed hash over one buffer: far cheaper than feeding the hasher field by field.
        CacheKey(*blake3::keyed_hash(secret, &fields.0).as_bytes())
    }
}

/// A key's fields, each length-prefixed so that no two requests' fields run together alike.
/// Lengths are 4 bytes: a URI or header value cannot come near 4 GiB, and every 64 bytes
/// saved is one BLAKE3 block less per request.
struct Fields(Vec<u8>);

impl Fields {
    fn len(&mut self, len: usize) {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
    }

    fn put(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.0.extend_from_slice(bytes);
    }

    fn put_lowercase(&mut self, text: &str) {
        self.len(text.len());
        self.0.extend(text.bytes().map(|b| b.to_ascii_lowercase()));
    }

    /// The values of each header of `names`, in that order (the names are the cache's
    /// configuration, the same for every key, so their position stands for them).
    fn headers(&mut self, headers: &HeaderMap, names: &[HeaderName]) {
        for name in names {
            let values = headers.get_all(name);
            self.len(values.iter().count());
            for value in values {
                self.put(value.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn key_with(secret: &[u8; 32], builder: http::request::Builder) -> CacheKey {
        let request = builder.body(()).unwrap();
        key_parts().key(secret, request.method(), request.uri(), request.headers())
    }

    fn key_parts() -> KeyParts {
        KeyParts {
            vary: vec![HeaderName::from_static("accept")],
            credentials: vec![HeaderName::from_static("x-access-key")],
        }
    }

    fn key(builder: http::request::Builder) -> CacheKey {
        key_with(&[1; 32], builder)
    }

    #[test]
    fn query_order_does_not_matter_but_repeats_keep_theirs() {
        let a = key(Request::get("http://api.test/f?user_id=1&page_id=2"));
        let b = key(Request::get("http://api.test/f?page_id=2&user_id=1"));
        assert_eq!(a, b);
        let c = key(Request::get("http://api.test/f?a=1&a=2"));
        let d = key(Request::get("http://api.test/f?a=2&a=1"));
        assert_ne!(c, d);
    }

    #[test]
    fn every_part_counts() {
        let base = key(Request::get("http://api.test/f?x=1"));
        for other in [
            Request::get("https://api.test/f?x=1"),
            Request::get("http://api.test:8080/f?x=1"),
            Request::get("http://other.test/f?x=1"),
            Request::get("http://api.test/g?x=1"),
            Request::get("http://api.test/f?x=2"),
            Request::head("http://api.test/f?x=1"),
            Request::get("http://api.test/f?x=1").header("accept", "text/csv"),
            Request::get("http://api.test/f?x=1").header("x-access-key", "k1"),
            Request::get("http://user:pw@api.test/f?x=1"),
            Request::get("http://user@api.test/f?x=1"),
        ] {
            assert_ne!(key(other), base);
        }
        // Default port and case of scheme and host do not.
        assert_eq!(key(Request::get("http://API.test:80/f?x=1")), base);
        // Headers neither varied on nor credentials do not.
        assert_eq!(
            key(Request::get("http://api.test/f?x=1").header("user-agent", "a")),
            base
        );
    }

    #[test]
    fn credentials_separate_and_secret_matters() {
        let a = key(Request::get("http://api.test/f").header("x-access-key", "k1"));
        let b = key(Request::get("http://api.test/f").header("x-access-key", "k2"));
        assert_ne!(a, b);
        let other_secret = key_with(
            &[2; 32],
            Request::get("http://api.test/f").header("x-access-key", "k1"),
        );
        assert_ne!(a, other_secret);
    }

    #[test]
    fn userinfo_credentials_separate() {
        let a = key(Request::get("https://alice:pw1@api.test/f"));
        let b = key(Request::get("https://alice:pw2@api.test/f"));
        let c = key(Request::get("https://bob:pw1@api.test/f"));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, key(Request::get("https://alice:pw1@api.test/f")));
    }

    #[test]
    fn host_header_stands_in_for_a_relative_uri() {
        let absolute = key(Request::get("http://api.test:8080/f"));
        let relative = key(Request::get("/f").header("host", "api.test:8080"));
        assert_eq!(absolute, relative);
    }

    #[test]
    fn idempotency_key_counts_for_every_method_but_get_and_head() {
        let a = key(Request::post("http://api.test/o").header("idempotency-key", "1"));
        let b = key(Request::post("http://api.test/o").header("idempotency-key", "2"));
        assert_ne!(a, b);
        let a = key(Request::put("http://api.test/o").header("idempotency-key", "1"));
        let b = key(Request::put("http://api.test/o").header("idempotency-key", "2"));
        assert_ne!(a, b);
        let a = key(Request::get("http://api.test/o").header("idempotency-key", "1"));
        let b = key(Request::get("http://api.test/o").header("idempotency-key", "2"));
        assert_eq!(a, b);
    }

    #[test]
    fn hex_round_trip() {
        let k = CacheKey([0xab; 32]);
        assert_eq!(CacheKey::from_hex(&k.hex()), Some(k));
        assert_eq!(CacheKey::from_hex("zz"), None);
        assert_eq!(CacheKey::from_hex(&"AB".repeat(32)), None);
    }
}
