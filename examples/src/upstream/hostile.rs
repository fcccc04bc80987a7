//! The simulator's hostile modes: [`Hostile`], the ways a broken or hostile API answers, for
//! testing that a client survives them.
//!
//! A mode applies to the first [`UpstreamBuilder::hostile_count`](super::UpstreamBuilder::hostile_count)
//! followers answers it can spoil (all of them by default); after that the simulator behaves.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// A `Retry-After` no clock can add to a time: 20 digits, more than `u64::MAX` seconds.
pub const OVERFLOWING_RETRY_AFTER: &str = "99999999999999999999";

/// `Retry-After` of [`Hostile::LongRetryAfter`]: a day, in seconds.
pub const DAY_RETRY_AFTER: &str = "86400";

/// `X-RateLimit-Reset` of [`Hostile::FarReset`]: a unix timestamp in the year 2286.
pub const FAR_RESET: &str = "9999999999";

/// `Retry-After` of [`Hostile::Year9999`]: an HTTP-date at the end of time.
pub const YEAR_9999: &str = "Fri, 31 Dec 9999 23:59:59 GMT";

/// The largest page `oversized:BYTES` takes from the command line: 64 GiB.
pub const MAX_OVERSIZED: u64 = 64 << 30;

/// A way the simulator misbehaves on the followers endpoint.
///
/// Modes that refuse (`RetryAfterOverflow`, `LongRetryAfter`, `FarReset`, `Year9999`) answer
/// before the rate limit and cost nothing; modes that spoil a page (`InvalidJson`,
/// `TruncatedJson`, `WrongShape`, `Trickle`, `Oversized`) take the normal path, so the spoilt
/// `200` costs its credit like any other; `CyclicPages` changes the data.
///
/// The upstream binary takes them as `--hostile NAME` (`NAME:ARG` for the two with an argument),
/// the names [`Display`](fmt::Display) writes and [`FromStr`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hostile {
    /// `500`, `500`, then `429` with `Retry-After: 99999999999999999999`
    /// ([`OVERFLOWING_RETRY_AFTER`]); `retry-after-overflow`.
    RetryAfterOverflow,
    /// `429` with `Retry-After: 86400` (a day); `long-retry-after`.
    LongRetryAfter,
    /// `503` with `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` in 2286 ([`FAR_RESET`]);
    /// `far-reset`.
    FarReset,
    /// `503` with `Retry-After` an HTTP-date in the year 9999 ([`YEAR_9999`]); `year-9999`.
    Year9999,
    /// A `200` whose body is not JSON; `invalid-json`.
    InvalidJson,
    /// A `200` whose body is the first half of the page (the HTTP framing is whole, the JSON is
    /// not); `truncated-json`.
    TruncatedJson,
    /// A `200` with valid JSON of the wrong shape (no `response.users`); `wrong-shape`.
    WrongShape,
    /// Every user's last page has a `next_page_id` that points back to an earlier page (the
    /// second; the first, under another id, for one-page users); `cycle`.
    CyclicPages,
    /// `200` bodies sent one byte at a time, this long apart; `trickle:MILLIS`.
    Trickle(Duration),
    /// `200` pages padded with made-up followers to at least this many bytes, valid JSON;
    /// `oversized:BYTES`.
    Oversized(usize),
}

impl Hostile {
    /// Whether the mode answers in place of the rate limit and the page (refusals).
    pub(crate) fn refuses(self) -> bool {
        matches!(
            self,
            Self::RetryAfterOverflow | Self::LongRetryAfter | Self::FarReset | Self::Year9999
        )
    }

    /// The refusal for the `nth` (0-based) spoilt answer of a refusing mode.
    pub(crate) fn refusal(self, nth: u64) -> Response {
        let (status, header, value) = match self {
            Self::RetryAfterOverflow if nth < 2 => {
                return detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
            }
            Self::RetryAfterOverflow => (
                StatusCode::TOO_MANY_REQUESTS,
                RETRY_AFTER.as_str(),
                OVERFLOWING_RETRY_AFTER,
            ),
            Self::LongRetryAfter => (
                StatusCode::TOO_MANY_REQUESTS,
                RETRY_AFTER.as_str(),
                DAY_RETRY_AFTER,
            ),
            Self::FarReset => (
                StatusCode::SERVICE_UNAVAILABLE,
                "x-ratelimit-reset",
                FAR_RESET,
            ),
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                RETRY_AFTER.as_str(),
                YEAR_9999,
            ),
        };
        let mut response = detail(status, "Come back much later");
        let headers = response.headers_mut();
        headers.insert(header, HeaderValue::from_static(value));
        if self == Self::FarReset {
            headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        }
        response
    }

    /// Whether the mode spoils the body of a `200` page.
    pub(crate) fn spoils_pages(self) -> bool {
        matches!(
            self,
            Self::InvalidJson
                | Self::TruncatedJson
                | Self::WrongShape
                | Self::Trickle(_)
                | Self::Oversized(_)
        )
    }

    /// The spoilt `200` for a page whose true body is `page` (`users` the followers' JSON array
    /// and `next` the `next_page_id` JSON value, for padding).
    pub(crate) fn spoil(self, page: Bytes, users: &str, next: &str) -> Response {
        match self {
            Self::InvalidJson => ok(Body::from("<html>502 Bad Gateway</html>")),
            Self::TruncatedJson => ok(Body::from(page.slice(..page.len() / 2))),
            Self::WrongShape => ok(Body::from(r#"{"data": {"followers": []}, "cursor": null}"#)),
            Self::Trickle(every) => ok(trickle(page, every)),
            Self::Oversized(bytes) => {
                let (body, len) = padded(users, next, bytes);
                let mut response = ok(body);
                response
                    .headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(len));
                response
            }
            _ => ok(Body::from(page)),
        }
    }
}

