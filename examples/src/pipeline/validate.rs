//! What the pipeline accepts as a followers page: [`validate_page`], in one place, so that the
//! run loop and a response cache (which should store only what passes) judge alike.

use std::fmt;

use http::StatusCode;

use super::http::FollowersPage;

/// The longest `next_page_id` accepted, in bytes. Cursors are short tokens; a longer one is a
/// broken or hostile answer, and it would be copied into every later request and journal line.
pub const MAX_CURSOR_BYTES: usize = 1024;

/// Why a `200` is not a followers page the pipeline can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPage {
    reason: String,
}

impl InvalidPage {
    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for InvalidPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed page: {}", self.reason)
    }
}

impl std::error::Error for InvalidPage {}

/// Parses and checks a followers page: JSON of the shape
/// `{"response": {"users": [..]}, "next_page_id": ".." | null}`, with a cursor of at most
/// [`MAX_CURSOR_BYTES`]. An empty `next_page_id` means the last page, as `null` does.
///
/// # Errors
///
/// [`InvalidPage`] with the reason: not JSON, cut short, the wrong shape, an oversized cursor.
///
/// ```
/// use tollway_examples::pipeline::validate_page;
///
/// let page = validate_page(br#"{"response": {"users": [{"pk": "1"}]}, "next_page_id": ""}"#)?;
/// assert_eq!((page.response.users.len(), page.next_page_id), (1, None));
/// assert!(validate_page(b"<html>502 Bad Gateway</html>").is_err());
/// assert!(validate_page(br#"{"response": {"users": [{"pk": "1"}"#).is_err());
/// assert!(validate_page(br#"{"data": [], "cursor": null}"#).is_err());
/// # Ok::<(), tollway_examples::pipeline::InvalidPage>(())
/// ```
pub fn validate_page(body: &[u8]) -> Result<FollowersPage, InvalidPage> {
    let mut page: FollowersPage = serde_json::from_slice(body).map_err(|e| InvalidPage {
        reason: e.to_string(),
    })?;
    if let Some(next) = &page.next_page_id
        && next.len() > MAX_CURSOR_BYTES
    {
        return Err(InvalidPage {
            reason: format!(
                "next_page_id of {} bytes is over {MAX_CURSOR_BYTES}",
                next.len()
            ),
        });
    }
    page.next_page_id = page.next_page_id.filter(|id| !id.is_empty());
    Ok(page)
}

/// Whether a response may be kept (in a cache, say): anything but a `200`, which must be a page
/// [`validate_page`] accepts.
///
/// This is the check a response cache's validation hook should make, so that a broken `200`
/// is never stored and a retry asks the upstream again.
pub fn accept_response(status: StatusCode, body: &[u8]) -> bool {
    status != StatusCode::OK || validate_page(body).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_page_of_the_right_shape_passes() {
        let good = br#"{"response": {"users": []}, "next_page_id": "abc"}"#;
        assert_eq!(
            validate_page(good).unwrap().next_page_id.as_deref(),
            Some("abc")
        );
        assert!(accept_response(StatusCode::OK, good));
        assert!(!accept_response(StatusCode::OK, &good[..good.len() / 2]));
        assert!(!accept_response(StatusCode::OK, b""));
        assert!(accept_response(StatusCode::NOT_FOUND, b"not json"));
        let long = format!(
            r#"{{"response": {{"users": []}}, "next_page_id": "{}"}}"#,
            "x".repeat(MAX_CURSOR_BYTES + 1)
        );
        let error = validate_page(long.as_bytes()).unwrap_err();
        assert!(error.reason().contains("next_page_id"), "{error}");
    }
}
