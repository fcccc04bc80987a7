//! What a refused request is answered with: [`Rejection`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use tollway_core::headers::whole_seconds_ceil;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// A rate limit or quota is used up.
    RateLimited,
    /// The key has as many requests in progress as it may.
    Concurrency,
    /// The priority queue is full (or a higher-priority request took this one's place).
    QueueFull,
    /// A fleet's rate limits could not be checked (Redis unavailable) and a limit that applies
    /// fails closed: `503`.
    StoreUnavailable,
}

/// What a rejection body is built from.
#[derive(Debug, Clone, Copy)]
pub struct RejectionInfo<'a> {
    /// Why.
    pub kind: RejectionKind,
    /// The status the response will have.
    pub status: StatusCode,
    /// When the client may try again, if known.
    pub retry_after: Option<Duration>,
    /// The refusing policy's name, for a rate limit.
    pub policy: Option<&'a str>,
}

type BodyFn = dyn Fn(&RejectionInfo<'_>) -> (HeaderValue, Bytes) + Send + Sync;

/// The status and body of a rate-limit rejection (and the body of concurrency and queue
/// rejections, whose statuses are set where those limits are configured).
///
/// The default is `429` with an `application/problem+json` body of type `quota-exceeded`
/// (RFC 9457, draft-ietf-httpapi-ratelimit-headers). A fixed JSON body instead:
///
/// ```
/// use http::StatusCode;
/// use tollway_limiter::server::Rejection;
///
/// let fixed = Rejection::fixed(
///     StatusCode::TOO_MANY_REQUESTS,
///     "application/json",
///     r#"{"status":"error","message":"Rate limit exceeded. Please try again later.","data":null}"#,
/// );
/// # let _ = fixed;
/// ```
#[derive(Clone)]
pub struct Rejection {
    status: StatusCode,
    body: Arc<BodyFn>,
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Default for Rejection {
    fn default() -> Self {
        Self::problem()
    }
}

/// The problem type for a used-up quota (draft-ietf-httpapi-ratelimit-headers).
pub const QUOTA_EXCEEDED_TYPE: &str =
    "https://iana.org/assignments/http-problem-types#quota-exceeded";

impl Rejection {
    /// `429 Too Many Requests` with an `application/problem+json` body.
    pub fn problem() -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: Arc::new(problem_body),
        }
    }

    /// `status` with the same body for every rejection.
    pub fn fixed(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        let content_type = HeaderValue::from_static(content_type);
        Self {
            status,
            body: Arc::new(move |_: &RejectionInfo<'_>| (content_type.clone(), body.clone())),
        }
    }

    /// `status` with a body (content type and bytes) computed for each rejection.
    pub fn custom<F>(status: StatusCode, body: F) -> Self
    where
        F: Fn(&RejectionInfo<'_>) -> (HeaderValue, Bytes) + Send + Sync + 'static,
    {
        Self {
            status,
            body: Arc::new(body),
        }
    }

    /// The status of a rate-limit rejection.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn response(
        &self,
        kind: RejectionKind,
        status: StatusCode,
        retry_after: Option<Duration>,
        policy: Option<&str>,
    ) -> Response<Body> {
        let info = RejectionInfo {
            kind,
            status,
            retry_after,
            policy,
        };
        let (content_type, bytes) = (self.body)(&info);
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, content_type);
        response
    }
}

fn problem_body(info: &RejectionInfo<'_>) -> (HeaderValue, Bytes) {
    let (problem_type, title) = match info.kind {
        RejectionKind::RateLimited => (
            QUOTA_EXCEEDED_TYPE,
            "Request cannot be satisfied as assigned quota has been exceeded",
        ),
        RejectionKind::Concurrency => (
            QUOTA_EXCEEDED_TYPE,
            "Too many requests in progress for this client",
        ),
        RejectionKind::QueueFull => ("about:blank", "The server is busy"),
        RejectionKind::StoreUnavailable => {
            ("about:blank", "The rate limits cannot be checked right now")
        }
    };
    let mut detail = String::new();
    if let Some(policy) = info.policy {
        detail.push_str("policy ");
        push_escaped(&mut detail, policy);
        detail.push_str(" exceeded");
    }
    if let Some(wait) = info.retry_after {
        if !detail.is_empty() {
            detail.push_str("; ");
        }
        detail.push_str(&format!("retry in {} s", whole_seconds_ceil(wait)));
    }
    let mut json = format!(
        r#"{{"type":"{problem_type}","title":"{title}","status":{}"#,
        info.status.as_u16()
    );
    if !detail.is_empty() {
        json.push_str(r#","detail":""#);
        json.push_str(&detail);
        json.push('"');
    }
    json.push('}');
    (
        HeaderValue::from_static("application/problem+json"),
        Bytes::from(json),
    )
}

/// Appends `text` as the inside of a JSON string.
fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn body(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn default_is_problem_json_with_escaped_policy() {
        let response = Rejection::problem().response(
            RejectionKind::RateLimited,
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_millis(300)),
            Some(r#"a"b"#),
        );
        assert_eq!(response.status(), 429);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let json: serde_json::Value = serde_json::from_str(&body(response).await).unwrap();
        assert_eq!(json["type"], QUOTA_EXCEEDED_TYPE);
        assert_eq!(json["status"], 429);
        assert_eq!(json["detail"], r#"policy a"b exceeded; retry in 1 s"#);
    }

    #[tokio::test]
    async fn fixed_and_custom_bodies() {
        let legacy = r#"{"status":"error","message":"Rate limit exceeded. Please try again later.","data":null}"#;
        let fixed = Rejection::fixed(StatusCode::TOO_MANY_REQUESTS, "application/json", legacy);
        let response = fixed.response(
            RejectionKind::RateLimited,
            fixed.status(),
            None,
            Some("hourly"),
        );
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(body(response).await, legacy);

        let custom = Rejection::custom(StatusCode::PAYMENT_REQUIRED, |info| {
            (
                HeaderValue::from_static("text/plain"),
                Bytes::from(format!("{:?} {}", info.kind, info.status.as_u16())),
            )
        });
        assert_eq!(custom.status(), 402);
        let response = custom.response(
            RejectionKind::Concurrency,
            StatusCode::PAYMENT_REQUIRED,
            None,
            None,
        );
        assert_eq!(response.status(), 402);
        assert_eq!(body(response).await, "Concurrency 402");
    }
}
