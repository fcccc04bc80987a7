//! Request coalescing: one upstream request per key at a time, shared with everyone waiting.
//!
//! The first caller for a key becomes the leader and holds a [`Flight`]; later callers wait on
//! it. The leader publishes what it got (a response to serve to everyone), or tells the waiters
//! the response cannot be shared (a good answer that must not be stored: each sends its own at
//! once), or drops the flight without publishing (an error, a failed response such as a 503,
//! 429 or 402, a response the application rejected, or its future was cancelled); then the
//! waiters wake with nothing and race to lead the next attempt, so exactly one of them takes
//! over and the rest keep waiting (moka's `get_with` semantics). Failures are never shared or
//! stored, and never send every waiter upstream at once.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::entry::StoredResponse;
use crate::key::{CacheKey, KeyMap};
use crate::status::CacheStatus;

/// What a leader hands its waiters: the response and how it was obtained, or word that the
/// response cannot be shared (not cacheable, or too large), so each waiter sends its own
/// request at once instead of queueing behind one another.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    pub(crate) entry: Option<Arc<StoredResponse>>,
    /// `Miss` (fresh from upstream), `Revalidated`, `Hit` (read from disk) or `Stale`.
    pub(crate) how: CacheStatus,
}

type Slot = watch::Receiver<Option<Published>>;

/// The flights in progress, by key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    in_flight: Mutex<KeyMap<Slot>>,
}

/// A caller's role for one key.
#[derive(Debug)]
pub(crate) enum Role {
    /// Go and get it; publish through the flight.
    Leader(Flight),
    /// Someone is getting it: wait.
    Waiter(Slot),
}

impl Flights {
    /// Joins the flight for `key`, or starts one.
    pub(crate) fn join(self: &Arc<Self>, key: CacheKey) -> Role {
        let mut in_flight = self.in_flight.lock();
        if let Some(slot) = in_flight.get(&key) {
            // A closed channel is a leader that is gone; its guard removes it, but a new
            // caller can arrive between the drop of the sender and that removal.
            if slot.has_changed().is_ok() {
                return Role::Waiter(slot.clone());
            }
        }
        let (sender, receiver) = watch::channel(None);
        in_flight.insert(key, receiver);
        Role::Leader(Flight {
            key,
            sender,
            flights: Arc::clone(self),
        })
    }

    /// How many keys have a flight in progress.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.in_flight.lock().len()
    }
}

/// Waits for the leader: `Some` with what it published, `None` if it gave up.
pub(crate) async fn wait(mut slot: Slot) -> Option<Published> {
    match slot.wait_for(Option::is_some).await {
        Ok(published) => published.clone(),
        Err(_) => None,
    }
}

/// A leader's hold on a key; dropping it ends the flight.
#[derive(Debug)]
pub(crate) struct Flight {
    key: CacheKey,
    sender: watch::Sender<Option<Published>>,
    flights: Arc<Flights>,
}

impl Flight {
    /// Hands `entry` to every waiter (and ends the flight).
    pub(crate) fn publish(self, entry: &Arc<StoredResponse>, how: CacheStatus) {
        self.sender.send_replace(Some(Published {
            entry: Some(Arc::clone(entry)),
            how,
        }));
    }

    /// Tells every waiter to send its own request: this response cannot be shared.
    pub(crate) fn release_unshareable(self) {
        self.sender.send_replace(Some(Published {
            entry: None,
            how: CacheStatus::Miss,
        }));
    }
}

/// A caller fetching for a key: the leader of a flight, or a caller alone (one that must not
/// share, such as a request that insists on revalidation).
#[derive(Debug)]
pub(crate) struct Lead(Option<Flight>);

impl Lead {
    /// Leads `flight`.
    pub(crate) fn flight(flight: Flight) -> Self {
        Self(Some(flight))
    }

    /// Fetches alone: nobody waits.
    pub(crate) fn alone() -> Self {
        Self(None)
    }

    /// Hands `entry` to the waiters, if any.
    pub(crate) fn publish(self, entry: &Arc<StoredResponse>, how: CacheStatus) {
        if let Some(flight) = self.0 {
            flight.publish(entry, how);
        }
    }

    /// Tells the waiters, if any, to send their own requests at once.
    pub(crate) fn release_unshareable(self) {
        if let Some(flight) = self.0 {
            flight.release_unshareable();
        }
    }

    /// Hands the flight to one waiter (the others wait on): this attempt failed.
    pub(crate) fn hand_over(self) {
        drop(self);
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut in_flight = self.flights.in_flight.lock();
        let ours = in_flight
            .get(&self.key)
            .is_some_and(|slot| slot.same_channel(&self.sender.subscribe()));
        if ours {
            in_flight.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;

    fn entry() -> Arc<StoredResponse> {
        let now = SystemTime::now();
        Arc::new(StoredResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"x"),
            stored_at: now,
            expires_at: now,
            stale_until: now,
            keep_until: now,
        })
    }

    #[tokio::test]
    async fn waiters_get_what_the_leader_publishes() {
        let flights = Arc::new(Flights::default());
        let key = CacheKey::from_bytes([1; 32]);
        let Role::Leader(flight) = flights.join(key) else {
            panic!("first caller leads")
        };
        let Role::Waiter(slot) = flights.join(key) else {
            panic!("second caller waits")
        };
        flight.publish(&entry(), CacheStatus::Miss);
        assert_eq!(flights.len(), 0);
        let got = wait(slot).await.expect("published");
        assert_eq!(got.entry.unwrap().body, Bytes::from_static(b"x"));
        assert!(matches!(flights.join(key), Role::Leader(_)));
    }

    #[tokio::test]
    async fn a_dropped_leader_wakes_waiters_empty_handed() {
        let flights = Arc::new(Flights::default());
        let key = CacheKey::from_bytes([2; 32]);
        let leader = flights.join(key);
        let Role::Waiter(slot) = flights.join(key) else {
            panic!("second caller waits")
        };
        drop(leader);
        assert!(wait(slot).await.is_none());
        assert_eq!(flights.len(), 0);
    }
}
