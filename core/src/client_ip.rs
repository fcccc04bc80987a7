//! Who sent a request: the client's IP address behind trusted proxies, grouped the way
//! limits and quotas count clients.
//!
//! One implementation for every server-side layer (the limiter's `PeerIp` key and the budget's
//! quota keys both use it), so a client cannot be one client to one layer and another to the
//! next.
//!
//! - Forwarding headers are read **from the right**: each entry was appended by the hop to its
//!   right, so the walk goes leftwards while the address is a trusted proxy and stops at the
//!   first one that is not. Entries further left were written by the client and are never
//!   read: a spoofed left-most `X-Forwarded-For` does not buy a new bucket. With no trusted
//!   proxies (the default) the headers are ignored.
//! - IPv6 clients are grouped by their /64 (one host usually owns a whole /64); IPv4-mapped
//!   IPv6 addresses count as IPv4.
//! - The walk allocates nothing, whatever the header holds.
//!
//! ```
//! use std::net::IpAddr;
//! use tollway_core::client_ip::{Cidr, ClientIp};
//!
//! let resolver = ClientIp::new().trust_proxy("10.0.0.0/8".parse::<Cidr>().unwrap());
//! let mut headers = http::HeaderMap::new();
//! headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9".parse().unwrap());
//! let peer: IpAddr = "10.1.2.3".parse().unwrap();
//! assert_eq!(resolver.resolve(peer, &headers), "203.0.113.9".parse::<IpAddr>().unwrap());
//!
//! // IPv6 clients count by their /64.
//! let a = resolver.resolve("2001:db8:1:2::1".parse().unwrap(), &headers);
//! let b = resolver.resolve("2001:db8:1:2:ffff::9".parse().unwrap(), &headers);
//! assert_eq!(a, b);
//! ```

use std::error::Error;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use http::HeaderMap;

/// Which header a trusted proxy writes the client's address into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for="[2001:db8::1]:4711"` (RFC 7239).
    Forwarded,
}

/// How to find and group a request's client address: the trusted proxies, the header they
/// write, and the prefix lengths clients are grouped by. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp {
    trusted: Vec<Cidr>,
    header: ProxyHeader,
    ipv6_prefix: u8,
    ipv4_prefix: u8,
}

impl Default for ClientIp {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientIp {
    /// The TCP peer's address, trusting no proxy; IPv6 grouped by /64, IPv4 by address.
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

    /// Groups IPv4 clients by this prefix length (default 32: each address; values above 32
    /// count as 32).
    #[must_use]
    pub const fn ipv4_prefix(mut self, bits: u8) -> Self {
        self.ipv4_prefix = if bits > 32 { 32 } else { bits };
        self
    }

    /// Whether any proxy is trusted (when none is, headers are never read).
    pub fn trusts_proxies(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// The client of a request that came from `peer` with `headers`, grouped by the prefix
    /// lengths: the key limits and quotas count it under.
    #[inline]
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let client = if self.trusted.is_empty() {
            canonical(peer)
        } else {
            self.client_ip(peer, headers)
        };
        self.group(client)
    }

    /// The client address of a request that came from `peer` with `headers`, before
    /// grouping.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        // The right-most entry came from the nearest proxy; stop at the first untrusted one.
        let mut client = peer;
        match self.header {
            // Entry by entry from the right, as bytes: a proxy may append its entry to the
            // client's own line, and what the client wrote there (unreadable bytes included)
            // is never read.
            ProxyHeader::XForwardedFor => {
                for value in headers.get_all("x-forwarded-for").iter().rev() {
                    for entry in value.as_bytes().rsplit(|&b| b == b',') {
                        let node = std::str::from_utf8(entry).ok();
                        match self.step(node.and_then(|n| parse_node(n.trim()))) {
                            Step::Next(ip) => client = ip,
                            Step::Stop(ip) => return ip.unwrap_or(client),
                        }
                    }
                }
            }
            ProxyHeader::Forwarded => {
                for value in headers.get_all(http::header::FORWARDED).iter().rev() {
                    for element in value.as_bytes().rsplit(|&b| b == b',') {
                        // An element that is not text at all: unreadable, like `for=` garbage.
                        let node = std::str::from_utf8(element).map_or(Some(None), forwarded_for);
                        let Some(node) = node else {
                            continue;
                        };
                        match self.step(node) {
                            Step::Next(ip) => client = ip,
                            Step::Stop(ip) => return ip.unwrap_or(client),
                        }
                    }
                }
            }
        }
        client
    }

    fn step(&self, hop: Option<IpAddr>) -> Step {
        match hop.map(canonical) {
            Some(ip) if self.is_trusted(ip) => Step::Next(ip),
            Some(ip) => Step::Stop(Some(ip)),
            // A trusted proxy wrote something unreadable: count the request against it.
            None => Step::Stop(None),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// `ip` reduced to its group (the configured prefix lengths).
    #[inline]
    pub fn group(&self, ip: IpAddr) -> IpAddr {
        match canonical(ip) {
            IpAddr::V4(v4) => {
                IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & mask32(self.ipv4_prefix)))
            }
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(
                v6.to_bits() & mask128(self.ipv6_prefix),
            )),
        }
    }
}

enum Step {
    Next(IpAddr),
    Stop(Option<IpAddr>),
}

/// An address of the form IPv4-mapped IPv6 (`::ffff:1.2.3.4`) counts as the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
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

/// The `for=` value of one `Forwarded` element: `None` for an empty element (HTTP lists allow
/// them: no hop wrote it), and `Some(None)` when the hop named no address it can be counted
/// by (no `for=`, `unknown`, `_hidden`, garbage). Skipping a hop's element without `for=`
/// would read the element left of it, which whoever sent the request to that hop wrote: the
/// client itself, if the hop is the first proxy.
fn forwarded_for(element: &str) -> Option<Option<IpAddr>> {
    if element.trim().is_empty() {
        return None;
    }
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then_some(value)
    });
    Some(value.and_then(|v| parse_node(v.trim().trim_matches('"'))))
}

/// An address, possibly with a port (`1.2.3.4:80`, `[2001:db8::1]:80`) or in brackets.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
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
mod tests;
