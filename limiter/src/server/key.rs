//! Who a request counts against: [`Key`] and the [`KeyExtractor`]s ([`PeerIp`], [`HeaderKey`],
//! [`Global`], closures, and [`Or`] to fall back from one to another).

use std::error::Error;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use axum::extract::ConnectInfo;
use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderName, Method, Request, Uri};

/// The identity a request is limited by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// Every request shares one bucket.
    Global,
    /// A client address (IPv6 already grouped by its prefix).
    Ip(IpAddr),
    /// An API key, a user or account id, a tier name.
    Text(Arc<str>),
}

impl Hash for Key {
    // One word for an IPv4 address: hashing is a fair share of a check's cost.
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Self::Global => state.write_u8(0),
            Self::Ip(IpAddr::V4(v4)) => state.write_u64(1 << 32 | u64::from(v4.to_bits())),
            Self::Ip(IpAddr::V6(v6)) => state.write_u128(v6.to_bits()),
            Self::Text(text) => {
                state.write_u8(2);
                text.hash(state);
            }
        }
    }
}

impl From<IpAddr> for Key {
    fn from(ip: IpAddr) -> Self {
        Self::Ip(ip)
    }
}

impl From<&str> for Key {
    fn from(text: &str) -> Self {
        Self::Text(Arc::from(text))
    }
}

impl From<String> for Key {
    fn from(text: String) -> Self {
        Self::Text(Arc::from(text))
    }
}

/// A request's head, borrowed: what key extractors, tiers and concurrency limits read. The
/// layer builds it from the request without moving anything.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (axum's `ConnectInfo` lives here).
    pub extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The head of `request`.
    pub fn of<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }
}

impl<'a> From<&'a Parts> for RequestHead<'a> {
    fn from(parts: &'a Parts) -> Self {
        Self {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            extensions: &parts.extensions,
        }
    }
}

/// Computes a request's [`Key`] from its head; `None` means the limit does not apply to it
/// (a request without an API key is not counted against a per-key limit).
///
/// Implemented for closures `Fn(&RequestHead<'_>) -> Option<Key>`.
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key of the request whose head is `head`.
    fn extract(&self, head: &RequestHead<'_>) -> Option<Key>;

    /// Tries `self`, then `other` when `self` has no key.
    fn or<B: KeyExtractor>(self, other: B) -> Or<Self, B>
    where
        Self: Sized,
    {
        Or {
            first: self,
            second: other,
        }
    }
}

impl<F> KeyExtractor for F
where
    F: Fn(&RequestHead<'_>) -> Option<Key> + Send + Sync + 'static,
{
    fn extract(&self, parts: &RequestHead<'_>) -> Option<Key> {
        self(parts)
    }
}

/// One bucket for every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl KeyExtractor for Global {
    fn extract(&self, _parts: &RequestHead<'_>) -> Option<Key> {
        Some(Key::Global)
    }
}

/// The first extractor's key, or else the second's: see [`KeyExtractor::or`].
#[derive(Debug, Clone, Copy)]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A: KeyExtractor, B: KeyExtractor> KeyExtractor for Or<A, B> {
    fn extract(&self, parts: &RequestHead<'_>) -> Option<Key> {
        self.first
            .extract(parts)
            .or_else(|| self.second.extract(parts))
    }
}

/// The value of a request header (an API key, a client id), as text. Absent, empty or not
/// visible ASCII: no key.
///
/// It does not authenticate: a client that invents a new value gets a new bucket. Keep a
/// per-IP limit next to it (as the example server does), or key by a closure that returns
/// `None` for keys your API does not know.
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys requests by the header `name` (e.g. `HeaderName::from_static("x-api-key")`).
    pub const fn new(name: HeaderName) -> Self {
        Self { name }
    }
}

impl KeyExtractor for HeaderKey {
    fn extract(&self, parts: &RequestHead<'_>) -> Option<Key> {
        let value = parts.headers.get(&self.name)?.to_str().ok()?.trim();
        (!value.is_empty()).then(|| Key::from(value))
    }
}

/// Which header a trusted proxy writes the client's address into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for="[2001:db8::1]:4711"` (RFC 7239).
    Forwarded,
}

