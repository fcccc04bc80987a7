//! The ledger as a per-key quota for an HTTP server (axum, hyper, any tower stack).
//!
//! Seed 003's API from the server side: each API key has a quota per window; only successful
//! responses are charged; a key whose quota is used up gets `402 Payment Required` with a JSON
//! body, and every answer says what is left in `x-quota-remaining` and the IETF `RateLimit` field.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tollway_core::headers::{RATELIMIT, RateLimitStatus, format_retry_after};
use tollway_core::{BudgetExhausted, ExhaustedReason};
use tower::{Layer, Service};

use crate::error::ReserveError;
use crate::ledger::Ledger;
use crate::policy::Cost;
use crate::priority::Priority;
use crate::reservation::Reservation;

/// The header that carries the credits a key has left.
pub const X_QUOTA_REMAINING: HeaderName = HeaderName::from_static("x-quota-remaining");

type Factory = dyn Fn(&str) -> Ledger + Send + Sync;
type KeyFn = dyn Fn(&HeaderMap, &http::Extensions) -> Option<String> + Send + Sync;

/// Applies [`Quota`]: one [`Ledger`] per client key, made on first sight by a factory (so tiers
/// can differ), charged for successful (2xx) responses only.
///
/// The key is the value of the key header (default `x-api-key`); requests without one fall back
/// to [`fallback_key`](Self::fallback_key) (with the `axum` feature:
/// `key_by_client_address`), else they share the key
/// `"anonymous"`. Keys are kept until [`forget`](Self::forget): authenticate keys before this
/// layer (or give unknown keys a zero quota in the factory) so clients cannot grow the map.
///
/// ```
/// use axum::{Router, routing::get};
/// use tollway_budget::{Ledger, QuotaLayer, Window};
///
/// let quota = QuotaLayer::new(|_key| Ledger::new(1_000, Window::month()));
/// let app: Router = Router::new()
///     .route("/search", get(|| async { "found" }))
///     .layer(quota.clone());
/// # let _ = app;
/// ```
#[derive(Clone)]
pub struct QuotaLayer {
    shared: Arc<QuotaShared>,
}

struct QuotaShared {
    ledgers: Mutex<HashMap<String, Ledger>>,
    factory: Box<Factory>,
    key_header: HeaderName,
    fallback: Option<Box<KeyFn>>,
    cost: Cost,
}

impl fmt::Debug for QuotaLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaLayer")
            .field("keys", &self.shared.ledgers.lock().len())
            .field("key_header", &self.shared.key_header)
            .field("cost", &self.shared.cost)
            .finish_non_exhaustive()
    }
}

impl QuotaLayer {
    /// A quota whose ledger for a new key is `factory(key)`.
    pub fn new(factory: impl Fn(&str) -> Ledger + Send + Sync + 'static) -> Self {
        Self {
            shared: Arc::new(QuotaShared {
                ledgers: Mutex::new(HashMap::new()),
                factory: Box::new(factory),
                key_header: HeaderName::from_static("x-api-key"),
                fallback: None,
                cost: Cost::default(),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut QuotaShared)) -> Self {
        let shared = Arc::get_mut(&mut self.shared)
            .expect("configure a QuotaLayer before cloning it or using it");
        f(shared);
        self
    }

    /// Reads the client key from this request header (default `x-api-key`).
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name, or the layer was already cloned.
    #[must_use]
    pub fn key_header(self, name: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        self.edit(|s| s.key_header = name)
    }

    /// Where the key comes from when the key header is absent (e.g. the client address).
    ///
    /// # Panics
    ///
    /// If the layer was already cloned.
    #[must_use]
    pub fn fallback_key(
        self,
        key: impl Fn(&HeaderMap, &http::Extensions) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.edit(|s| s.fallback = Some(Box::new(key)))
    }

    /// Keys requests without an API key by the client's IP address, from axum's
    /// `ConnectInfo<SocketAddr>` (serve with `into_make_service_with_connect_info`).
    ///
    /// # Panics
    ///
    /// If the layer was already cloned.
    #[cfg(feature = "axum")]
    #[must_use]
    pub fn key_by_client_address(self) -> Self {
        self.fallback_key(|_, extensions| {
            extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| format!("ip:{}", info.0.ip()))
        })
    }

    /// What each request costs (default 1).
    ///
    /// # Panics
    ///
    /// If the layer was already cloned.
    #[must_use]
    pub fn cost(self, cost: Cost) -> Self {
        self.edit(|s| s.cost = cost)
    }

    /// The ledger of `key`, made now if it is new.
    pub fn ledger(&self, key: &str) -> Ledger {
        self.shared.ledger(key)
    }

    /// Forgets `key`'s ledger; its next request starts a fresh one from the factory.
    pub fn forget(&self, key: &str) {
        self.shared.ledgers.lock().remove(key);
    }
}

impl QuotaShared {
    fn ledger(&self, key: &str) -> Ledger {
        let mut ledgers = self.ledgers.lock();
        if let Some(ledger) = ledgers.get(key) {
            return ledger.clone();
        }
        let ledger = (self.factory)(key);
        ledgers.insert(key.to_owned(), ledger.clone());
        ledger
    }

