//! The `server` example binary, run as a process on 127.0.0.1:0 and driven over real sockets:
//! per-IP burst and rate, 429 with `Retry-After` and the standard headers, and the per-key
//! hourly quota for requests with an `x-api-key`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use axum::body::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The server process; killed when dropped, so a failing test leaves nothing behind.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Result<Server, BoxError> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut server = Server {
        child,
        url: String::new(),
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    server.url = line
        .trim()
        .strip_prefix("server listening on ")
        .ok_or_else(|| format!("unexpected first line {line:?}"))?
        .to_owned();
    Ok(server)
}

async fn get(
    client: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
    api_key: Option<&str>,
) -> Result<(http::response::Parts, String), BoxError> {
    let mut request = Request::get(url);
    if let Some(key) = api_key {
        request = request.header("x-api-key", key);
    }
    let response = client.request(request.body(Empty::new())?).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((parts, String::from_utf8(body.to_vec())?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_burst_then_429_with_headers() -> Result<(), BoxError> {
    // One a second per IP, three at once: the fourth within the second is refused.
    let server = start(&["--rate", "1", "--burst", "3"])?;
    let url = format!("{}/hello", server.url);
    let client = Client::builder(TokioExecutor::new()).build_http();
    for remaining in ["2", "1", "0"] {
        let (parts, body) = get(&client, &url, None).await?;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(body, "hello\n");
        assert_eq!(parts.headers["x-ratelimit-remaining"], remaining);
        assert_eq!(parts.headers["ratelimit-policy"], r#""per-ip";q=3;w=3"#);
    }
    let (refused, body) = get(&client, &url, None).await?;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    // Under a second to wait: rounded up to 1, never 0.
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(refused.headers["content-type"], "application/problem+json");
    assert!(body.contains("quota-exceeded"), "{body}");
    // A second later one more is admitted.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(get(&client, &url, None).await?.0.status, StatusCode::OK);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_quota_is_checked_with_the_ip_limit() -> Result<(), BoxError> {
    // One a second per IP, a hundred at once: the test takes far less than the second a refill
    // would need to hide a lost permit.
    let server = start(&["--rate", "1", "--burst", "100", "--key-quota", "2"])?;
    let url = format!("{}/hello", server.url);
    let client = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..2 {
        assert_eq!(
            get(&client, &url, Some("k1")).await?.0.status,
            StatusCode::OK
        );
    }
    let (refused, _) = get(&client, &url, Some("k1")).await?;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    // An hour's quota of two: the next one in 30 minutes.
    let retry_after: u64 = refused.headers["retry-after"].to_str()?.parse()?;
    assert!((1_790..=1_800).contains(&retry_after), "{retry_after}");
    // Another key, and no key at all, are still admitted; the refused requests took nothing
    // from the IP limit (4 admitted of 100).
    assert_eq!(
        get(&client, &url, Some("k2")).await?.0.status,
        StatusCode::OK
    );
    let (anonymous, _) = get(&client, &url, None).await?;
    assert_eq!(anonymous.status, StatusCode::OK);
    let ratelimit = anonymous.headers["ratelimit"].to_str()?;
    let remaining: u64 = ratelimit
        .strip_prefix(r#""per-ip";r="#)
        .and_then(|rest| rest.split(';').next())
        .ok_or_else(|| format!("{ratelimit:?}"))?
        .parse()?;
    assert!(remaining >= 96, "{ratelimit}");
    Ok(())
}
