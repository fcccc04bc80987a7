//! Which requests may be sent twice.
//!
//! A request may be resent when its method is idempotent (RFC 9110 §9.2.2) or when it carries an
//! `Idempotency-Key`, which asks the server to apply it at most once.
//!
//! ```
//! use http::{Method, Request};
//! use tollway_core::idempotency::{IDEMPOTENCY_KEY, is_safe_to_resend};
//!
//! let get = Request::get("/v2/user/followers").body(()).unwrap();
//! assert!(is_safe_to_resend(&get));
//! let post = Request::post("/orders").body(()).unwrap();
//! assert!(!is_safe_to_resend(&post));
//! let keyed = Request::post("/orders").header(IDEMPOTENCY_KEY, "order-42").body(()).unwrap();
//! assert!(is_safe_to_resend(&keyed));
//! ```

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};

/// The `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Whether `method` is idempotent: GET, HEAD, OPTIONS, TRACE, PUT and DELETE.
pub fn is_idempotent_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The request's `Idempotency-Key`, if it carries a non-empty one.
pub fn idempotency_key(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(IDEMPOTENCY_KEY).filter(|v| !v.is_empty())
}

/// Whether sending `request` twice is harmless: an idempotent method or an `Idempotency-Key`.
pub fn is_safe_to_resend<B>(request: &Request<B>) -> bool {
    is_idempotent_method(request.method()) || idempotency_key(request.headers()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(is_idempotent_method(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent_method(&m), "{m}");
        }
    }

    #[test]
    fn empty_key_does_not_count() {
        let req = Request::post("/")
            .header(IDEMPOTENCY_KEY, "")
            .body(())
            .unwrap();
        assert!(!is_safe_to_resend(&req));
    }
}