/// The client's IP address: the TCP peer from axum's [`ConnectInfo<SocketAddr>`] (serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`), or, when the peer is a trusted
/// proxy, the address that proxy forwarded.
///
/// Forwarding headers are read **from the right**: each entry was appended by the hop to its
/// right, so the walk goes leftwards while the address is a trusted proxy and stops at the
/// first one that is not. Entries further left were written by the client and are never read:
/// a spoofed left-most `X-Forwarded-For` does not buy a new bucket. With no trusted proxies
/// (the default) the headers are ignored.
///
/// IPv6 clients are grouped by their /64 (one host usually owns a whole /64); IPv4-mapped IPv6
/// addresses count as IPv4.
///
/// ```
/// use tollway_limiter::server::{Cidr, Key, KeyExtractor, PeerIp, RequestHead};
///
/// let key = PeerIp::new().trust_proxy("10.0.0.0/8".parse::<Cidr>().unwrap());
/// let mut request = http::Request::get("/hello")
///     .header("x-forwarded-for", "6.6.6.6, 203.0.113.9")
///     .body(())
///     .unwrap();
/// request.extensions_mut().insert(axum::extract::ConnectInfo(
///     "10.1.2.3:5000".parse::<std::net::SocketAddr>().unwrap(),
/// ));
/// assert_eq!(
///     key.extract(&RequestHead::of(&request)),
///     Some(Key::Ip("203.0.113.9".parse().unwrap()))
/// );
/// ```
#[derive(Debug, Clone)]
pub struct PeerIp {
    trusted: Vec<Cidr>,
    header: ProxyHeader,
    ipv6_prefix: u8,
    ipv4_prefix: u8,
}

impl Default for PeerIp {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerIp {
    /// The TCP peer's address, trusting no proxy; IPv6 grouped by /64.
    pub const fn new() -> Self {
        Self {
            trusted: Vec::new(),
            header: ProxyHeader::XForwardedFor,
            ipv6_prefix: 64,
            ipv4_prefix: 32,
        }
    }

    /// Trusts proxies in `cidr` to report the client's address.
    #[must_use]
    pub fn trust_proxy(mut self, cidr: Cidr) -> Self {
        self.trusted.push(cidr);
        self
    }

    /// Which header the trusted proxies write (default `X-Forwarded-For`). Only one is read:
    /// mixing them would let a client choose.
    #[must_use]
    pub const fn proxy_header(mut self, header: ProxyHeader) -> Self {
        self.header = header;
        self
    }

    /// Groups IPv6 clients by this prefix length (default 64; 128 keys each address; values
    /// above 128 count as 128).
    #[must_use]
    pub const fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = if bits > 128 { 128 } else { bits };
        self
    }

    /// Groups IPv4 clients by this prefix length (default 32: each address).
    #[must_use]
    pub const fn ipv4_prefix(mut self, bits: u8) -> Self {
        self.ipv4_prefix = if bits > 32 { 32 } else { bits };
        self
    }

    /// The client address of a request that came from `peer` with `headers`, before grouping.
    pub fn client_ip(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut hops = Vec::new();
        match self.header {
            ProxyHeader::XForwardedFor => {
                for value in headers.get_all("x-forwarded-for") {
                    let Ok(text) = value.to_str() else {
                        return peer;
                    };
                    hops.extend(text.split(',').map(parse_xff_entry));
                }
            }
            ProxyHeader::Forwarded => {
                for value in headers.get_all(http::header::FORWARDED) {
                    let Ok(text) = value.to_str() else {
                        return peer;
                    };
                    hops.extend(text.split(',').filter_map(forwarded_for));
                }
            }
        }
        // The right-most entry came from the nearest proxy; stop at the first untrusted one.
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                Some(ip) => {
                    client = canonical(ip);
                    if !self.is_trusted(client) {
                        return client;
                    }
                }
                // A trusted proxy wrote something unreadable: count the request against it.
                None => return client,
            }
        }
        client
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    #[inline]
    fn group(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & mask32(self.ipv4_prefix)))
            }
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(
                v6.to_bits() & mask128(self.ipv6_prefix),
            )),
        }
    }
}