    fn key_of(&self, headers: &HeaderMap, extensions: &http::Extensions) -> String {
        headers
            .get(&self.key_header)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(|v| format!("key:{v}"))
            .or_else(|| self.fallback.as_ref().and_then(|f| f(headers, extensions)))
            .unwrap_or_else(|| String::from("anonymous"))
    }
}

impl<S> Layer<S> for QuotaLayer {
    type Service = Quota<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Quota {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Charges each client key's [`Ledger`] for its successful requests; see [`QuotaLayer`].
pub struct Quota<S> {
    inner: S,
    shared: Arc<QuotaShared>,
}

impl<S> Quota<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for Quota<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Quota<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Quota<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: From<String>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = QuotaFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let key = self.shared.key_of(request.headers(), request.extensions());
        let ledger = self.shared.ledger(&key);
        let cost = self.shared.cost.of(&request);
        match ledger.reserve(cost, Priority::of(&request)) {
            Ok(reservation) => QuotaFuture {
                state: QuotaState::Called {
                    future: self.inner.call(request),
                    reservation: Some(reservation),
                },
            },
            Err(refused) => {
                tracing::debug!(%key, %refused, "quota refused a request");
                QuotaFuture {
                    state: QuotaState::Refused {
                        response: Some(refusal(&refused, &ledger)),
                    },
                }
            }
        }
    }
}

pin_project! {
    /// The response future of [`Quota`]: charges the key for a successful response and adds the
    /// quota headers; a dropped or failed request is refunded.
    pub struct QuotaFuture<F, B> {
        #[pin]
        state: QuotaState<F, B>,
    }
}

pin_project! {
    #[project = QuotaStateProj]
    enum QuotaState<F, B> {
        Called {
            #[pin]
            future: F,
            reservation: Option<Reservation>,
        },
        Refused {
            response: Option<http::Response<B>>,
        },
    }
}

impl<F, B> fmt::Debug for QuotaFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for QuotaFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            QuotaStateProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("QuotaFuture polled after completion"))),
            QuotaStateProj::Called {
                future,
                reservation,
            } => {
                let mut response = ready!(future.poll(cx))?;
                let reservation = reservation
                    .take()
                    .expect("QuotaFuture polled after completion");
                let ledger = reservation.ledger().clone();
                if response.status().is_success() {
                    let cost = reservation.cost();
                    reservation.settle(cost);
                } else {
                    reservation.refund();
                }
                quota_headers(response.headers_mut(), &ledger);
                Poll::Ready(Ok(response))
            }
        }
    }
}

fn quota_headers(headers: &mut HeaderMap, ledger: &Ledger) {
    let snapshot = ledger.snapshot();
    let remaining = snapshot.remaining;
    if remaining == u64::MAX {
        return;
    }
    headers.insert(X_QUOTA_REMAINING, HeaderValue::from(remaining));
    if let Ok(status) = RateLimitStatus::new("quota", remaining) {
        let reset = snapshot
            .latched_for
            .or_else(|| snapshot.windows.iter().filter_map(|w| w.resets_in).min());
        let status = match reset {
            Some(reset) => status.with_reset(reset),
            None => status,
        };
        headers.insert(RATELIMIT, RateLimitStatus::header_value(&[status]));
    }
}

fn refusal<B: From<String>>(refused: &ReserveError, ledger: &Ledger) -> http::Response<B> {
    let (status, body, retry_after) = match refused {
        ReserveError::Exhausted(exhausted) => (
            StatusCode::PAYMENT_REQUIRED,
            exhausted_body(exhausted),
            exhausted.retry_after(),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            String::from(
                r#"{"error":"quota_unavailable","message":"the quota ledger is unavailable"}"#,
            ),
            None,
        ),
    };
    let mut response = http::Response::new(B::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(wait) = retry_after {
        headers.insert(RETRY_AFTER, format_retry_after(wait));
    }
    quota_headers(headers, ledger);
    response
}

fn exhausted_body(exhausted: &BudgetExhausted) -> String {
    let reason = match exhausted.reason() {
        ExhaustedReason::CriticalReserve => "reserved_for_critical",
        _ => "quota_exhausted",
    };
    let mut body = serde_json::json!({
        "error": reason,
        "message": exhausted.to_string(),
    });
    if let Some(wait) = exhausted.retry_after() {
        body["retry_after"] = serde_json::Value::from(wait.as_secs_f64().ceil() as u64);
    }
    body.to_string()
}
