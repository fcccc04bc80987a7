//! [`TollwayMiddleware`]: a tower layer as a reqwest-middleware `Middleware`.

use std::fmt;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::Extensions;
use http_body::Body;
use reqwest::ResponseBuilderExt;
use reqwest_middleware::{Error, Middleware, Next};
use tollway_core::{BoxError, BudgetExhausted, CircuitOpen, RateLimited, RetryAfterTooLong};
use tower::{Layer, Service, ServiceExt};

use super::forward::{Forward, Job};

/// Any tower layer (one tollway layer or the whole
/// [`ClientStackLayer`](crate::ClientStackLayer)) as a [`reqwest_middleware::Middleware`];
/// see the [module docs](crate::middleware).
///
/// The layer is applied once per request over a fresh [`Forward`]; tollway layers share
/// their state across those applications, so one `TollwayMiddleware` is one limiter, one
/// breaker, one ledger and one cache for every request of the client.
#[derive(Clone)]
pub struct TollwayMiddleware<L> {
    layer: L,
}

impl<L> TollwayMiddleware<L> {
    /// A middleware running each request through `layer`.
    pub const fn new(layer: L) -> Self {
        Self { layer }
    }

    /// The layer.
    pub const fn layer(&self) -> &L {
        &self.layer
    }
}

impl<L: fmt::Debug> fmt::Debug for TollwayMiddleware<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TollwayMiddleware")
            .field("layer", &self.layer)
            .finish()
    }
}

/// The URL an attempt's response came from (after redirects), kept across the stack.
#[derive(Debug, Clone)]
struct AttemptUrl(reqwest::Url);

#[async_trait::async_trait]
impl<L, RB> Middleware for TollwayMiddleware<L>
where
    L: Layer<Forward> + Send + Sync + 'static,
    L::Service: Service<http::Request<reqwest::Body>, Response = http::Response<RB>> + Send,
    <L::Service as Service<http::Request<reqwest::Body>>>::Error: Into<BoxError>,
    <L::Service as Service<http::Request<reqwest::Body>>>::Future: Send,
    RB: Body + Send + Sync + 'static,
    RB::Data: Into<Bytes>,
    RB::Error: Into<BoxError>,
{
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let url = request.url().clone();
        let mut request = http::Request::<reqwest::Body>::try_from(request)?;
        request.extensions_mut().extend(extensions.clone());

        let (forward, mut jobs) = Forward::new();
        let call = self.layer.layer(forward).oneshot(request);
        tokio::pin!(call);
        let mut attempts = FuturesUnordered::new();
        let result = loop {
            tokio::select! {
                result = &mut call => break result.map_err(Into::into),
                Some(job) = jobs.recv() => attempts.push(attempt(next.clone(), job)),
                Some(()) = attempts.next(), if !attempts.is_empty() => {}
            }
        };
        match result {
            Ok(response) => into_reqwest(response, url),
            Err(error) => Err(into_middleware_error(error)),
        }
    }
}

/// Sends one attempt through the rest of the middleware chain and answers the stack.
async fn attempt(next: Next<'_>, job: Job) {
    let Job { request, reply } = job;
    let result = send(next, request).await;
    // The stack may have given up on this attempt (a cancelled retry): nothing to answer.
    let _ = reply.send(result);
}

async fn send(
    next: Next<'_>,
    request: http::Request<reqwest::Body>,
) -> Result<http::Response<reqwest::Body>, BoxError> {
    let mut extensions = request.extensions().clone();
    let request = reqwest::Request::try_from(request)?;
    let response = next.run(request, &mut extensions).await?;
    let url = response.url().clone();
    let mut response = http::Response::<reqwest::Body>::from(response);
    response.extensions_mut().insert(AttemptUrl(url));
    Ok(response)
}

fn into_reqwest<B>(
    response: http::Response<B>,
    request_url: reqwest::Url,
) -> reqwest_middleware::Result<reqwest::Response>
where
    B: Body + Send + Sync + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let url = parts
        .extensions
        .remove::<AttemptUrl>()
        .map_or(request_url, |attempt| attempt.0);
    let mut response = http::Response::builder()
        .url(url)
        .body(reqwest::Body::wrap(body))
        .map_err(|e| Error::Middleware(e.into()))?;
    *response.status_mut() = parts.status;
    *response.version_mut() = parts.version;
    *response.headers_mut() = parts.headers;
    response.extensions_mut().extend(parts.extensions);
    Ok(reqwest::Response::from(response))
}

/// reqwest's and other middlewares' errors as they were; the layers' refusals as
/// `Error::Middleware` holding the refusal itself, so that `downcast_ref::<CircuitOpen>()` (and
/// the others) work on it; any other error boxed into the `anyhow::Error` as it is.
fn into_middleware_error(error: BoxError) -> Error {
    #[cfg(feature = "retry")]
    let error = unwrap_transport_error(error);
    let error = match error.downcast::<Error>() {
        Ok(error) => return *error,
        Err(error) => error,
    };
    let error = match error.downcast::<reqwest::Error>() {
        Ok(error) => return Error::Reqwest(*error),
        Err(error) => error,
    };
    Error::Middleware(into_anyhow(error))
}

/// A transport error after retries arrives wrapped in the retry layer's `RequestFailed`:
/// reqwest-middleware users match on `Error::Reqwest`, so that is unwrapped (the attempt count
/// is then lost; it stays on every other error, whose `RequestFailed` is kept).
#[cfg(feature = "retry")]
fn unwrap_transport_error(error: BoxError) -> BoxError {
    match error.downcast::<tollway_retry::RequestFailed>() {
        Ok(failed)
            if failed.last_error().is::<reqwest::Error>() || failed.last_error().is::<Error>() =>
        {
            failed.into_last_error()
        }
        Ok(failed) => failed,
        Err(error) => error,
    }
}

fn into_anyhow(error: BoxError) -> anyhow::Error {
    /// Unboxes `error` into an `anyhow::Error` of its concrete type when it is a `T`.
    fn concrete<T>(error: BoxError) -> Result<anyhow::Error, BoxError>
    where
        T: std::error::Error + Send + Sync + 'static,
    {
        error
            .downcast::<T>()
            .map(|error| anyhow::Error::new(*error))
    }
    concrete::<RateLimited>(error)
        .or_else(concrete::<CircuitOpen>)
        .or_else(concrete::<BudgetExhausted>)
        .or_else(concrete::<RetryAfterTooLong>)
        .unwrap_or_else(anyhow::Error::from_boxed)
}
