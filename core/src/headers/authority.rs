use std::borrow::Cow;

use http::Request;
use http::uri::Authority;

/// The longest authority [`request_authority`] returns: a DNS name (253) and a port. Longer
/// `Host` values come only from clients making up names, and each would be a key of its own.
const MAX_AUTHORITY_LEN: usize = 253 + 6;

/// The authority a request is for, lowercased (host names are case-insensitive), as keyed
/// layers group requests by it: the URI's authority (`host:port`, as a client sends it), else the
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
