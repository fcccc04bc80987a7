//! Rate limits decided somewhere else than in this process's key maps: a fleet's store. The
//! layer asks it once per request, with every limit's key, and waits for the answer before it
//! calls the inner service (the in-memory path never comes here).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tollway_core::StoreUnavailable;

use super::key::Key;
use super::limits::{Limit, Limits, Refusal};
use super::states::States;
use crate::clock::LimiterClock;

/// What a shared store decided for one request.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum RemoteDecision {
    /// Decided (by the store, or by the local fallback of limits that fail open): admitted
    /// (`None`) or refused, and each applicable policy's state for the headers.
    Decided(Option<Refusal>, States),
    /// The store is unavailable and a limit that applies fails closed.
    Unavailable(StoreUnavailable),
}

pub(crate) type Deciding = Pin<Box<dyn Future<Output = RemoteDecision> + Send>>;

/// Decides the rate limits of a request from each limit's key (`None`: does not apply).
pub(crate) trait RemoteLimits: Send + Sync + 'static {
    fn decide(self: Arc<Self>, keys: Vec<Option<Key>>, want_state: bool) -> Deciding;
}

/// The limits checked in this process while the store is down (those that fail open, at their
/// local quota).
pub(crate) trait LocalCheck: Send + Sync + 'static {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn check_keys(
        &self,
        keys: &[Option<Key>],
        want_state: bool,
        states: &mut States,
    ) -> Option<Refusal>;
}

impl<C: LimiterClock> LocalCheck for Limits<C> {
    fn check_keys(
        &self,
        keys: &[Option<Key>],
        want_state: bool,
        states: &mut States,
    ) -> Option<Refusal> {
        Limits::check_keys(self, keys, want_state, states)
    }
}

/// One limit as a store checks it.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Spec {
    pub(crate) first_policy: usize,
    /// Each quota's interval (microseconds, rounded up) and burst.
    pub(crate) quotas: Vec<(u64, u64)>,
    pub(crate) fails_open: bool,
}

/// Builds a store's limits from the layer's, and its local fallback.
pub(crate) type Connect =
    Box<dyn FnOnce(Vec<Spec>, Box<dyn LocalCheck>) -> Arc<dyn RemoteLimits> + Send + Sync>;

/// The layer's limits as a store checks them, in order.
pub(crate) fn specs(limits: &[Limit]) -> Vec<Spec> {
    let mut first_policy = 0;
    limits
        .iter()
        .map(|limit| {
            let spec = Spec {
                first_policy,
                quotas: limit
                    .quotas
                    .iter()
                    .map(|(_, q)| {
                        (
                            q.interval_nanos().div_ceil(1_000).max(1),
                            u64::from(q.burst()),
                        )
                    })
                    .collect(),
                fails_open: limit.fail_open.is_some(),
            };
            first_policy += limit.quotas.len();
            spec
        })
        .collect()
}

/// The layer's limits with those that fail open at their local quota (the others unchanged:
/// they are never checked locally).
pub(crate) fn local_limits(limits: &[Limit]) -> Vec<Limit> {
    limits
        .iter()
        .map(|limit| {
            let mut local = limit.clone();
            if let Some(quota) = limit.fail_open {
                for (_, q) in &mut local.quotas {
                    *q = quota;
                }
            }
            local
        })
        .collect()
}
