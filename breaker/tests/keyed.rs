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
    // Creating a breaker before traffic, and forcing it open.
    handle.get_or_create("blocked").force_open();
    assert!(
        send_to(&mut svc, "http://blocked/")
            .await
            .unwrap_err()
            .is::<CircuitOpen>()
    );
    assert_eq!(handle.len(), 3);
}
