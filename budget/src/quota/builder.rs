//! [`KeyQuotaBuilder`]: every setting of a [`KeyQuotaLayer`], checked when it is built.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use parking_lot::Mutex;

use super::key::{Anonymous, KeyReader, QuotaKey};
use super::refusal::{BodyFn, QuotaRefusal, Refusal};
use super::table::Table;
use super::{Factory, KeyQuotaLayer, QuotaShared};
use crate::ledger::Ledger;
use crate::policy::Cost;

type ChargeFn = dyn Fn(StatusCode, &HeaderMap, u64) -> u64 + Send + Sync;

/// Which responses a key's quota is charged for, and how much.
#[derive(Clone, Default)]
pub enum QuotaCharge {
    /// Only `200 OK` is charged (what many credit APIs bill).
    Only200,
    /// Every `2xx` response is charged (the default).
    #[default]
    Success,
    /// `charge(status, headers, cost)` says what to charge.
    Custom(Arc<ChargeFn>),
}

impl QuotaCharge {
    /// A custom charge: `charge(status, response headers, the request's cost)` credits.
    pub fn custom(
        charge: impl Fn(StatusCode, &HeaderMap, u64) -> u64 + Send + Sync + 'static,
    ) -> Self {
        Self::Custom(Arc::new(charge))
    }

    /// What a response with `status` and `headers` is charged for a request costing `cost`.
    pub fn charge(&self, status: StatusCode, headers: &HeaderMap, cost: u64) -> u64 {
        match self {
            Self::Only200 => u64::from(status == StatusCode::OK) * cost,
            Self::Success => u64::from(status.is_success()) * cost,
            Self::Custom(charge) => charge(status, headers, cost),
        }
    }
}

impl fmt::Debug for QuotaCharge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Only200 => f.write_str("Only200"),
            Self::Success => f.write_str("Success"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// A [`KeyQuotaBuilder`] setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaConfigError {
    setting: &'static str,
    reason: String,
}

impl QuotaConfigError {
    fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }

    /// The builder method whose value was refused.
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for QuotaConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key quota `{}`: {}", self.setting, self.reason)
    }
}

impl Error for QuotaConfigError {}

/// Configures a [`KeyQuotaLayer`]; see [`KeyQuotaLayer::builder`]. Nothing is checked until
/// [`build`](Self::build), which says what is wrong instead of panicking.
pub struct KeyQuotaBuilder {
    factory: Box<Factory>,
    key_header: String,
    anonymous: Anonymous,
    max_key_len: usize,
    max_keys: usize,
    cost: Cost,
    charge: QuotaCharge,
    policy_name: String,
    refusal_status: StatusCode,
    content_type: String,
    body: Option<Arc<BodyFn>>,
    /// Set by `redis` (feature `redis`).
    pub(super) fleet: Option<Box<dyn super::FleetQuota>>,
}

impl fmt::Debug for KeyQuotaBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyQuotaBuilder")
            .field("key_header", &self.key_header)
            .field("anonymous", &self.anonymous)
            .field("max_key_len", &self.max_key_len)
            .field("max_keys", &self.max_keys)
            .field("cost", &self.cost)
            .field("charge", &self.charge)
            .field("policy_name", &self.policy_name)
            .field("refusal_status", &self.refusal_status)
            .finish_non_exhaustive()
    }
}

impl KeyQuotaBuilder {
    pub(super) fn new(factory: impl Fn(&QuotaKey) -> Ledger + Send + Sync + 'static) -> Self {
        Self {
            factory: Box::new(factory),
            key_header: String::from("x-api-key"),
            anonymous: Anonymous::default(),
            max_key_len: 256,
            max_keys: 100_000,
            cost: Cost::default(),
            charge: QuotaCharge::default(),
            policy_name: String::from("quota"),
            refusal_status: StatusCode::PAYMENT_REQUIRED,
            content_type: String::from("application/json"),
            body: None,
            fleet: None,
        }
    }

    /// Reads the API key from this request header (default `x-api-key`).
    #[must_use]
    pub fn key_header(mut self, name: impl Into<String>) -> Self {
        self.key_header = name.into();
        self
    }

