//! Server fleets against a real `redis-server` (and a 3-node Redis Cluster): several instances
//! of a layer built with the same prefix share one limit per client; a Redis that stops
//! answering is answered per limit (closed: 503 with the typed error; open: a local quota), and
//! nothing decided meanwhile is counted twice when it answers again. Redis keeps its own clock,
//! so these run on real time, with margins a correct implementation never misses.
#![cfg(all(feature = "redis", feature = "server"))]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{HeaderName, Request, Response, StatusCode};
use tollway_limiter::redis::aio::ConnectionLike;
use tollway_limiter::server::{
    HeaderKey, HeaderOptions, Limit, PeerIp, ServerLimiterLayer, TextDigest,
};
use tollway_limiter::{Quota, StoreUnavailable};
use tollway_test_support::{TestCluster, TestRedis, random_prefix};
use tower::{Layer, ServiceExt, service_fn};

fn request(peer: &str, key: Option<&str>) -> Request<Body> {
    let mut builder = Request::get("/hello");
    if let Some(key) = key {
        builder = builder.header("x-api-key", key);
    }
    let mut request = builder.body(Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    request
}

type Api = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

fn instance<C>(connection: C, prefix: &str, limits: Vec<Limit>) -> Api
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let mut builder = ServerLimiterLayer::builder().headers(HeaderOptions::all());
    for limit in limits {
        builder = builder.limit(limit);
    }
    let layer = builder.redis(connection, prefix).build().unwrap();
    let api = service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("ok")))
    });
    tower::util::BoxCloneSyncService::new(layer.layer(api))
}

async fn send(service: &Api, request: Request<Body>) -> Response<Body> {
    service.clone().oneshot(request).await.unwrap()
}

fn per_ip(quota: Quota) -> Limit {
    Limit::new("per-ip", PeerIp::new(), quota)
}

