//! The simulator's shared state: its balance, its per-key windows and slots, and its record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::config::UpstreamBuilder;
use super::limits::{Admission, KeyLimit, Rejection, WindowKind};
use super::stats::Stats;
use super::window::SlidingWindow;

/// The length of the window the record measures in.
const WINDOW: Duration = Duration::from_secs(1);

/// Everything the handlers share: the fixed configuration and the mutable record.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: UpstreamBuilder,
    /// The window kind, its defaults filled in.
    window: WindowKind,
    /// Requests per second per key now (the plan can change at runtime).
    rate: AtomicU32,
    started: Instant,
    /// The wall-clock time at `started`, since the unix epoch (fixed windows align to it).
    started_unix: Duration,
    inner: Mutex<Inner>,
    /// Answers spoilt by the hostile mode so far.
    spoilt: std::sync::atomic::AtomicU64,
}

/// One access key's rate limit, its record, and its requests in progress.
#[derive(Debug)]
struct KeyState {
    limit: KeyLimit,
    /// Every admitted request, for the record (whatever the window kind).
    measured: SlidingWindow,
    in_progress: u32,
}

impl KeyState {
    fn new(window: WindowKind, now: Instant) -> Self {
        Self {
            limit: KeyLimit::new(window, now),
            measured: SlidingWindow::new(WINDOW),
            in_progress: 0,
        }
    }
}

#[derive(Debug)]
struct Inner {
    credits_left: u64,
    credits_charged: u64,
    requests: u64,
    by_status: BTreeMap<u16, u64>,
    keys: HashMap<String, KeyState>,
    all_keys: SlidingWindow,
    admitted: u64,
    in_flight: u64,
    max_in_flight: u64,
    served_pages: HashSet<(String, u32)>,
    duplicate_page_fetches: u64,
}

/// A followers request let through the rate limit.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// Its place among admitted followers requests, counting from 1.
    pub(crate) seq: u64,
    pub(crate) admission: Admission,
    /// Its concurrency slot, given back on drop.
    pub(crate) _slot: SlotGuard,
}

/// Why a followers request was turned away before being worked on.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The key's rate window was full.
    RateLimited(Rejection),
    /// The key had as many requests in progress as its limit allows; the request did enter the
    /// rate window.
    Concurrency(Admission),
}

/// Why a page could not be charged for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InsufficientBalance;

impl Shared {
    pub(crate) fn new(config: UpstreamBuilder) -> Self {
        let started = Instant::now();
        let window = config.resolved_window();
        let keys = config
            .keys()
            .map(|key| (key.to_owned(), KeyState::new(window, started)))
            .collect();
        let inner = Inner {
            credits_left: config.credits,
            credits_charged: 0,
            requests: 0,
            by_status: BTreeMap::new(),
            keys,
            all_keys: SlidingWindow::new(WINDOW),
            admitted: 0,
            in_flight: 0,
            max_in_flight: 0,
            served_pages: HashSet::new(),
            duplicate_page_fetches: 0,
        };
        Self {
            rate: AtomicU32::new(config.rate),
            window,
            config,
            started,
            started_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
            inner: Mutex::new(inner),
            spoilt: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Requests per second per key now.
    pub(crate) fn rate(&self) -> u32 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Changes the rate from now on (a new plan); windows keep what they counted.
    pub(crate) fn set_rate(&self, rate: u32) {
        self.rate.store(rate.max(1), Ordering::Relaxed);
    }

    /// The window kind, its defaults filled in.
    pub(crate) fn window(&self) -> WindowKind {
        self.window
    }

    /// If an outage is under way, how long until it ends.
    pub(crate) fn outage_remaining(&self) -> Option<Duration> {
        let elapsed = self.started.elapsed();
        self.config
            .outages
            .iter()
            .filter_map(|outage| outage.remaining(elapsed))
            .max()
    }

    /// Claims one answer for the hostile mode: its 0-based rank among spoilt answers, or `None`
    /// when there is no mode or it has spoilt its count.
    pub(crate) fn take_hostile(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        self.config.hostile?;
        let limit = self.config.hostile_count;
        self.spoilt
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
    }

    /// Counts a request to the API.
    pub(crate) fn count_request(&self) {
        self.inner.lock().requests += 1;
    }

    /// Records the status a request to the API was answered with.
    pub(crate) fn record_status(&self, status: StatusCode) {
        *self
            .inner
            .lock()
            .by_status
            .entry(status.as_u16())
            .or_default() += 1;
    }

    /// Marks a followers request as in flight until the guard drops.
    pub(crate) fn enter_flight(self: &Arc<Self>) -> FlightGuard {
        let mut inner = self.inner.lock();
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
        FlightGuard(Arc::clone(self))
    }

    /// Puts a followers request of `key` through the rate limit, then the
    /// concurrency limit.
    pub(crate) fn admit(self: &Arc<Self>, key: &str) -> Result<Admitted, Refused> {
        let mut inner = self.inner.lock();
        // Read the clock under the lock so that arrivals are recorded in order.
        let now = Instant::now();
        let inner = &mut *inner;
        let unix = self.started_unix + now.saturating_duration_since(self.started);
        let state = inner
            .keys
            .entry(key.to_owned())
            .or_insert_with(|| KeyState::new(self.window, now));
        let admission = state
            .limit
            .try_admit(self.window, now, unix, self.rate())
            .map_err(Refused::RateLimited)?;
        state.measured.record(now);
        inner.all_keys.record(now);
        inner.admitted += 1;
        if let Some(limit) = self.config.concurrency_limit
            && state.in_progress >= limit
        {
            return Err(Refused::Concurrency(admission));
        }
        state.in_progress += 1;
        Ok(Admitted {
            seq: inner.admitted,
            admission,
            _slot: SlotGuard {
                shared: Arc::clone(self),
                key: key.to_owned(),
            },
        })
    }

    /// Takes one credit for serving page `page` of `user_id`, or refuses if none is left.
    pub(crate) fn charge(&self, user_id: &str, page: u32) -> Result<(), InsufficientBalance> {
        let mut inner = self.inner.lock();
        if inner.credits_left == 0 {
            return Err(InsufficientBalance);
        }
        inner.credits_left -= 1;
        inner.credits_charged += 1;
        if !inner.served_pages.insert((user_id.to_owned(), page)) {
            inner.duplicate_page_fetches += 1;
        }
        Ok(())
    }

    pub(crate) fn credits_left(&self) -> u64 {
        self.inner.lock().credits_left
    }

    pub(crate) fn stats(&self) -> Stats {
        let inner = self.inner.lock();
        Stats {
            requests: inner.requests,
            by_status: inner
                .by_status
                .iter()
                .map(|(status, count)| (status.to_string(), *count))
                .collect(),
            credits_charged: inner.credits_charged,
            credits_left: inner.credits_left,
            max_in_any_1s_window: inner
                .keys
                .values()
                .map(|state| state.measured.max_len())
                .max()
                .unwrap_or(0),
            max_in_any_1s_window_all_keys: inner.all_keys.max_len(),
            max_in_flight: inner.max_in_flight,
            duplicate_page_fetches: inner.duplicate_page_fetches,
        }
    }
}

/// A followers request in flight; dropping it lands it (also when the client goes away).
#[derive(Debug)]
pub(crate) struct FlightGuard(Arc<Shared>);

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.0.inner.lock().in_flight -= 1;
    }
}

/// A followers request's concurrency slot; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct SlotGuard {
    shared: Arc<Shared>,
    key: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(state) = self.shared.inner.lock().keys.get_mut(&self.key) {
            state.in_progress -= 1;
        }
    }
}
