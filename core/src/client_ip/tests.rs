use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, value.parse().unwrap());
    }
    map
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn untrusted_peer_ignores_forwarding_headers() {
    let r = ClientIp::new();
    let h = headers(&[("x-forwarded-for", "9.9.9.9")]);
    assert_eq!(r.resolve(ip("1.2.3.4"), &h), ip("1.2.3.4"));
    // A trusted set that does not hold the peer: still the peer.
    let r = ClientIp::new().trust_proxy("10.0.0.0/8".parse().unwrap());
    assert_eq!(r.resolve(ip("1.2.3.4"), &h), ip("1.2.3.4"));
}

#[test]
fn reads_from_the_right_and_ignores_spoofed_left_entries() {
    let r = ClientIp::new()
        .trust_proxy("10.0.0.0/8".parse().unwrap())
        .trust_proxy("192.168.0.0/16".parse().unwrap());
    for spoof in ["1.1.1.1", "2.2.2.2, 3.3.3.3", "garbage, ::1"] {
        let header = format!("{spoof}, 203.0.113.7, 192.168.1.1");
        let h = headers(&[("x-forwarded-for", &header)]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("203.0.113.7"), "{header}");
    }
    // Two header lines: the last line's last entry is nearest.
    let h = headers(&[
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-for", "198.51.100.1, 10.9.9.9"),
    ]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("198.51.100.1"));
}

#[test]
fn only_trusted_hops_yield_the_left_most_trusted_one_and_garbage_the_proxy() {
    let r = ClientIp::new().trust_proxy("10.0.0.0/8".parse().unwrap());
    let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.5")]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("10.0.0.9"));
    let h = headers(&[("x-forwarded-for", "1.2.3.4, nonsense")]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("10.0.0.2"));
    let h = headers(&[("x-forwarded-for", "1.2.3.4, nonsense, 10.0.0.7")]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("10.0.0.7"));
    // No header at all: the proxy itself.
    assert_eq!(r.resolve(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
}

#[test]
fn forwarded_header_with_ports_and_brackets() {
    let r = ClientIp::new()
        .trust_proxy("10.0.0.0/8".parse().unwrap())
        .proxy_header(ProxyHeader::Forwarded)
        .ipv6_prefix(128);
    let h = headers(&[(
        "forwarded",
        r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.3"#,
    )]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("2001:db8:cafe::17"));
    // X-Forwarded-For is not read when Forwarded is configured.
    let h = headers(&[("x-forwarded-for", "7.7.7.7")]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("10.0.0.2"));
    // An element without `for=`, like `for=unknown`, stops at the proxy.
    let h = headers(&[("forwarded", "for=8.8.8.8, proto=https")]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("10.0.0.2"));
    let h = headers(&[("forwarded", "for=8.8.8.8, for=unknown")]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("10.0.0.2"));
}

#[test]
fn ipv6_grouped_by_prefix_and_mapped_ipv4_is_ipv4() {
    let r = ClientIp::new();
    let none = HeaderMap::new();
    let a = r.resolve(ip("2001:db8:1:2:aaaa::1"), &none);
    let b = r.resolve(ip("2001:db8:1:2:bbbb::2"), &none);
    let c = r.resolve(ip("2001:db8:1:3::1"), &none);
    assert_eq!(a, b);
    assert_eq!(a, ip("2001:db8:1:2::"));
    assert_ne!(a, c);
    let wide = ClientIp::new().ipv6_prefix(48);
    assert_eq!(
        wide.resolve(ip("2001:db8:1:2::1"), &none),
        wide.resolve(ip("2001:db8:1:3::1"), &none)
    );
    assert_eq!(r.resolve(ip("::ffff:1.2.3.4"), &none), ip("1.2.3.4"));
    let v4 = ClientIp::new().ipv4_prefix(24);
    assert_eq!(v4.resolve(ip("1.2.3.4"), &none), ip("1.2.3.0"));
    assert_eq!(ClientIp::new().ipv6_prefix(200).ipv6_prefix, 128);
}

#[test]
fn hostile_headers_never_panic() {
    let r = ClientIp::new().trust_proxy("0.0.0.0/0".parse().unwrap());
    let long = ",".repeat(100_000);
    for value in [long.as_str(), "[", "[::1", "::1]:", "for=", ";;;", "\u{7f}"] {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", v.clone());
            h.insert("forwarded", v);
            let _ = r.resolve(ip("10.0.0.1"), &h);
            let _ = r
                .clone()
                .proxy_header(ProxyHeader::Forwarded)
                .resolve(ip("10.0.0.1"), &h);
        }
    }
    let mut h = HeaderMap::new();
    h.insert(
        "x-forwarded-for",
        http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
    );
    assert_eq!(r.resolve(ip("10.0.0.1"), &h), ip("10.0.0.1"));
}

/// Finding: a proxy that appends to the client's own line (nginx's
/// `$proxy_add_x_forwarded_for`) makes one header value of the client's bytes and its own
/// entry. A byte that is not visible ASCII in the client's part made the whole value
/// unreadable, so the request counted against the proxy: any client could move itself into
/// the proxy's bucket with a spoofed left-most entry. Only the entries the walk reaches
/// are read now.
#[test]
fn unreadable_bytes_left_of_the_nearest_entries_are_never_read() {
    let r = ClientIp::new().trust_proxy("10.0.0.0/8".parse().unwrap());
    let value = |bytes: &[u8]| http::HeaderValue::from_bytes(bytes).unwrap();
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-for", value(b"\xff\xfe, 203.0.113.9"));
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("203.0.113.9"));
    h.insert(
        "x-forwarded-for",
        value(b"caf\xc3\xa9, 203.0.113.9, 10.0.0.5"),
    );
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("203.0.113.9"));
    // An earlier line the client sent is never read either.
    h.insert("x-forwarded-for", value(b"\xff"));
    h.append("x-forwarded-for", value(b"203.0.113.9"));
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("203.0.113.9"));
    // The same through `Forwarded`.
    let r = r.proxy_header(ProxyHeader::Forwarded);
    let mut h = HeaderMap::new();
    h.insert("forwarded", value(b"for=\"\xff\", for=203.0.113.9"));
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("203.0.113.9"));
    // Where the unreadable entry is the one the walk reaches, the proxy it came through.
    h.insert("forwarded", value(b"for=203.0.113.9, for=\"\xff\""));
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("10.0.0.2"));
}