/// Two instances, one client, alternating: together exactly the burst, then 429s with the
/// headers one instance would write.
async fn two_instances_share_one_limit<C>(connection: C)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let prefix = random_prefix();
    let quota = Quota::per_minute(10).burst(10);
    let a = instance(connection.clone(), &prefix, vec![per_ip(quota)]);
    let b = instance(connection, &prefix, vec![per_ip(quota)]);
    let mut admitted = 0;
    let mut remaining = Vec::new();
    for i in 0..30 {
        let service = if i % 2 == 0 { &a } else { &b };
        let response = send(service, request("203.0.113.9:4000", None)).await;
        if response.status() == StatusCode::OK {
            admitted += 1;
            remaining.push(response.headers()["x-ratelimit-remaining"].clone());
        } else {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            // One request every 6 s: the next one is at most 6 s away.
            assert!((1..=6).contains(&retry), "{retry}");
            assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
            let policy = response.headers()["ratelimit-policy"].to_str().unwrap();
            assert!(policy.contains("\"per-ip\";q=10;w=60"), "{policy}");
        }
    }
    assert_eq!(
        admitted, 10,
        "the two instances together admit what one would"
    );
    let expected: Vec<String> = (0..10).rev().map(|n| n.to_string()).collect();
    assert_eq!(
        remaining, expected,
        "each answer counts the other instance's too"
    );
    // Another client has its own limit.
    let response = send(&a, request("198.51.100.1:4000", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn two_instances_on_one_redis_admit_what_one_would() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    two_instances_share_one_limit(server.connect().await).await;
}

#[tokio::test]
async fn two_instances_on_a_cluster_admit_what_one_would() {
    let Some(cluster) = TestCluster::shared_or_own().await else {
        return;
    };
    two_instances_share_one_limit(cluster.connect().await).await;
    // After a failover-like script flush, the script is loaded again.
    cluster.flush_scripts().await;
    two_instances_share_one_limit(cluster.connect().await).await;
}

#[tokio::test]
async fn several_limits_are_all_or_nothing_across_instances() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let limits = || {
        vec![
            per_ip(Quota::per_minute(3).burst(3)),
            Limit::new(
                "per-key",
                HeaderKey::new(HeaderName::from_static("x-api-key")),
                Quota::per_hour(5).burst(5),
            ),
        ]
    };
    let a = instance(server.connect().await, &prefix, limits());
    let b = instance(server.connect().await, &prefix, limits());
    // The IP's 3 are spent with the key: the key keeps 2.
    for _ in 0..3 {
        let r = send(&a, request("203.0.113.5:1", Some("k-1"))).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Refused by the IP limit: the key's quota is not touched.
    for _ in 0..4 {
        let r = send(&b, request("203.0.113.5:1", Some("k-1"))).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    // From other addresses the key has exactly 2 left, on either instance.
    let r = send(&b, request("198.51.100.7:1", Some("k-1"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(&a, request("198.51.100.8:1", Some("k-1"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(&b, request("198.51.100.9:1", Some("k-1"))).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let policy = r.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(policy.contains("\"per-key\";r=0"), "{policy}");

    // Redis holds digests of text keys, never the key itself.
    let mut raw = server.connect().await;
    let keys: Vec<String> = tollway_limiter::redis::cmd("KEYS")
        .arg(format!("{{{prefix}}}*"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(keys.iter().all(|k| !k.contains("k-1")), "{keys:?}");
    let digest = TextDigest::of("k-1").hex();
    assert!(keys.iter().any(|k| k.ends_with(&digest)), "{keys:?}");
}

#[test]
fn text_digests_are_the_same_in_every_process() {
    // A fixed value: instances of a fleet (other processes, other builds) must agree.
    assert_eq!(
        TextDigest::of("sk-live-123").hex(),
        TextDigest::of("sk-live-123").hex()
    );
    assert_eq!(TextDigest::of("").hex().len(), 32);
    assert_eq!(
        TextDigest::of("abc").hex(),
        "6e9109907b891898a8f964af7a2b9c9c"
    );
}

/// Redis stops answering (`CLIENT PAUSE`) while requests keep coming: a closed limit refuses
/// with 503 and the typed error at once; an open one admits through its local quota; when
/// Redis answers again it decides from where it was, having counted nothing twice.
#[tokio::test]
async fn redis_pausing_mid_run_fails_closed_or_open_per_limit() {
    // Pauses its server: always its own.
    let Some(server) = TestRedis::own().await else {
        return;
    };
    let prefix = random_prefix();
    let quota = Quota::per_minute(6).burst(6);
    let closed = instance(server.connect().await, &prefix, vec![per_ip(quota)]);
    let open = instance(
        server.connect().await,
        &format!("{prefix}-open"),
        vec![per_ip(quota).fail_open_to_local(Quota::per_minute(2).burst(2))],
    );
    for service in [&closed, &open] {
        for _ in 0..3 {
            let r = send(service, request("203.0.113.1:1", None)).await;
            assert_eq!(r.status(), StatusCode::OK);
        }
    }
    let mut raw = server.connect().await;
    let () = tollway_limiter::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2_500)
        .arg("ALL")
        .query_async(&mut raw)
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let r = send(&closed, request("203.0.113.1:1", None)).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error = r
        .extensions()
        .get::<Arc<StoreUnavailable>>()
        .expect("the typed error");
    assert!(!error.to_string().is_empty());
    // The next ones are refused at once, without waiting for Redis.
    let again = std::time::Instant::now();
    let r = send(&closed, request("203.0.113.1:1", None)).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        again.elapsed() < Duration::from_millis(100),
        "{:?}",
        again.elapsed()
    );

    // Open: the local quota of 2, then 429.
    let statuses: Vec<StatusCode> =
        futures_util::future::join_all((0..4).map(|_| send(&open, request("203.0.113.1:1", None))))
            .await
            .into_iter()
            .map(|r| r.status())
            .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        2,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS)
    );
    assert!(
        started.elapsed() < Duration::from_millis(2_400),
        "{:?}",
        started.elapsed()
    );

    // Redis answers again (the pause ends, the down window passes): it counts from where it
    // was, 3 of 6 spent, the local admissions never sent to it. The round trips that timed
    // out were queued by the paused server and ran after the pause: past their deadline, they
    // decided nothing.
    tokio::time::sleep(Duration::from_millis(3_200).saturating_sub(started.elapsed())).await;
    for service in [&closed, &open] {
        let mut admitted = 0;
        for _ in 0..6 {
            if send(service, request("203.0.113.1:1", None)).await.status() == StatusCode::OK {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 3, "exactly the 3 left in Redis");
    }
}

/// A connection to a Redis whose clock runs `ahead_us` ahead of this machine's: it moves the
/// script's deadline argument (this instance's idea of Redis time) back into the real server's
/// time, and the `now` the script answers with forward, as such a server would.
#[derive(Clone)]
struct AheadOfUs<C> {
    inner: C,
    ahead_us: i64,
}

impl<C: ConnectionLike + Send> ConnectionLike for AheadOfUs<C> {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a tollway_limiter::redis::Cmd,
    ) -> tollway_limiter::redis::RedisFuture<'a, tollway_limiter::redis::Value> {
        use tollway_limiter::redis::{Arg, Value};
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|arg| match arg {
                Arg::Simple(bytes) => bytes.to_vec(),
                _ => unreachable!("the limiter sends plain arguments"),
            })
            .collect();
        let is_script = args
            .first()
            .is_some_and(|a| a.eq_ignore_ascii_case(b"evalsha") || a.eq_ignore_ascii_case(b"eval"));
        let mut rewritten = tollway_limiter::redis::cmd(std::str::from_utf8(&args[0]).unwrap());
        let deadline_at = is_script.then(|| {
            let keys: usize = std::str::from_utf8(&args[2]).unwrap().parse().unwrap();
            3 + keys
        });
        for (i, arg) in args.iter().enumerate().skip(1) {
            if Some(i) == deadline_at {
                let ours: i64 = std::str::from_utf8(arg).unwrap().parse().unwrap();
                rewritten.arg(ours - self.ahead_us);
            } else {
                rewritten.arg(arg.as_slice());
            }
        }
        let ahead = self.ahead_us;
        Box::pin(async move {
            let mut reply = self.inner.req_packed_command(&rewritten).await?;
            if let (true, Value::Array(items)) = (is_script, &mut reply)
                && let Some(Value::Int(now)) = items.get_mut(2)
            {
                *now += ahead;
            }
            Ok(reply)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a tollway_limiter::redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> tollway_limiter::redis::RedisFuture<'a, Vec<tollway_limiter::redis::Value>> {
        self.inner.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// Finding: an instance learned how far Redis's clock is from its own only from a reply. Its
/// first request carried a deadline in its own time; a Redis whose clock ran more than the
/// timeout ahead (another machine, a failover to one) found it already passed and decided
/// nothing, and the instance took the store as down: a second of 503s from every limit that
/// fails closed, at each start. A refusal to decide that came back within the timeout is a
/// clock difference, not a late round trip: the instance asks again, once, with the clock
/// difference it just learned.
#[tokio::test]
async fn a_redis_clock_ahead_of_ours_is_learned_without_failing_a_request() {
    let Some(server) = TestRedis::shared_or_own().await else {
        return;
    };
    let prefix = random_prefix();
    let ahead = AheadOfUs {
        inner: server.connect().await,
        ahead_us: 3_000_000,
    };
    let api = instance(ahead, &prefix, vec![per_ip(Quota::per_minute(10).burst(3))]);
    let statuses: Vec<StatusCode> = {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(send(&api, request("203.0.113.1:1", None)).await.status());
        }
        statuses
    };
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "decided by Redis from the first request on"
    );
}
