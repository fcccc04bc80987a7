//! What the retry layer tells the outside world: tracing events (with
//! `http.request.resend_count`) and, with the `metrics` feature, counters.

mod common;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Reply, Script};
use http::Request;
use http_body_util::Full;
use parking_lot::Mutex;
use tollway_retry::backoff::{Backoff, Jitter};
use tollway_retry::{Retry, RetryBudget, RetryPolicy};
use tower::ServiceExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records every event as `field=value` pairs.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<EventFields>>>);

type EventFields = Vec<(String, String)>;

struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl Subscriber for Events {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        self.0.lock().push(fields.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Events {
    fn with(&self, name: &str) -> Vec<EventFields> {
        self.0
            .lock()
            .iter()
            .filter(|fields| fields.iter().any(|(k, _)| k == name))
            .cloned()
            .collect()
    }
}

fn value<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    &fields.iter().find(|(k, _)| k == name).expect(name).1
}

/// tracing caches each callsite's interest process-wide, and a test that swaps its thread's
/// subscriber while another does the same can see that cache rebuilt under it (events then go
/// unrecorded). The tests that record events take turns.
static TRACING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn get() -> Request<Full<Bytes>> {
    Request::get("/").body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test(start_paused = true)]
async fn resends_are_traced_with_their_resend_count() {
    let _turn = TRACING.lock().await;
    let events = Events::default();
    let _guard = tracing::subscriber::set_default(events.clone());
    let script = Script::new([Reply::Status(503), Reply::Status(503)]);
    let policy = RetryPolicy::builder()
        .backoff(
            Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1))
                .with_jitter(Jitter::None),
        )
        .no_budget()
        .build()
        .unwrap();
    Retry::new(script.service(), policy)
        .oneshot(get())
        .await
        .unwrap();
    let counts: Vec<String> = events
        .with("http.request.resend_count")
        .iter()
        .map(|fields| value(fields, "http.request.resend_count").to_owned())
        .collect();
    assert_eq!(counts, ["1", "2"]);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_is_logged_with_its_reason() {
    let _turn = TRACING.lock().await;
    let events = Events::default();
    let _guard = tracing::subscriber::set_default(events.clone());
    let script = Script::new([Reply::Status(503)]);
    let budget = RetryBudget::builder()
        .min_per_second(0)
        .retry_ratio(0.0)
        .build()
        .unwrap();
    let policy = RetryPolicy::builder().budget(budget).build().unwrap();
    Retry::new(script.service(), policy)
        .oneshot(get())
        .await
        .unwrap();
    let stops = events.with("reason");
    assert_eq!(stops.len(), 1);
    assert_eq!(value(&stops[0], "reason"), "\"budget_exhausted\"");
    assert_eq!(value(&stops[0], "outcome"), "\"server_error\"");
    assert_eq!(value(&stops[0], "attempts"), "1");
}

#[cfg(feature = "metrics")]
mod counters {
    use tollway_test_support::metrics::CapturingRecorder;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn attempts_retries_and_give_ups_are_counted() {
        let _turn = super::TRACING.lock().await;
        let recorder = CapturingRecorder::new();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let script = Script::new([Reply::Status(503); 5]);
        let policy = RetryPolicy::builder()
            .max_attempts(3)
            .backoff(Backoff::exponential(
                Duration::from_millis(10),
                Duration::from_secs(1),
            ))
            .no_budget()
            .build()
            .unwrap();
        Retry::new(script.service(), policy)
            .oneshot(get())
            .await
            .unwrap();
        assert_eq!(recorder.counter("tollway_retry_attempts_total"), 3);
        assert_eq!(recorder.counter("tollway_retry_retries_total"), 2);
        assert_eq!(
            recorder.counter("tollway_retry_give_ups_total{reason=max_attempts}"),
            1
        );
    }
}