/// Finding: a `Forwarded` element without `for=` was skipped, and the walk went on to the
/// element left of it. That element came from whoever sent the request to the hop that
/// wrote the bare one: when that hop is the first proxy, the client itself. A trusted proxy
/// that does not disclose its client (`proto=https` alone) let every client pick its own
/// bucket with `Forwarded: for=<any address>`. The hop's client is unknown there: the
/// request counts against the proxy, as with `for=unknown`. Empty list elements are still
/// ignored, as HTTP lists allow them.
#[test]
fn a_trusted_hop_that_names_no_client_is_not_skipped_over() {
    let r = ClientIp::new()
        .trust_proxy("10.0.0.0/8".parse().unwrap())
        .proxy_header(ProxyHeader::Forwarded);
    for spoof in ["6.6.6.6", "7.7.7.7", "[2001:db8::66]"] {
        let value = format!("for={spoof}, proto=https;by=10.0.0.2");
        let h = headers(&[("forwarded", &value)]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("10.0.0.2"), "{value}");
    }
    // The same behind a chain of trusted hops: the last one that named its client.
    let h = headers(&[("forwarded", "for=6.6.6.6, proto=https, for=10.0.0.7")]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("10.0.0.7"));
    // Empty elements are no hop at all.
    let h = headers(&[("forwarded", "for=203.0.113.9, , ")]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("203.0.113.9"));
}

#[test]
fn cidr_parsing_and_errors() {
    let v4: Cidr = "10.0.0.0/8".parse().unwrap();
    assert!(v4.contains(ip("10.255.0.1")));
    assert!(v4.contains(ip("::ffff:10.1.1.1")));
    assert!(!v4.contains(ip("11.0.0.1")));
    let v6: Cidr = "2001:db8::/32".parse().unwrap();
    assert!(v6.contains(ip("2001:db8:ffff::1")));
    assert!(!v6.contains(ip("10.0.0.1")));
    let host: Cidr = "192.0.2.1".parse().unwrap();
    assert!(host.contains(ip("192.0.2.1")));
    assert!(!host.contains(ip("192.0.2.2")));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(ip("8.8.8.8")));
    let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
    assert!(mapped.contains(ip("10.9.9.9")));
    for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129", ""] {
        let err = bad.parse::<Cidr>().unwrap_err();
        assert!(err.to_string().contains("address block"), "{bad}");
    }
}