impl KeyExtractor for PeerIp {
    fn extract(&self, parts: &RequestHead<'_>) -> Option<Key> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Relaxed) {
                tracing::warn!(
                    "PeerIp found no ConnectInfo<SocketAddr>: serve with \
                     into_make_service_with_connect_info::<SocketAddr>()"
                );
            }
            return None;
        };
        let peer = canonical(peer.ip());
        // Without trusted proxies the headers are never read: skip the walk.
        let client = if self.trusted.is_empty() {
            peer
        } else {
            self.client_ip(peer, parts.headers)
        };
        Some(Key::Ip(self.group(client)))
    }
}

/// An address of the form IPv4-mapped IPv6 (`::ffff:1.2.3.4`) counts as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn mask32(bits: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0)
}

fn mask128(bits: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0)
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:80`).
fn parse_xff_entry(entry: &str) -> Option<IpAddr> {
    parse_node(entry.trim())
}

/// The `for=` value of one `Forwarded` element; `None` for an element without one, and
/// `Some(None)` for a `for=` that is not an address (`unknown`, `_hidden`, garbage).
fn forwarded_for(element: &str) -> Option<Option<IpAddr>> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value.trim().trim_matches('"')))
    })
}

fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    // `[v6]` without a port.
    node.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .and_then(|n| n.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// A block of addresses, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The block of `prefix` leading bits of `network`; `None` if the prefix is longer than
    /// the address.
    pub fn new(network: IpAddr, prefix: u8) -> Option<Self> {
        let max = if network.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self {
            network: canonical(network),
            prefix: if network.is_ipv6() && canonical(network).is_ipv4() {
                prefix.saturating_sub(96)
            } else {
                prefix
            },
        })
    }

    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask32(self.prefix);
                net.to_bits() & mask == ip.to_bits() & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask128(self.prefix);
                net.to_bits() & mask == ip.to_bits() & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(text: &str) -> Result<Self, InvalidCidr> {
        let invalid = || InvalidCidr {
            text: text.to_owned(),
        };
        let (address, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| invalid())?;
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| invalid())?,
            None if network.is_ipv4() => 32,
            None => 128,
        };
        Self::new(network, prefix).ok_or_else(invalid)
    }
}

/// A proxy block that is not `ADDRESS/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCidr {
    text: String,
}

impl fmt::Display for InvalidCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an address block such as 10.0.0.0/8 or 2001:db8::/32",
            self.text
        )
    }
}

