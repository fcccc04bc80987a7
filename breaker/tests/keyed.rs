//! Keyed breakers: one per authority by default, bounded registry.

mod common;

use std::time::Duration;

use common::{Mock, Reply};
use http::{Request, Response, StatusCode};
use tollway_breaker::{BreakerConfig, KeyedBreakerLayer, OpenDuration, State};
use tollway_core::{BoxError, CircuitOpen};
use tower::{Layer, Service, ServiceExt};

fn config() -> BreakerConfig {
    BreakerConfig::builder()
        .consecutive_failures(1)
        .without_failure_rate()
        .open_duration(OpenDuration::fixed(Duration::from_secs(10)))
        .build()
        .unwrap()
}

async fn send_to<S>(service: &mut S, uri: &str) -> Result<StatusCode, BoxError>
where
    S: Service<Request<()>, Response = Response<()>, Error = BoxError>,
{
    let request = Request::builder().uri(uri).body(()).unwrap();
    Ok(service.ready().await?.call(request).await?.status())
}

#[tokio::test(start_paused = true)]
async fn one_breaker_per_authority() {
    let layer = KeyedBreakerLayer::new(config(), 16);
    let handle = layer.handle();
    let mock = Mock::new();
    let mut svc = layer.layer(mock.clone());
    mock.push([Reply::Status(500)]);
    assert_eq!(send_to(&mut svc, "http://a.example/x").await.unwrap(), 500);
    let error = send_to(&mut svc, "http://a.example/y").await.unwrap_err();
    assert!(error.is::<CircuitOpen>());
    // Another host is unaffected, and so is another port.
    assert_eq!(send_to(&mut svc, "http://b.example/x").await.unwrap(), 200);
    assert_eq!(
        send_to(&mut svc, "http://a.example:8080/x").await.unwrap(),
        200
    );
    assert_eq!(handle.len(), 3);
    assert_eq!(handle.get("a.example").unwrap().state(), State::Open);
    assert_eq!(handle.get("b.example").unwrap().state(), State::Closed);
    assert_eq!(mock.calls(), 3);
    // A request with no authority and no Host header shares the "" breaker.
    assert_eq!(send_to(&mut svc, "/relative").await.unwrap(), 200);
    assert!(handle.get("").is_some());
}

#[tokio::test(start_paused = true)]
async fn host_header_keys_server_side_requests() {
    let layer = KeyedBreakerLayer::new(config(), 16);
    let mock = Mock::new();
    let mut svc = layer.layer(mock.clone());
    mock.push([Reply::Status(500)]);
    let request = Request::builder()
        .uri("/x")
        .header("host", "api.example")
        .body(())
        .unwrap();
    svc.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(
        layer.handle().get("api.example").unwrap().state(),
        State::Open
    );
}

