//! Building the responses the cache returns.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Response};

use crate::body::CacheBody;
use crate::entry::StoredResponse;
use crate::status::{CACHE_STATUS_HEADER, CacheStatus};

/// An inner response passed on untouched, marked `miss`.
pub(crate) fn pass_through<B>(response: Response<B>) -> Response<CacheBody<B>> {
    CacheStatus::Miss.record();
    let mut response = response.map(CacheBody::inner);
    response
        .headers_mut()
        .insert(CACHE_STATUS_HEADER, CacheStatus::Miss.header_value());
    response
}

/// A response from a stored entry, marked `status` (with its `Age` for hits and stale ones).
pub(crate) fn from_entry<B>(
    entry: &StoredResponse,
    status: CacheStatus,
    now: SystemTime,
) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::full(entry.body.clone()));
    *response.status_mut() = entry.status;
    let headers = response.headers_mut();
    headers.clone_from(&entry.headers);
    headers.insert(CACHE_STATUS_HEADER, status.header_value());
    if matches!(status, CacheStatus::Hit | CacheStatus::Stale) {
        headers.insert(
            http::header::AGE,
            HeaderValue::from(entry.age(now).as_secs()),
        );
    }
    response
}

/// The response headers worth keeping: not hop-by-hop ones, not `Set-Cookie` (a session is
/// no cached fact), not what the cache adds itself.
pub(crate) fn storable_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for name in [
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::SET_COOKIE,
        http::header::AGE,
        http::header::HeaderName::from_static("keep-alive"),
        CACHE_STATUS_HEADER,
    ] {
        kept.remove(name);
    }
    kept
}