impl Error for InvalidCidr {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::get("/");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(()).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        request.into_parts().0
    }

    fn head(parts: &Parts) -> RequestHead<'_> {
        RequestHead::from(parts)
    }

    fn ip(text: &str) -> Option<Key> {
        Some(Key::Ip(text.parse().unwrap()))
    }

    #[test]
    fn untrusted_peer_ignores_forwarding_headers() {
        let key = PeerIp::new();
        let p = parts("1.2.3.4:5", &[("x-forwarded-for", "9.9.9.9")]);
        assert_eq!(key.extract(&head(&p)), ip("1.2.3.4"));
    }

    #[test]
    fn reads_from_the_right_and_ignores_spoofed_left_entries() {
        let key = PeerIp::new()
            .trust_proxy("10.0.0.0/8".parse().unwrap())
            .trust_proxy("192.168.0.0/16".parse().unwrap());
        for spoof in ["1.1.1.1", "2.2.2.2, 3.3.3.3", "garbage, ::1"] {
            let header = format!("{spoof}, 203.0.113.7, 192.168.1.1");
            let p = parts("10.0.0.2:443", &[("x-forwarded-for", &header)]);
            assert_eq!(key.extract(&head(&p)), ip("203.0.113.7"), "{header}");
        }
        // Two header lines: the last line's last entry is nearest.
        let mut request = http::Request::get("/").body(()).unwrap();
        request
            .headers_mut()
            .append("x-forwarded-for", "6.6.6.6".parse().unwrap());
        request
            .headers_mut()
            .append("x-forwarded-for", "198.51.100.1, 10.9.9.9".parse().unwrap());
        request
            .extensions_mut()
            .insert(ConnectInfo("10.0.0.2:1".parse::<SocketAddr>().unwrap()));
        assert_eq!(key.extract(&RequestHead::of(&request)), ip("198.51.100.1"));
    }

    #[test]
    fn only_trusted_hops_all_the_way_yields_the_left_most_trusted_one() {
        let key = PeerIp::new().trust_proxy("10.0.0.0/8".parse().unwrap());
        let p = parts("10.0.0.2:1", &[("x-forwarded-for", "10.0.0.9, 10.0.0.5")]);
        assert_eq!(key.extract(&head(&p)), ip("10.0.0.9"));
        let p = parts("10.0.0.2:1", &[("x-forwarded-for", "1.2.3.4, nonsense")]);
        assert_eq!(
            key.extract(&head(&p)),
            ip("10.0.0.2"),
            "garbage from a proxy: the proxy"
        );
    }

    #[test]
    fn forwarded_header_with_ports_and_brackets() {
        let key = PeerIp::new()
            .trust_proxy("10.0.0.0/8".parse().unwrap())
            .proxy_header(ProxyHeader::Forwarded)
            .ipv6_prefix(128);
        let p = parts(
            "10.0.0.2:1",
            &[(
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.3"#,
            )],
        );
        assert_eq!(key.extract(&head(&p)), ip("2001:db8:cafe::17"));
        // X-Forwarded-For is not read when Forwarded is configured.
        let p = parts("10.0.0.2:1", &[("x-forwarded-for", "7.7.7.7")]);
        assert_eq!(key.extract(&head(&p)), ip("10.0.0.2"));
    }

    #[test]
    fn ipv6_grouped_by_prefix_and_mapped_ipv4_is_ipv4() {
        let key = PeerIp::new();
        let a = key.extract(&head(&parts("[2001:db8:1:2:aaaa::1]:1", &[])));
        let b = key.extract(&head(&parts("[2001:db8:1:2:bbbb::2]:1", &[])));
        let c = key.extract(&head(&parts("[2001:db8:1:3::1]:1", &[])));
        assert_eq!(a, b);
        assert_eq!(a, ip("2001:db8:1:2::"));
        assert_ne!(a, c);
        let wide = PeerIp::new().ipv6_prefix(48);
        assert_eq!(
            wide.extract(&head(&parts("[2001:db8:1:2::1]:1", &[]))),
            wide.extract(&head(&parts("[2001:db8:1:3::1]:1", &[])))
        );
        assert_eq!(
            key.extract(&head(&parts("[::ffff:1.2.3.4]:1", &[]))),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn no_connect_info_no_key() {
        let (p, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        assert_eq!(PeerIp::new().extract(&head(&p)), None);
    }

    #[test]
    fn header_key_or_ip_and_closures() {
        let key = HeaderKey::new(HeaderName::from_static("x-api-key")).or(PeerIp::new());
        assert_eq!(
            key.extract(&head(&parts("1.2.3.4:1", &[("x-api-key", " abc ")]))),
            Some(Key::from("abc"))
        );
        assert_eq!(
            key.extract(&head(&parts("1.2.3.4:1", &[("x-api-key", "")]))),
            ip("1.2.3.4")
        );
        let by_path = |p: &RequestHead<'_>| Some(Key::from(p.uri.path()));
        assert_eq!(
            by_path.extract(&head(&parts("1.2.3.4:1", &[]))),
            Some(Key::from("/"))
        );
        assert_eq!(
            Global.extract(&head(&parts("1.2.3.4:1", &[]))),
            Some(Key::Global)
        );
    }

    #[test]
    fn cidr_parsing_and_errors() {
        let v4: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(v4.contains("10.255.0.1".parse().unwrap()));
        assert!(v4.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!v4.contains("11.0.0.1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let host: Cidr = "192.0.2.1".parse().unwrap();
        assert!(host.contains("192.0.2.1".parse().unwrap()));
        assert!(!host.contains("192.0.2.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129", ""] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.to_string().contains("address block"), "{bad}");
        }
    }
}
