//! The ledger as a per-key quota for an HTTP server (axum, hyper, any tower stack).
//!
//! Each API key, and each anonymous client address, has its own [`Ledger`], made on first sight
//! by a factory (so tiers can differ). A request reserves its cost before it runs; the response
//! is charged by the [`QuotaCharge`] policy (default: any 2xx) and everything else is refunded.
//! A key whose quota is used up is answered at once (default `402` with a JSON body and a
//! sentence such as "the quota is used up; it resets in 3 h 12 min"); every answer says what is
//! left in `x-quota-remaining` and in `RateLimit-Policy` / `RateLimit` members appended beside
//! any other layer's.
//!
//! - **Keys**: the API key exactly as sent (header `x-api-key` by default); callers without
//!   one by their client address, through [trusted proxies](tollway_core::client_ip), IPv6 by
//!   /64: never one shared anonymous quota, never the proxy's address. Over-long or non-ASCII
//!   keys are refused with `401`.
//! - **Bounded**: at most [`max_keys`](KeyQuotaBuilder::max_keys) ledgers; the oldest key is
//!   forgotten first.
//! - **Private**: API keys never reach logs: a keyed fingerprint ([`QuotaKey`]'s `Display`).
//! - **Checked**: [`KeyQuotaBuilder::build`] returns a
//!   [`QuotaConfigError`](crate::QuotaConfigError), never panics.
//!
//! ```
//! use axum::{Router, routing::get};
//! use http::StatusCode;
//! use tollway_budget::quota::{KeyQuotaLayer, QuotaCharge};
//! use tollway_budget::{Ledger, Window};
//!
//! let quota = KeyQuotaLayer::builder(|key| {
//!     let monthly = if key.api_key() == Some("sponsor") { 5_000 } else { 1_000 };
//!     Ledger::new(monthly, Window::month())
//! })
//! .charge(QuotaCharge::Only200)
//! .refusal_status(StatusCode::TOO_MANY_REQUESTS)
//! .build()
//! .expect("a valid quota");
//! let app: Router = Router::new()
//!     .route("/search", get(|| async { "found" }))
//!     .layer(quota.clone());
//! assert_eq!(quota.ledger("sponsor").remaining(), 5_000);
//! ```

use std::fmt;
use std::task::{Context, Poll};

use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use parking_lot::Mutex;
use tower::{Layer, Service};

use crate::error::ReserveError;
use crate::ledger::Ledger;
use crate::policy::Cost;
use crate::priority::Priority;
use crate::store::DynStore;
use tollway_core::StoreUnavailable;

pub(crate) mod builder;
#[cfg(feature = "redis")]
mod fleet;
pub(crate) mod future;
mod headers;
mod key;
mod refusal;
mod table;

pub use builder::{KeyQuotaBuilder, QuotaCharge};
use future::KeyQuotaFuture;
pub use headers::X_QUOTA_REMAINING;
pub use key::{Anonymous, QuotaKey};
pub use refusal::{QuotaRefusal, human_duration};

use headers::{add_quota_headers, merge_retry_after};
use key::{KeyReader, NoKey};
use refusal::Refusal;
use table::Table;

type Factory = dyn Fn(&QuotaKey) -> Ledger + Send + Sync;

/// Where a fleet keeps its keys' quotas (Redis, feature `redis`): this layer's ledger of a key
/// is then only its template (its limits) and its local fallback.
pub(crate) trait FleetQuota: Send + Sync + 'static {
    /// The shared ledger of `key`, with `template`'s limits.
    fn ledger(&self, key: &QuotaKey, template: &Ledger) -> Ledger<DynStore>;
    /// Whether a key is charged on its local ledger while the store is unavailable.
    fn fails_open(&self) -> bool;
    /// The store just failed: for a while, requests are answered without a round trip.
    fn failed(&self);
    /// Whether the store is taken as down (it failed a moment ago).
    fn is_down(&self) -> bool;
}

/// Applies [`KeyQuota`]: one [`Ledger`] per client key; see the [module docs](self).
///
/// Cloning the layer shares its ledgers.
#[derive(Clone)]
pub struct KeyQuotaLayer {
    shared: std::sync::Arc<QuotaShared>,
}

struct QuotaShared {
    table: Mutex<Table>,
    factory: Box<Factory>,
    reader: KeyReader,
    cost: Cost,
    charge: QuotaCharge,
    policy_name: String,
    refusal: Refusal,
    fleet: Option<Box<dyn FleetQuota>>,
}

impl fmt::Debug for KeyQuotaLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyQuotaLayer")
            .field("keys", &self.shared.table.lock().len())
            .field("key_header", &self.shared.reader.header)
            .field("anonymous", &self.shared.reader.anonymous)
            .field("cost", &self.shared.cost)
            .field("charge", &self.shared.charge)
            .field("refusal", &self.shared.refusal)
            .finish_non_exhaustive()
    }
}

impl KeyQuotaLayer {
    /// A quota whose ledger for a new key is `factory(key)`, with every default: see
    /// [`builder`](Self::builder) to change them.
    pub fn new(factory: impl Fn(&QuotaKey) -> Ledger + Send + Sync + 'static) -> Self {
        Self::builder(factory)
            .build()
            .unwrap_or_else(|e| unreachable!("the defaults are valid: {e}"))
    }

    /// Starts configuring a quota whose ledger for a new key is `factory(key)`.
    pub fn builder(
        factory: impl Fn(&QuotaKey) -> Ledger + Send + Sync + 'static,
    ) -> KeyQuotaBuilder {
        KeyQuotaBuilder::new(factory)
    }

