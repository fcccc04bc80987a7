use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tollway_core::FakeClock;

use super::super::key::Global;
use super::*;

fn ip(i: u32) -> Key {
    Key::Ip(IpAddr::V4(Ipv4Addr::from_bits(i)))
}

fn head() -> http::request::Parts {
    http::Request::get("/").body(()).unwrap().into_parts().0
}

/// When no key is idle (time stands still), a new key still finds room: the bound holds.
#[test]
fn the_bound_holds_when_nothing_is_idle() {
    let clock = FakeClock::new();
    let quota = Quota::per_second(1_000).burst(1);
    let limits = Limits::build(
        vec![Limit::new("ip", Global, quota)],
        NonZeroUsize::new(1_000).unwrap(),
        &clock,
    )
    .unwrap();
    let keyed = &limits.entries[0].keyed;
    for i in 0..100_000 {
        assert!(keyed.try_acquire(&ip(i), 1).is_ok());
    }
    assert!(limits.tracked_keys() <= keyed.key_bound());
    assert!(
        limits.tracked_keys() >= 900,
        "evicts one key at a time, not whole shards"
    );
    assert!(limits.memory_used() <= limits.memory_bound());
}

/// Finding: each key extractor ran up to three times per refusal. Once per request now.
#[test]
fn each_key_extractor_runs_once_per_request() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let counting = |_: &RequestHead<'_>| {
        CALLS.fetch_add(1, Relaxed);
        Some(Key::from("k"))
    };
    let clock = FakeClock::new();
    let limits = Limits::build(
        vec![
            Limit::new("global", Global, Quota::per_hour(1).burst(1)),
            Limit::new("key", counting, Quota::per_hour(1).burst(1)),
        ],
        NonZeroUsize::new(100).unwrap(),
        &clock,
    )
    .unwrap();
    let parts = head();
    let head = RequestHead::from(&parts);
    assert!(limits.check(&head, true, &mut States::default()).is_none());
    assert!(limits.check(&head, true, &mut States::default()).is_some());
    assert_eq!(CALLS.load(Relaxed), 2);
}

/// Finding: the limits were taken in turn and "refunded" by subtracting an interval, which
/// erased a permit another request took in between. Here that other request arrives from
/// inside a slow key extractor, after the global limit was passed: the global 1/s burst-1
/// limit must still admit one request at 2.5 s, not two.
#[test]
fn a_slow_extractor_cannot_open_a_second_slot_on_another_limit() {
    use std::sync::{Arc, OnceLock};
    let clock = FakeClock::new();
    let limits_cell: Arc<OnceLock<Limits<FakeClock>>> = Arc::new(OnceLock::new());
    // Armed for A only: 1 while armed, 2 once B went through.
    let reentered = Arc::new(AtomicUsize::new(0));
    let (cell, re, c) = (
        Arc::clone(&limits_cell),
        Arc::clone(&reentered),
        clock.clone(),
    );
    let slow = move |head: &RequestHead<'_>| {
        let key = head.headers.get("x-key")?.to_str().ok()?.to_owned();
        if key == "spent" && re.compare_exchange(1, 2, Relaxed, Relaxed).is_ok() {
            // While this request is being checked, time passes and another one arrives.
            c.advance(Duration::from_millis(1_500));
            let parts = http::Request::get("/")
                .header("x-key", "fresh")
                .body(())
                .unwrap();
            let (parts, ()) = parts.into_parts();
            let admitted =
                cell.get()?
                    .check(&RequestHead::from(&parts), false, &mut States::default());
            assert!(admitted.is_none(), "B is admitted");
        }
        Some(Key::from(key))
    };
    let limits = Limits::build(
        vec![
            Limit::new("global", Global, Quota::per_second(1).burst(1)),
            Limit::new("key", slow, Quota::per_hour(1).burst(1)),
        ],
        NonZeroUsize::new(100).unwrap(),
        &clock,
    )
    .unwrap();
    let limits = limits_cell.get_or_init(|| limits);
    let request = |key: &str| {
        let (parts, ()) = http::Request::get("/")
            .header("x-key", key)
            .body(())
            .unwrap()
            .into_parts();
        parts
    };
    // Spend the key "spent" (and the global slot at t=0), then wait for the global one.
    assert!(
        limits
            .check(
                &RequestHead::from(&request("spent")),
                false,
                &mut States::default()
            )
            .is_none()
    );
    clock.advance(Duration::from_secs(1));
    reentered.store(1, Relaxed);
    // A at 1 s: refused by its key; meanwhile B (key "fresh") takes the global slot at 2.5 s.
    let a = limits.check(
        &RequestHead::from(&request("spent")),
        false,
        &mut States::default(),
    );
    assert!(a.is_some());
    assert_eq!(reentered.load(Relaxed), 2);
    // C at 2.5 s: the global slot is B's.
    let c = limits.check(
        &RequestHead::from(&request("other")),
        false,
        &mut States::default(),
    );
    assert!(c.is_some(), "two requests admitted at once on a burst of 1");
}