    /// How callers without an API key are keyed (default: by client address, trusting no
    /// proxy; see [`Anonymous`]).
    #[must_use]
    pub fn anonymous(mut self, anonymous: Anonymous) -> Self {
        self.anonymous = anonymous;
        self
    }

    /// API keys longer than this many bytes are refused with `401` (default 256).
    #[must_use]
    pub fn max_key_len(mut self, bytes: usize) -> Self {
        self.max_key_len = bytes;
        self
    }

    /// At most this many keys have a ledger at once (default 100,000); when full, the key added
    /// first is forgotten. Memory stays under about `max_keys * (max_key_len + 400)` bytes.
    #[must_use]
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.max_keys = keys;
        self
    }

    /// What each request costs (default 1).
    #[must_use]
    pub fn cost(mut self, cost: Cost) -> Self {
        self.cost = cost;
        self
    }

    /// Which responses are charged (default: any 2xx).
    #[must_use]
    pub fn charge(mut self, charge: QuotaCharge) -> Self {
        self.charge = charge;
        self
    }

    /// The policy name in the `RateLimit-Policy` / `RateLimit` headers (default `quota`; with
    /// several limits, `quota-day`, `quota-month`, ...). Visible ASCII.
    #[must_use]
    pub fn policy_name(mut self, name: impl Into<String>) -> Self {
        self.policy_name = name.into();
        self
    }

    /// The status of a refusal (default `402 Payment Required`; `429 Too Many Requests` is the
    /// other common choice). A 4xx or 5xx.
    #[must_use]
    pub fn refusal_status(mut self, status: StatusCode) -> Self {
        self.refusal_status = status;
        self
    }

    /// The body of a refusal and its content type (default: JSON,
    /// `{"error": "quota_exhausted", "message": "the quota is used up; it resets in 3 h 12 min",
    /// "retry_after": 11520}`).
    #[must_use]
    pub fn refusal_body(
        mut self,
        content_type: impl Into<String>,
        body: impl Fn(&QuotaRefusal<'_>) -> String + Send + Sync + 'static,
    ) -> Self {
        self.content_type = content_type.into();
        self.body = Some(Arc::new(body));
        self
    }

    /// The layer.
    ///
    /// # Errors
    ///
    /// A [`QuotaConfigError`] naming the setting that cannot work: an invalid header name,
    /// content type or policy name, a refusal status that is not an error, a zero bound.
    pub fn build(self) -> Result<KeyQuotaLayer, QuotaConfigError> {
        let header = HeaderName::from_bytes(self.key_header.as_bytes()).map_err(|_| {
            QuotaConfigError::new(
                "key_header",
                format!("{:?} is no header name", self.key_header),
            )
        })?;
        if !(self.refusal_status.is_client_error() || self.refusal_status.is_server_error()) {
            return Err(QuotaConfigError::new(
                "refusal_status",
                format!("{} is not a 4xx or 5xx status", self.refusal_status),
            ));
        }
        let content_type = HeaderValue::from_str(&self.content_type).map_err(|_| {
            QuotaConfigError::new("refusal_body", "the content type is no header value")
        })?;
        let valid_name = !self.policy_name.is_empty()
            && self.policy_name.len() <= 64
            && self.policy_name.bytes().all(|b| b.is_ascii_graphic());
        if !valid_name {
            return Err(QuotaConfigError::new(
                "policy_name",
                "must be 1 to 64 visible ASCII characters",
            ));
        }
        if self.max_keys == 0 {
            return Err(QuotaConfigError::new("max_keys", "must be at least 1"));
        }
        if self.max_key_len == 0 {
            return Err(QuotaConfigError::new("max_key_len", "must be at least 1"));
        }
        Ok(KeyQuotaLayer {
            shared: Arc::new(QuotaShared {
                table: Mutex::new(Table::new(self.max_keys)),
                factory: self.factory,
                reader: KeyReader {
                    header,
                    anonymous: self.anonymous,
                    max_len: self.max_key_len,
                },
                cost: self.cost,
                charge: self.charge,
                policy_name: self.policy_name,
                refusal: Refusal {
                    status: self.refusal_status,
                    content_type,
                    body: self.body,
                },
                fleet: self.fleet,
            }),
        })
    }
}
