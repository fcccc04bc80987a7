use std::borrow::Cow;

use http::Request;
use http::uri::Authority;

/// The longest authority [`request_authority`] returns: a DNS name (253) and a port. Longer
/// `Host` values come only from clients making up names, and each would be a key of its own.
const MAX_AUTHORITY_LEN: usize = 253 + 6;

/// The authority a request is for, lowercased (host names are case-insensitive), as keyed
/// layers group requests by it: the URI's authority (`host:port`, as a client sends it, without
/// any `user:password@`: a credential is never a key), else the
/// `Host` header (as a server receives it). `None` when neither is there, or when the `Host`
/// header is not a valid authority or is longer than a DNS name and a port. Borrows when the
/// value is already lowercase.
///
/// ```
/// use http::Request;
/// use tollway_core::headers::request_authority;
///
/// let client = Request::get("https://API.Example:8443/v2").body(()).unwrap();
/// assert_eq!(request_authority(&client).as_deref(), Some("api.example:8443"));
///
/// let server = Request::get("/v2").header("host", "api.example").body(()).unwrap();
/// assert_eq!(request_authority(&server).as_deref(), Some("api.example"));
///
/// let garbage = Request::get("/").header("host", "a b").body(()).unwrap();
/// assert_eq!(request_authority(&garbage), None);
/// ```
pub fn request_authority<B>(request: &Request<B>) -> Option<Cow<'_, str>> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => {
            let host = request.headers().get(http::header::HOST)?.to_str().ok()?;
            if host.len() > MAX_AUTHORITY_LEN || Authority::try_from(host).is_err() {
                return None;
            }
            host
        }
    };
    // Userinfo (`user:password@`) is a credential: never part of a key, a log line or a
    // metric label. (An `@` cannot appear in the host or port: the last one ends userinfo.)
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if authority.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(authority.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(authority))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(host: &[u8]) -> Request<()> {
        Request::get("/")
            .header("host", http::HeaderValue::from_bytes(host).unwrap())
            .body(())
            .unwrap()
    }

    #[test]
    fn uri_wins_over_host_and_case_is_folded() {
        let request = Request::get("http://Example.COM/x")
            .header("host", "other.example")
            .body(())
            .unwrap();
        assert_eq!(request_authority(&request).as_deref(), Some("example.com"));
        let lower = Request::get("http://example.com/x").body(()).unwrap();
        assert!(matches!(request_authority(&lower), Some(Cow::Borrowed(_))));
    }

    /// Finding: the URI's authority was the key as written, userinfo included: a keyed
    /// breaker named its circuit `user:secret@host` in its logs and metric labels, and two
    /// credentials for one host had two limiters and two breakers. Userinfo is a credential,
    /// never part of the key: the host and port are.
    #[test]
    fn userinfo_is_never_part_of_the_key() {
        for uri in [
            "https://user:secret@API.example:8443/v2",
            "https://secret@api.example:8443/v2",
            "https://a%40b:secret@api.example:8443/",
        ] {
            let request = Request::get(uri).body(()).unwrap();
            let key = request_authority(&request);
            assert_eq!(key.as_deref(), Some("api.example:8443"), "{uri}");
        }
        let request = Request::get("http://user:secret@[::1]/").body(()).unwrap();
        assert_eq!(request_authority(&request).as_deref(), Some("[::1]"));
        assert_eq!(
            request_authority(&with_host(b"user:secret@host.example")).as_deref(),
            Some("host.example")
        );
    }

    #[test]
    fn hostile_host_headers_give_no_key() {
        assert_eq!(
            request_authority(&Request::get("/").body(()).unwrap()),
            None
        );
        assert_eq!(request_authority(&with_host(b"a b")), None);
        assert_eq!(request_authority(&with_host(b"\xff\xfe")), None);
        assert_eq!(request_authority(&with_host(&[b'a'; 300])), None);
        assert_eq!(
            request_authority(&with_host(b"Host.Example:80")).as_deref(),
            Some("host.example:80")
        );
    }
}