    /// The ledger of `key` (an API key as `&str`, or a client address), made now if it is new.
    pub fn ledger(&self, key: impl Into<QuotaKey>) -> Ledger {
        let key = self.shared.reader.group(key.into());
        self.shared.ledger(&key)
    }

    /// Forgets `key`'s ledger; its next request starts a fresh one from the factory.
    pub fn forget(&self, key: impl Into<QuotaKey>) {
        let key = self.shared.reader.group(key.into());
        self.shared.table.lock().remove(&key);
    }

    /// How many keys have a ledger now.
    pub fn len(&self) -> usize {
        self.shared.table.lock().len()
    }

    /// Whether no key has a ledger yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl QuotaShared {
    fn ledger(&self, key: &QuotaKey) -> Ledger {
        self.table.lock().get_or_insert(key, || (self.factory)(key))
    }

    /// The answer to a request that has no usable key.
    fn no_key<B: From<String>>(&self, why: NoKey) -> http::Response<B> {
        let (error, message) = match why {
            NoKey::Missing => (
                "api_key_required",
                format!("send an API key in the {} header", self.reader.header),
            ),
            NoKey::Malformed => (
                "invalid_api_key",
                String::from("the API key is too long or not visible ASCII"),
            ),
        };
        let body = serde_json::json!({ "error": error, "message": message }).to_string();
        let mut response = http::Response::new(B::from(body));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }

    /// The answer to a refused request (with the quota headers from `ledger`, when it can
    /// answer without a round trip).
    fn refusal<B: From<String>>(
        &self,
        key: &QuotaKey,
        refused: &ReserveError,
        ledger: Option<&Ledger>,
    ) -> http::Response<B> {
        let Some(exhausted) = refused.exhausted() else {
            let body =
                r#"{"error":"quota_unavailable","message":"the quota ledger is unavailable"}"#;
            let mut response = http::Response::new(B::from(String::from(body)));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return response;
        };
        let info = refusal::QuotaRefusal {
            key,
            reason: exhausted.reason(),
            retry_after: exhausted.retry_after(),
        };
        let mut response = http::Response::new(B::from(self.refusal.body(&info)));
        *response.status_mut() = self.refusal.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, self.refusal.content_type.clone());
        if let Some(wait) = exhausted.retry_after() {
            merge_retry_after(headers, wait);
        }
        if let Some(ledger) = ledger {
            self.add_headers(headers, ledger);
        }
        response
    }

    fn add_headers(&self, headers: &mut http::HeaderMap, ledger: &Ledger) {
        add_quota_headers(headers, &self.policy_name, &ledger.snapshot(), ledger.now());
    }
}

impl<S> Layer<S> for KeyQuotaLayer {
    type Service = KeyQuota<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyQuota {
            inner,
            shared: std::sync::Arc::clone(&self.shared),
        }
    }
}

/// Charges each client key's [`Ledger`] for its requests; see [`KeyQuotaLayer`].
pub struct KeyQuota<S> {
    inner: S,
    shared: std::sync::Arc<QuotaShared>,
}

impl<S> KeyQuota<S> {
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

impl<S: Clone> Clone for KeyQuota<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: std::sync::Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for KeyQuota<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyQuota")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for KeyQuota<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone,
    ResBody: From<String>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = KeyQuotaFuture<S, http::Request<ReqBody>, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let key = match shared
            .reader
            .key_of(request.headers(), request.extensions())
        {
            Ok(key) => key,
            Err(why) => {
                tracing::debug!(?why, "quota refused a request without a usable key");
                return KeyQuotaFuture::refused(shared.no_key(why));
            }
        };
        let ledger = shared.ledger(&key);
        let cost = shared.cost.of(&request);
        let priority = Priority::of(&request);
        if let Some(fleet) = shared.fleet.as_ref().filter(|f| f.is_down()) {
            // The store failed a moment ago: answer at once, without a round trip.
            if !fleet.fails_open() {
                let error = StoreUnavailable::new(
                    "key quota",
                    "reserve (store down)",
                    "Redis failed a moment ago",
                );
                return KeyQuotaFuture::refused(shared.refusal(
                    &key,
                    &ReserveError::Store(error),
                    None,
                ));
            }
            return match ledger.reserve(cost, priority) {
                Ok(reservation) => KeyQuotaFuture::called(
                    self.inner.call(request),
                    future::Held::Local(reservation),
                    std::sync::Arc::clone(shared),
                ),
                Err(refused) => {
                    KeyQuotaFuture::refused(shared.refusal(&key, &refused, Some(&ledger)))
                }
            };
        }
        if let Some(fleet) = &shared.fleet {
            // The key's quota is in the fleet's store: wait for its answer with the service
            // made ready (a clone stays in its place).
            let reserve = fleet.ledger(&key, &ledger).reserve_async(cost, priority);
            let clone = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, clone);
            return KeyQuotaFuture::reserving(future::Pending {
                reserve,
                local: ledger,
                key,
                cost,
                priority,
                service: ready,
                request,
                shared: std::sync::Arc::clone(shared),
            });
        }
        match ledger.reserve(cost, priority) {
            Ok(reservation) => KeyQuotaFuture::called(
                self.inner.call(request),
                future::Held::Local(reservation),
                std::sync::Arc::clone(shared),
            ),
            Err(refused) => {
                // `key` prints as a fingerprint: API keys never reach the logs.
                tracing::debug!(%key, %refused, "quota refused a request");
                KeyQuotaFuture::refused(shared.refusal(&key, &refused, Some(&ledger)))
            }
        }
    }
}
