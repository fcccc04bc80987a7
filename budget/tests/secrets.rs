//! API keys never reach the logs: every event the quota layer emits, at every level, is
//! searched for the raw key.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use tollway_budget::quota::KeyQuotaLayer;
use tollway_budget::{Ledger, Window};
use tower::ServiceExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const SECRET: &str = "sk-live-9f8e7d6c5b4a";

/// Every event and span field, as text.
#[derive(Clone, Default)]
struct Everything(Arc<Mutex<Vec<String>>>);

struct Texts<'a>(&'a mut Vec<String>);

impl Visit for Texts<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push(format!("{}={value:?}", field.name()));
    }
}

impl Subscriber for Everything {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        span.record(&mut Texts(&mut self.0.lock().unwrap()));
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, values: &Record<'_>) {
        values.record(&mut Texts(&mut self.0.lock().unwrap()));
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        event.record(&mut Texts(&mut self.0.lock().unwrap()));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test]
async fn api_keys_never_reach_the_logs() {
    let everything = Everything::default();
    let _guard = tracing::subscriber::set_default(everything.clone());
    let quota = KeyQuotaLayer::new(|_| Ledger::new(1, Window::day()));
    let app = Router::new()
        .route("/search", get(|| async { "found" }))
        .layer(quota.clone());
    let request = || {
        Request::get("/search")
            .header("x-api-key", SECRET)
            .body(Body::empty())
            .unwrap()
    };
    let ok = app.clone().oneshot(request()).await.unwrap();
    assert_eq!(ok.status(), 200);
    let refused = app.clone().oneshot(request()).await.unwrap();
    assert_eq!(refused.status(), 402);
    let logged = everything.0.lock().unwrap().clone();
    assert!(
        logged.iter().any(|text| text.contains("quota refused")),
        "the refusal was logged: {logged:?}"
    );
    for text in &logged {
        assert!(!text.contains(SECRET), "a raw API key in the logs: {text}");
    }
    // Nor in what a program might log itself.
    let key = tollway_budget::quota::QuotaKey::from(SECRET);
    for shown in [format!("{quota:?}"), format!("{key:?}"), key.to_string()] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
    assert_eq!(key.fingerprint(), key.to_string());
}
