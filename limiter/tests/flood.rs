//! A flood of 1,000,000 distinct client addresses against the server layer, with an hourly
//! quota (so no key is ever idle and every new key must evict an indebted one): the cost of a
//! new key once the map is full stays within twice its cost while the map fills, and resident
//! memory stops growing once the map is full, under the bound the layer states.
//!
//! Timing: run in release (`cargo test --release -p tollway-limiter --features server --test
//! flood`), as CI's own step does; a debug build skips it.
#![cfg(all(feature = "server", target_os = "linux"))]

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;

use axum::body::Body;
use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use http::{Request, Response};
use tollway_limiter::Quota;
use tollway_limiter::server::{HeaderOptions, Limit, PeerIp, ServerLimiterLayer};
use tower::{Layer, Service, service_fn};

const KEYS: u64 = 1_000_000;
const MAX_KEYS: usize = 100_000;
const BATCH: u64 = 10_000;

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Nanoseconds this thread has run on a CPU: unlike wall time, not stretched by whatever else
/// the machine runs (CI's two cores are shared).
fn cpu_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A client from its own IPv6 /64 (an attacker rotating prefixes).
fn request(i: u64) -> Request<Body> {
    let ip = IpAddr::V6(Ipv6Addr::from_bits(
        0x2001_0db8_0000_0000_u128 << 64 | u128::from(i) << 64,
    ));
    let mut request = Request::get("/").body(Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip, 4_000)));
    request
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[test]
#[cfg_attr(debug_assertions, ignore = "timing: run in release (CI's flood step)")]
fn a_million_new_keys_cost_the_same_when_the_map_is_full_and_memory_plateaus() {
    let layer = ServerLimiterLayer::builder()
        .limit(Limit::new("ip", PeerIp::new(), Quota::per_hour(1).burst(1)))
        .max_keys(NonZeroUsize::new(MAX_KEYS).unwrap())
        .headers(HeaderOptions::none())
        .build()
        .unwrap();
    let inner = service_fn(|_req: Request<Body>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Body::empty())))
    });
    let mut service = layer.layer(inner);
    let bound = layer.memory_bound();
    let start_rss = rss();
    let mut filling = Vec::new();
    let mut full = Vec::new();
    let mut rss_when_full = None;
    let mut next = 0;
    while next < KEYS {
        let requests: Vec<_> = (next..next + BATCH).map(request).collect();
        let was_full = layer.tracked_keys() >= layer.key_bound() * 98 / 100;
        let started = cpu_nanos();
        for request in requests {
            let response = service.call(request).now_or_never().unwrap().unwrap();
            assert_eq!(response.status(), 200, "a new key always has its burst");
        }
        let per_key = (cpu_nanos() - started) as f64 / BATCH as f64;
        next += BATCH;
        if was_full {
            rss_when_full.get_or_insert_with(rss);
            full.push(per_key);
        } else if next > BATCH {
            // The first batch warms the process up.
            filling.push(per_key);
        }
        assert!(layer.tracked_keys() <= layer.key_bound());
    }
    let (filling, full) = (median(filling), median(full));
    let rss_when_full = rss_when_full.expect("the map filled up");
    let end_rss = rss();
    // CI's log keeps the figures the assertions below judge.
    #[allow(clippy::print_stdout)]
    {
        println!(
            "new key: {filling:.0} ns while filling, {full:.0} ns when full ({:.2}x); \
         memory: bound {} KiB, used {} KiB, resident +{} KiB at full, +{} KiB at the end",
            full / filling,
            bound / 1024,
            layer.memory_used() / 1024,
            rss_when_full.saturating_sub(start_rss) / 1024,
            end_rss.saturating_sub(start_rss) / 1024,
        );
    }
    assert!(
        full <= 2.0 * filling,
        "{full:.0} ns per new key when full, {filling:.0} filling"
    );
    assert!(layer.memory_used() <= bound);
    // Plateau: 900,000 more keys once full add nothing but allocator noise.
    assert!(
        end_rss.saturating_sub(rss_when_full) < 4 << 20,
        "resident memory grew by {} KiB after the map was full",
        end_rss.saturating_sub(rss_when_full) / 1024
    );
    // Under the stated bound, plus what the allocator keeps of the tables the map outgrew and
    // of this test's own request batches.
    assert!(
        end_rss.saturating_sub(start_rss) < bound + (16 << 20),
        "resident memory grew by {} KiB, bound {} KiB",
        end_rss.saturating_sub(start_rss) / 1024,
        bound / 1024
    );
}