fn detail(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "detail": message }))).into_response()
}

fn ok(body: Body) -> Response {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `page`, one byte every `every`.
fn trickle(page: Bytes, every: Duration) -> Body {
    let stream = futures_util::stream::unfold(0usize, move |at| {
        let page = page.clone();
        async move {
            if at >= page.len() {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(page.slice(at..=at)), at + 1))
        }
    });
    Body::from_stream(stream)
}

/// A page holding `users` then made-up followers, at least `bytes` long, streamed in chunks so
/// that the simulator never holds it whole; and its exact length.
fn padded(users: &str, next: &str, bytes: usize) -> (Body, u64) {
    const FILLER: &str = r#"{"pk":"0","username":"padding_padding_padding_padding"}"#;
    let head = format!(r#"{{"response":{{"users":{}"#, &users[..users.len() - 1]);
    let tail = format!(r#"]}},"next_page_id":{next}}}"#);
    let separator = usize::from(users != "[]");
    let fixed = head.len() + tail.len();
    let fillers = bytes
        .saturating_sub(fixed)
        .div_ceil(FILLER.len() + 1)
        .max(1);
    let len = fixed + fillers * (FILLER.len() + 1) - 1 + separator;
    const PER_CHUNK: usize = 1024;
    let chunks = fillers.div_ceil(PER_CHUNK);
    let parts = std::iter::once(Bytes::from(head))
        .chain((0..chunks).map(move |chunk| {
            let count = PER_CHUNK.min(fillers - chunk * PER_CHUNK);
            let mut out = String::with_capacity(count * (FILLER.len() + 1));
            for i in 0..count {
                if chunk > 0 || i > 0 || separator == 1 {
                    out.push(',');
                }
                out.push_str(FILLER);
            }
            Bytes::from(out)
        }))
        .chain(std::iter::once(Bytes::from(tail)));
    let stream = futures_util::stream::iter(parts.map(Ok::<_, std::io::Error>));
    (Body::from_stream(stream), len as u64)
}

impl fmt::Display for Hostile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RetryAfterOverflow => f.write_str("retry-after-overflow"),
            Self::LongRetryAfter => f.write_str("long-retry-after"),
            Self::FarReset => f.write_str("far-reset"),
            Self::Year9999 => f.write_str("year-9999"),
            Self::InvalidJson => f.write_str("invalid-json"),
            Self::TruncatedJson => f.write_str("truncated-json"),
            Self::WrongShape => f.write_str("wrong-shape"),
            Self::CyclicPages => f.write_str("cycle"),
            Self::Trickle(every) => write!(f, "trickle:{}", every.as_millis()),
            Self::Oversized(bytes) => write!(f, "oversized:{bytes}"),
        }
    }
}

impl FromStr for Hostile {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (name, arg) = match value.split_once(':') {
            Some((name, arg)) => (name, Some(arg)),
            None => (value, None),
        };
        let number = |what: &str| -> Result<u64, String> {
            arg.ok_or_else(|| format!("`{name}` needs {what}: `{name}:N`"))?
                .parse::<u64>()
                .map_err(|e| format!("`{name}`: {what}: {e}"))
        };
        let mode = match name {
            "retry-after-overflow" => Self::RetryAfterOverflow,
            "long-retry-after" => Self::LongRetryAfter,
            "far-reset" => Self::FarReset,
            "year-9999" => Self::Year9999,
            "invalid-json" => Self::InvalidJson,
            "truncated-json" => Self::TruncatedJson,
            "wrong-shape" => Self::WrongShape,
            "cycle" => Self::CyclicPages,
            "trickle" => Self::Trickle(Duration::from_millis(number("milliseconds per byte")?)),
            "oversized" => match number("a size in bytes")? {
                size if size > MAX_OVERSIZED => {
                    return Err(format!("`oversized`: at most {MAX_OVERSIZED} bytes"));
                }
                size => Self::Oversized(usize::try_from(size).map_err(|e| e.to_string())?),
            },
            other => {
                return Err(format!(
                    "unknown hostile mode `{other}`; one of retry-after-overflow, \
                     long-retry-after, far-reset, year-9999, invalid-json, truncated-json, \
                     wrong-shape, cycle, trickle:MILLIS, oversized:BYTES"
                ));
            }
        };
        if arg.is_some() && !matches!(mode, Self::Trickle(_) | Self::Oversized(_)) {
            return Err(format!("`{name}` takes no argument"));
        }
        Ok(mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn names_round_trip() {
        for mode in [
            Hostile::RetryAfterOverflow,
            Hostile::LongRetryAfter,
            Hostile::FarReset,
            Hostile::Year9999,
            Hostile::InvalidJson,
            Hostile::TruncatedJson,
            Hostile::WrongShape,
            Hostile::CyclicPages,
            Hostile::Trickle(Duration::from_millis(2000)),
            Hostile::Oversized(52_428_800),
        ] {
            assert_eq!(mode.to_string().parse::<Hostile>(), Ok(mode));
        }
        for bad in [
            "",
            "nope",
            "trickle",
            "trickle:x",
            "cycle:3",
            "oversized:-1",
        ] {
            assert!(bad.parse::<Hostile>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_padded_page_is_valid_json_of_the_announced_length() {
        for (users, bytes) in [
            (r#"[{"pk":"1","username":"a"}]"#, 5000),
            ("[]", 10),
            ("[]", 300_000),
        ] {
            let (body, len) = padded(users, r#""next""#, bytes);
            let body = body.collect().await.unwrap().to_bytes();
            assert_eq!(body.len() as u64, len);
            assert!(body.len() >= bytes);
            let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(page["next_page_id"], "next");
            assert!(!page["response"]["users"].as_array().unwrap().is_empty());
        }
    }
}
