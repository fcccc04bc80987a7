//! The HTTP side: the base client and the followers API's requests and answers.
//!
//! The run loop takes any tower service of the shape [`run`](super::run) names; the tollway
//! stack ([`tollway_stack`](super::tollway_stack)) goes in front of [`base_client`].

use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tollway_core::BoxError;
use tower::util::MapErr;
use tower::{Layer, Service, ServiceExt};

use super::guard::{BodyTooLarge, ExchangeGuard, ExchangeGuardLayer, GuardedBody};

/// How long one exchange may take, headers and body together, by default: 20 s, as the API
/// document's example client allows (`httpx.AsyncClient(timeout=20)`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The request type every service in the pipeline takes.
pub type ApiRequest = Request<Full<Bytes>>;

/// The base client: hyper-util's pooled HTTP/1 client sending bodies of type `B`, its errors
/// boxed, each exchange (headers and body) limited in time and its body in size by an
/// [`ExchangeGuard`]. The tollway stack goes in front of it with
/// `B = ReplayBody<Full<Bytes>>` (see [`tollway_stack`](super::tollway_stack)).
pub type BaseClient<B = Full<Bytes>> = ExchangeGuard<
    MapErr<Client<HttpConnector, B>, fn(hyper_util::client::legacy::Error) -> BoxError>,
>;

/// The response body of the [`BaseClient`].
pub type BaseBody = GuardedBody<Incoming>;

/// The base client with the defaults: [`REQUEST_TIMEOUT`] per exchange, bodies of at most
/// [`DEFAULT_MAX_BODY`](super::DEFAULT_MAX_BODY); clones share one connection pool.
pub fn base_client<B>() -> BaseClient<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    base_client_with(REQUEST_TIMEOUT, super::config::DEFAULT_MAX_BODY)
}

/// The base client allowing each exchange `timeout`, headers and body together, and each
/// response body `max_body` bytes.
pub fn base_client_with<B>(timeout: Duration, max_body: u64) -> BaseClient<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let client = Client::builder(TokioExecutor::new()).build_http::<B>();
    let boxed: fn(hyper_util::client::legacy::Error) -> BoxError = |e| Box::new(e);
    ExchangeGuardLayer::new(timeout, max_body).layer(MapErr::new(client, boxed))
}

/// A followers request: `GET {base}/v2/user/followers?user_id=&page_id=` with the access key.
pub fn followers_request(base_url: &str, key: &str, user_id: &str, page_id: &str) -> ApiRequest {
    let uri = format!(
        "{}/v2/user/followers?user_id={}&page_id={}",
        base_url.trim_end_matches('/'),
        encode(user_id),
        encode(page_id)
    );
    get(&uri, key)
}

fn get(uri: &str, key: &str) -> ApiRequest {
    Request::get(uri)
        .header("x-access-key", key)
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| {
            // `run` checks the base URL and the key before it sends anything, and query values
            // are percent-encoded, so this is for other callers: a request without a URI, which
            // the client refuses with an error, rather than a panic.
            Request::new(Full::new(Bytes::new()))
        })
}

/// Percent-encodes a query value (user ids and cursors are opaque to us).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A followers page as the API sends it.
#[derive(Deserialize, Debug)]
pub struct FollowersPage {
    /// The page's content.
    pub response: FollowersList,
    /// The cursor of the next page; `null` on the last.
    pub next_page_id: Option<String>,
}

/// The `response` object of a followers page.
#[derive(Deserialize, Debug)]
pub struct FollowersList {
    /// The followers, kept as the API wrote them.
    pub users: Vec<serde_json::Value>,
}

/// Reads a whole body of at most `limit` bytes.
///
/// # Errors
///
/// The body's own error, boxed; [`BodyTooLarge`] past `limit`.
pub(crate) async fn read_body<B>(body: B, limit: u64) -> Result<Bytes, BoxError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => {
            Err(Box::new(BodyTooLarge::new(limit, None)))
        }
        Err(error) => Err(error),
    }
}