#[tokio::test(start_paused = true)]
async fn custom_key() {
    let layer = KeyedBreakerLayer::new(config(), 16).key_by(|req: &Request<()>| {
        req.headers()
            .get("x-api")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let handle = layer.handle();
    let mock = Mock::new();
    let mut svc = layer.layer(mock.clone());
    mock.push([Reply::Status(500)]);
    let request = Request::builder()
        .uri("http://h/")
        .header("x-api", "search")
        .body(())
        .unwrap();
    svc.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(handle.get("search").unwrap().state(), State::Open);
    assert!(handle.get("h").is_none());
}

#[tokio::test(start_paused = true)]
async fn full_registry_evicts_idle_closed_breakers_before_open_ones() {
    let layer = KeyedBreakerLayer::new(config(), 3);
    let handle = layer.handle();
    let mock = Mock::new();
    let mut svc = layer.layer(mock.clone());
    mock.push([Reply::Status(500)]);
    send_to(&mut svc, "http://down/").await.unwrap(); // open, the oldest
    tokio::time::advance(Duration::from_secs(5)).await;
    send_to(&mut svc, "http://idle/").await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    send_to(&mut svc, "http://busy/").await.unwrap();
    send_to(&mut svc, "http://new/").await.unwrap();
    let mut keys: Vec<String> = handle.keys().iter().map(|k| k.to_string()).collect();
    keys.sort();
    assert_eq!(keys, ["busy", "down", "new"]);
    assert_eq!(handle.get("down").unwrap().state(), State::Open);
    // Creating a breaker before traffic, and forcing it open: it replaces the oldest closed
    // breaker idle for a second or more.
    tokio::time::advance(Duration::from_secs(2)).await;
    handle.get_or_create("blocked").unwrap().force_open();
    assert!(
        send_to(&mut svc, "http://blocked/")
            .await
            .unwrap_err()
            .is::<CircuitOpen>()
    );
    assert_eq!(handle.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_hosts_never_evicts_an_open_breaker() {
    let layer = KeyedBreakerLayer::new(config(), 4);
    let handle = layer.handle();
    let mock = Mock::new();
    let mut svc = layer.layer(mock.clone());
    mock.push([Reply::Status(500)]);
    send_to(&mut svc, "http://victim/").await.unwrap();
    assert_eq!(handle.get("victim").unwrap().state(), State::Open);
    // A client sends Host headers of its own making, many per second and over time.
    for round in 0..30 {
        for i in 0..40 {
            let request = Request::builder()
                .uri("/")
                .header("host", format!("h{round}-{i}.example"))
                .body(())
                .unwrap();
            svc.ready().await.unwrap().call(request).await.unwrap();
        }
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(handle.len() <= 4);
        assert_eq!(
            handle.get("victim").map(|h| h.state()),
            Some(State::Open),
            "round {round}"
        );
    }
    // The victim's breaker still protects the upstream: no call reached it.
    let before = mock.calls();
    assert!(
        send_to(&mut svc, "http://victim/")
            .await
            .unwrap_err()
            .is::<CircuitOpen>()
    );
    assert_eq!(mock.calls(), before);
}

#[tokio::test(start_paused = true)]
async fn a_registry_full_of_open_breakers_lets_new_keys_through_unkeyed() {
    let layer = KeyedBreakerLayer::new(config(), 2);
    let handle = layer.handle();
    let mock = Mock::new();
    let mut svc = layer.layer(mock.clone());
    mock.push([Reply::Status(500), Reply::Status(500), Reply::Status(500)]);
    send_to(&mut svc, "http://a/").await.unwrap();
    send_to(&mut svc, "http://b/").await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    // No room and nothing evictable: the call goes through, no breaker is made for it.
    assert_eq!(send_to(&mut svc, "http://c/").await.unwrap(), 500);
    assert_eq!(send_to(&mut svc, "http://c/").await.unwrap(), 200);
    assert!(handle.get("c").is_none());
    assert!(handle.get_or_create("c").is_none());
    assert_eq!(handle.get("a").unwrap().state(), State::Open);
    assert_eq!(handle.get("b").unwrap().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn authority_keys_are_case_insensitive() {
    let layer = KeyedBreakerLayer::new(config(), 16);
    let handle = layer.handle();
    let mock = Mock::new();
    let mut svc = layer.layer(mock.clone());
    mock.push([Reply::Status(500)]);
    send_to(&mut svc, "http://API.Example/").await.unwrap();
    assert!(
        send_to(&mut svc, "http://api.example/")
            .await
            .unwrap_err()
            .is::<CircuitOpen>()
    );
    assert_eq!(handle.keys().len(), 1);
}

/// Finding: the key was the URI's authority as written, userinfo included: the breaker for
/// `https://user:secret@api.example/` was named `user:secret@api.example` in its logs, metric
/// labels and `keys()`, and each credential had a breaker of its own (a host failing for one
/// kept failing open for none of the others). The key is the host and port.
#[tokio::test(start_paused = true)]
async fn userinfo_never_reaches_the_key_or_the_breaker_name() {
    let layer = KeyedBreakerLayer::new(config(), 16);
    let handle = layer.handle();
    let mock = Mock::new();
    let mut svc = layer.layer(mock.clone());
    mock.push([Reply::Status(500)]);
    send_to(&mut svc, "http://alice:secret@api.example/")
        .await
        .unwrap();
    assert!(
        send_to(&mut svc, "http://bob:other@api.example/")
            .await
            .unwrap_err()
            .is::<CircuitOpen>(),
        "one host, one breaker, whoever's credentials"
    );
    let keys = handle.keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(&*keys[0], "api.example");
    assert!(
        keys.iter()
            .all(|k| !k.contains("secret") && !k.contains('@'))
    );
}
