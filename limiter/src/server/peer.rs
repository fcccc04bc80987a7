//! [`PeerIp`]: keys by the client's address, found by core's
//! [`ClientIp`](tollway_core::client_ip::ClientIp) rules.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use axum::extract::ConnectInfo;
use tollway_core::client_ip::ClientIp;
pub use tollway_core::client_ip::{Cidr, InvalidCidr, ProxyHeader};

use super::key::{Key, KeyExtractor, RequestHead};

/// The client's IP address: the TCP peer from axum's [`ConnectInfo<SocketAddr>`] (serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`), or, when the peer is a trusted
/// proxy, the address that proxy forwarded, found and grouped by
/// [`ClientIp`](tollway_core::client_ip::ClientIp) (the same rules the budget's quota keys
/// use).
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
#[derive(Debug, Clone, Default)]
pub struct PeerIp {
    resolver: ClientIp,
}

impl PeerIp {
    /// The TCP peer's address, trusting no proxy; IPv6 grouped by /64.
    pub const fn new() -> Self {
        Self {
            resolver: ClientIp::new(),
        }
    }

    /// Keys by what `resolver` says (trusted proxies, header, prefixes), so one configuration
    /// can serve this limit and the budget's quota alike.
    pub const fn with_resolver(resolver: ClientIp) -> Self {
        Self { resolver }
    }

    /// Trusts proxies in `cidr` to report the client's address.
    #[must_use]
    pub fn trust_proxy(mut self, cidr: Cidr) -> Self {
        self.resolver = self.resolver.trust_proxy(cidr);
        self
    }

    /// Which header the trusted proxies write (default `X-Forwarded-For`). Only one is read:
    /// mixing them would let a client choose.
    #[must_use]
    pub fn proxy_header(mut self, header: ProxyHeader) -> Self {
        self.resolver = self.resolver.proxy_header(header);
        self
    }

    /// Groups IPv6 clients by this prefix length (default 64; 128 keys each address; values
    /// above 128 count as 128).
    #[must_use]
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.resolver = self.resolver.ipv6_prefix(bits);
        self
    }

    /// Groups IPv4 clients by this prefix length (default 32: each address).
    #[must_use]
    pub fn ipv4_prefix(mut self, bits: u8) -> Self {
        self.resolver = self.resolver.ipv4_prefix(bits);
        self
    }

    /// The client address of a request that came from `peer` with `headers`, before grouping.
    pub fn client_ip(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        self.resolver.client_ip(peer, headers)
    }

    /// The rules this key follows.
    pub fn resolver(&self) -> &ClientIp {
        &self.resolver
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
        Some(Key::Ip(self.resolver.resolve(peer.ip(), parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use http::request::Parts;

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
}