/// The most of an upstream's `detail` kept: enough for any real message, not a screenful.
const MAX_DETAIL_CHARS: usize = 200;

/// The `detail` of an error body (`{"detail": "User not found"}`), if it has one, made safe to
/// print: it reaches the terminal (progress notes, the report, the dead letters), so control
/// characters (escape sequences, newlines) are written escaped and it is cut to
/// [`MAX_DETAIL_CHARS`].
pub(crate) fn detail(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Detail {
        detail: String,
    }
    let detail = serde_json::from_slice::<Detail>(body).ok()?.detail;
    let cut = detail
        .char_indices()
        .nth(MAX_DETAIL_CHARS)
        .map_or(detail.as_str(), |(at, _)| &detail[..at]);
    let mut out = super::report::printable(cut).into_owned();
    if cut.len() < detail.len() {
        out.push_str("...");
    }
    Some(out)
}

/// Reads the account's `rate` from `GET {base}/sys/balance` (what `--rate auto` does), trying
/// up to three times a second apart if the upstream is down.
///
/// # Errors
///
/// The last error: a transport error, a status other than 200, or a body without `rate`.
pub async fn fetch_rate(base_url: &str, key: &str) -> Result<NonZeroU32, BoxError> {
    #[derive(Deserialize)]
    struct Balance {
        rate: u32,
    }
    let uri = format!("{}/sys/balance", base_url.trim_end_matches('/'));
    let mut client = base_client::<Full<Bytes>>();
    let mut last: BoxError = "no attempt".into();
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let response = match client.ready().await?.call(get(&uri, key)).await {
            Ok(response) => response,
            Err(error) => {
                last = error;
                continue;
            }
        };
        let status = response.status();
        let body = read_body(response.into_body(), 64 * 1024).await?;
        if status == StatusCode::OK {
            let balance: Balance = serde_json::from_slice(&body)
                .map_err(|e| format!("GET /sys/balance: unexpected body: {e}"))?;
            return NonZeroU32::new(balance.rate)
                .ok_or_else(|| "GET /sys/balance: rate is 0".into());
        }
        last = format!("GET /sys/balance answered {status}").into();
        if !status.is_server_error() {
            break;
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        let request = followers_request("http://h:1/", "k", "a b&c", "");
        assert_eq!(
            request.uri(),
            "http://h:1/v2/user/followers?user_id=a%20b%26c&page_id="
        );
        assert_eq!(request.headers()["x-access-key"], "k");
    }

    #[test]
    fn pages_and_details_parse() {
        let page: FollowersPage = serde_json::from_slice(
            br#"{"response": {"users": [{"pk": "1"}]}, "next_page_id": null}"#,
        )
        .unwrap();
        assert_eq!(page.response.users.len(), 1);
        assert_eq!(page.next_page_id, None);
        assert_eq!(
            detail(br#"{"detail": "User not found"}"#).as_deref(),
            Some("User not found")
        );
        assert_eq!(detail(b"<html>"), None);
    }

    #[test]
    fn a_hostile_detail_cannot_drive_the_terminal_or_flood_it() {
        // The upstream's text reaches the terminal (progress notes, the report): escape
        // sequences that clear the screen or retitle the window must arrive as plain text,
        // and a megabyte of detail as a line.
        let body = br#"{"detail": "busy\u001b[2J\u001b]0;pwned\u0007\nnext line"}"#;
        let got = detail(body).unwrap();
        assert!(!got.chars().any(char::is_control), "{got:?}");
        assert!(got.starts_with("busy"), "{got:?}");
        let long = format!(r#"{{"detail": "{}"}}"#, "x".repeat(1 << 20));
        let got = detail(long.as_bytes()).unwrap();
        assert!(got.len() <= 300, "{} bytes", got.len());
    }
}
