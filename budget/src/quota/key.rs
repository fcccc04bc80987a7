//! Who a request is charged to: its API key, or its client's address.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use http::{Extensions, HeaderMap, HeaderName};
use tollway_core::client_ip::ClientIp;

/// The key a quota is kept under: the API key a caller sent, exactly as sent, or, for callers
/// without one, their client address (grouped: IPv6 by /64, behind trusted proxies; see
/// [`ClientIp`]).
///
/// Its [`Debug`] and [`Display`](fmt::Display) never show an API key: they show a keyed
/// fingerprint (`key#1f0c...`), stable within a process and meaningless outside it. Use it in
/// logs; [`api_key`](Self::api_key) is for deciding a tier.
///
/// ```
/// use tollway_budget::quota::QuotaKey;
///
/// let key = QuotaKey::from("sk-live-123");
/// assert_eq!(key.api_key(), Some("sk-live-123"));
/// assert!(!format!("{key} {key:?}").contains("sk-live-123"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct QuotaKey(Inner);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Inner {
    ApiKey(Box<str>),
    Client(IpAddr),
}

impl QuotaKey {
    /// The quota of the API key `key`.
    pub fn api_key_of(key: impl Into<String>) -> Self {
        Self(Inner::ApiKey(key.into().into_boxed_str()))
    }

    /// The quota of the client at `ip` (as grouped by the layer's [`ClientIp`]).
    pub const fn client(ip: IpAddr) -> Self {
        Self(Inner::Client(ip))
    }

    /// The API key, if this is one's quota.
    pub fn api_key(&self) -> Option<&str> {
        match &self.0 {
            Inner::ApiKey(key) => Some(key),
            Inner::Client(_) => None,
        }
    }

    /// The client address, if this is an anonymous caller's quota.
    pub const fn client_ip(&self) -> Option<IpAddr> {
        match self.0 {
            Inner::Client(ip) => Some(ip),
            Inner::ApiKey(_) => None,
        }
    }

    /// A keyed fingerprint of the API key, for logs: the same key gives the same fingerprint
    /// within this process, and nothing about the key can be learnt from it.
    pub fn fingerprint(&self) -> String {
        self.to_string()
    }

    /// The same key with a client address grouped by `resolver`.
    pub(crate) fn grouped(self, resolver: &ClientIp) -> Self {
        match self.0 {
            Inner::Client(ip) => Self::client(resolver.group(ip)),
            api_key @ Inner::ApiKey(_) => Self(api_key),
        }
    }
}

impl From<&str> for QuotaKey {
    fn from(key: &str) -> Self {
        Self::api_key_of(key)
    }
}

impl From<String> for QuotaKey {
    fn from(key: String) -> Self {
        Self::api_key_of(key)
    }
}

impl From<IpAddr> for QuotaKey {
    fn from(ip: IpAddr) -> Self {
        Self::client(ip)
    }
}

impl fmt::Display for QuotaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::ApiKey(key) => {
                static SECRET: OnceLock<RandomState> = OnceLock::new();
                let mut hasher = SECRET.get_or_init(RandomState::new).build_hasher();
                hasher.write(key.as_bytes());
                write!(f, "key#{:016x}", hasher.finish())
            }
            Inner::Client(ip) => write!(f, "ip:{ip}"),
        }
    }
}

impl fmt::Debug for QuotaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QuotaKey({self})")
    }
}

/// How a request that sent no API key is keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Anonymous {
    /// By its client address, through trusted proxies, IPv6 by /64: each client its own quota
    /// (the default, trusting no proxy). The TCP peer is read from axum's
    /// `ConnectInfo<SocketAddr>` (feature `axum`; serve with
    /// `into_make_service_with_connect_info`) or a `SocketAddr` request extension.
    ClientIp(ClientIp),
    /// Refused with `401`: every caller must send an API key.
    Reject,
}

impl Default for Anonymous {
    fn default() -> Self {
        Self::ClientIp(ClientIp::new())
    }
}

/// Why a request has no usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoKey {
    /// No API key, and anonymous callers are refused (or their address is unknown).
    Missing,
    /// An API key too long, or not visible ASCII.
    Malformed,
}

/// Reads a request's key.
#[derive(Debug, Clone)]
pub(crate) struct KeyReader {
    pub(crate) header: HeaderName,
    pub(crate) anonymous: Anonymous,
    pub(crate) max_len: usize,
}

impl KeyReader {
    pub(crate) fn key_of(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<QuotaKey, NoKey> {
        if let Some(value) = headers.get(&self.header) {
            let bytes = value.as_bytes();
            if bytes.is_empty() {
                return self.anonymous(headers, extensions);
            }
            if bytes.len() > self.max_len || !bytes.iter().all(|b| b.is_ascii_graphic()) {
                return Err(NoKey::Malformed);
            }
            // Visible ASCII: valid UTF-8.
            let key = std::str::from_utf8(bytes).map_err(|_| NoKey::Malformed)?;
            return Ok(QuotaKey::api_key_of(key));
        }
        self.anonymous(headers, extensions)
    }

    fn anonymous(&self, headers: &HeaderMap, extensions: &Extensions) -> Result<QuotaKey, NoKey> {
        match &self.anonymous {
            Anonymous::ClientIp(resolver) => peer(extensions)
                .map(|peer| QuotaKey::client(resolver.resolve(peer, headers)))
                .ok_or(NoKey::Missing),
            Anonymous::Reject => Err(NoKey::Missing),
        }
    }

    pub(crate) fn group(&self, key: QuotaKey) -> QuotaKey {
        match &self.anonymous {
            Anonymous::ClientIp(resolver) => key.grouped(resolver),
            Anonymous::Reject => key,
        }
    }
}

/// The TCP peer's address, from axum's `ConnectInfo` or a bare `SocketAddr` extension.
fn peer(extensions: &Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    extensions.get::<SocketAddr>().map(SocketAddr::ip)
}
