//! Revalidation: asking the origin whether a stale entry still holds (`If-None-Match`,
//! `If-Modified-Since`), and refreshing it from a `304 Not Modified` without downloading the
//! body again.

use http::header::{
    AGE, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, SET_COOKIE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName};

use crate::entry::StoredResponse;
use crate::status::CACHE_STATUS_HEADER;

/// Whether a request is conditional: only the origin can answer it, and its answer (a `304`, a
/// `412`) is about the caller's copy, not the resource.
pub(crate) fn is_conditional(headers: &HeaderMap) -> bool {
    [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
    ]
    .iter()
    .any(|name| headers.contains_key(name))
}

/// Whether a response carries a validator (`ETag` or `Last-Modified`) to revalidate it with.
pub(crate) fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED)
}

/// Turns `headers` (a copy of the caller's GET) into a conditional request for `entry`. Returns
/// whether it did (the entry has a validator).
pub(crate) fn make_conditional(headers: &mut HeaderMap, entry: &StoredResponse) -> bool {
    let etag = entry.headers.get(ETAG);
    let modified = entry.headers.get(LAST_MODIFIED);
    if let Some(etag) = etag {
        headers.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = modified {
        headers.insert(IF_MODIFIED_SINCE, modified.clone());
    }
    etag.is_some() || modified.is_some()
}

/// A `304` whose validator names another version than the stored one: it cannot refresh it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mismatch;

/// The stored headers, updated by those of a `304` that answered our conditional request
/// (RFC 9111 §4.3.4): each field the `304` carries replaces the stored field, except those
/// that describe the body, which is the stored one.
pub(crate) fn refresh(
    entry: &StoredResponse,
    not_modified: &HeaderMap,
) -> Result<HeaderMap, Mismatch> {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let text = |headers: &HeaderMap, name| {
        headers
            .get(&name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    match (text(&entry.headers, ETAG), text(not_modified, ETAG)) {
        (Some(stored), Some(new)) if opaque(&stored) != opaque(&new) => return Err(Mismatch),
        (None, _) => {
            if let (Some(stored), Some(new)) = (
                text(&entry.headers, LAST_MODIFIED),
                text(not_modified, LAST_MODIFIED),
            ) && stored.trim() != new.trim()
            {
                return Err(Mismatch);
            }
        }
        _ => {}
    }
    let mut merged = entry.headers.clone();
    let keep_stored: [HeaderName; 13] = [
        CONTENT_LENGTH,
        CONTENT_ENCODING,
        CONTENT_RANGE,
        TRANSFER_ENCODING,
        CONNECTION,
        TRAILER,
        UPGRADE,
        SET_COOKIE,
        AGE,
        CACHE_STATUS_HEADER,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("te"),
        HeaderName::from_static("proxy-authenticate"),
    ];
    for name in not_modified.keys() {
        if keep_stored.contains(name) {
            continue;
        }
        merged.remove(name);
        for value in not_modified.get_all(name) {
            merged.append(name.clone(), value.clone());
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;
    use http::StatusCode;

    use super::*;

    fn stored(pairs: &[(&'static str, &'static str)]) -> StoredResponse {
        let now = SystemTime::now();
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        StoredResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"body"),
            stored_at: now,
            expires_at: now,
            stale_until: now,
            keep_until: now,
        }
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        stored(pairs).headers
    }

    #[test]
    fn conditional_headers_come_from_the_entry() {
        let entry = stored(&[
            ("etag", "W/\"v1\""),
            ("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT"),
        ]);
        let mut headers = map(&[("accept", "application/json")]);
        assert!(make_conditional(&mut headers, &entry));
        assert_eq!(headers["if-none-match"], "W/\"v1\"");
        assert_eq!(
            headers["if-modified-since"],
            "Tue, 01 Jan 2030 00:00:00 GMT"
        );
        assert!(is_conditional(&headers));
        let mut plain = HeaderMap::new();
        assert!(!make_conditional(&mut plain, &stored(&[])));
        assert!(!is_conditional(&plain));
    }

    #[test]
    fn a_304_replaces_fields_it_carries_but_never_those_of_the_body() {
        let entry = stored(&[
            ("etag", "\"v1\""),
            ("content-length", "4"),
            ("link", "<a>; rel=next"),
            ("link", "<b>; rel=last"),
            ("cache-control", "max-age=5"),
            ("x-kept", "yes"),
        ]);
        let merged = refresh(
            &entry,
            &map(&[
                ("etag", "W/\"v1\""),
                ("content-length", "0"),
                ("cache-control", "max-age=60"),
                ("link", "<c>; rel=next"),
                ("age", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(merged["cache-control"], "max-age=60");
        assert_eq!(merged["content-length"], "4");
        assert_eq!(merged["x-kept"], "yes");
        assert_eq!(merged.get_all("link").iter().count(), 1);
        assert!(!merged.contains_key("age"));
    }

    #[test]
    fn a_304_naming_another_version_is_a_mismatch() {
        let tagged = stored(&[("etag", "\"v1\"")]);
        assert_eq!(refresh(&tagged, &map(&[("etag", "\"v2\"")])), Err(Mismatch));
        assert!(refresh(&tagged, &map(&[])).is_ok());
        let dated = stored(&[("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT")]);
        assert_eq!(
            refresh(
                &dated,
                &map(&[("last-modified", "Wed, 02 Jan 2030 00:00:00 GMT")])
            ),
            Err(Mismatch)
        );
        assert!(refresh(&dated, &map(&[("etag", "\"new\"")])).is_ok());
    }
}
