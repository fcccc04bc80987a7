//! The ledger's arithmetic, for the stores that keep it in this process (memory and file):
//! windows, reservations, the critical reserve, the 402 latch and the upstream balance.
//!
//! Every method runs under the store's lock and decides in one step: a check and the write it
//! allows are never split, so no other caller can slip in between them.

use tollway_core::ExhaustedReason;

use super::backend::{Decision, Finish, Grant};
use crate::snapshot::{Snapshot, WindowUsage};
use crate::window::{Window, WindowState, millis_to_duration};

/// One ledger's state.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) windows: Vec<WindowState>,
    pub(crate) reserved: u64,
    pub(crate) balance: Option<u64>,
    pub(crate) latch: Option<Latch>,
    /// The id of the next reservation; ids only grow, so they order grants against a latch.
    pub(crate) next_id: u64,
}

/// A 402 latch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Latch {
    /// When the latch lifts by itself (the first window rollover after it was set).
    pub(crate) until: Option<i64>,
    /// The first reservation id granted after the latch was set: balances read by requests with
    /// a lower id were read before the 402 and never lift it.
    pub(crate) after: u64,
}

/// What a [`State::finish`] changed, for the journal and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The balance that was synced, if the response's balance was fresh enough to count.
    pub(crate) synced: Option<u64>,
    /// The latch set by this response (its end, if it has one).
    pub(crate) latched: Option<Option<i64>>,
}

impl State {
    pub(crate) fn new(limits: &[(u64, Window)], balance: Option<u64>, now: i64) -> Self {
        Self {
            windows: limits
                .iter()
                .map(|&(limit, window)| WindowState::new(limit, window, now))
                .collect(),
            reserved: 0,
            balance,
            latch: None,
            next_id: 1,
        }
    }

    /// Brings every window to `now` and lifts a latch whose time has come.
    #[inline]
    pub(crate) fn roll(&mut self, now: i64) {
        for window in &mut self.windows {
            window.roll(now);
        }
        if let Some(Latch {
            until: Some(until), ..
        }) = self.latch
            && now >= until
        {
            tracing::info!("budget 402 latch lifted: the window rolled over");
            self.latch = None;
        }
    }

    /// Grants `cost` if every limit and the balance leave `cost + floor`, or says why not.
    pub(crate) fn decide(&mut self, cost: u64, floor: u64, now: i64) -> Decision {
        self.roll(now);
        if let Some(latch) = self.latch {
            let retry = latch.until.map(|u| millis_to_duration(u - now));
            return Decision::Refused(ExhaustedReason::Upstream402, retry);
        }
        let (left, reason, binding) = self.headroom();
        let needed = cost.saturating_add(floor);
        if left < needed {
            let reason = if left < cost {
                reason
            } else {
                ExhaustedReason::CriticalReserve
            };
            let retry = binding
                .and_then(|i| self.windows[i].free_in(needed - left, now))
                .map(millis_to_duration);
            return Decision::Refused(reason, retry);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.reserved = self.reserved.saturating_add(cost);
        Decision::Granted(Grant::new(id, cost, id))
    }

    /// Settles or refunds `grant` and applies what its response said, in one step: a 402's
    /// latch is set before any other caller can reserve.
    pub(crate) fn finish(&mut self, grant: &Grant, finish: &Finish, now: i64) -> Applied {
        self.roll(now);
        self.reserved = self.reserved.saturating_sub(grant.cost());
        if let Some(charge) = finish.charge {
            self.charge(charge, now, now);
        }
        let mut applied = Applied::default();
        if let Some(balance) = finish.balance {
            // A balance read before the latch was set says nothing about the account after
            // the 402: it must not lift it.
            let stale = self.latch.is_some_and(|l| grant.stamp() < l.after);
            if !stale {
                self.sync(balance);
                applied.synced = Some(balance);
            }
        }
        if finish.latch {
            applied.latched = Some(self.set_latch(now));
        }
        applied
    }

    /// Counts `amount` charged at `at` against every window and the balance.
    pub(crate) fn charge(&mut self, amount: u64, at: i64, now: i64) {
        for window in &mut self.windows {
            window.add(amount, at, now);
        }
        if let Some(balance) = &mut self.balance {
            *balance = balance.saturating_sub(amount);
        }
    }

    /// Latches until the earliest window rollover; returns that time.
    pub(crate) fn set_latch(&mut self, now: i64) -> Option<i64> {
        self.roll(now);
        let until = self.windows.iter().filter_map(|w| w.rollover_at(now)).min();
        self.latch = Some(Latch {
            until,
            after: self.next_id,
        });
        until
    }

    /// The upstream balance, read after anything this ledger knows: lifts the latch above zero.
    pub(crate) fn sync(&mut self, balance: u64) {
        self.balance = Some(balance);
        if balance > 0 {
            self.latch = None;
        }
    }

    /// Credit left for new reservations across every limit and the balance, with the reason
    /// that binds and the window that does.
    pub(crate) fn headroom(&self) -> (u64, ExhaustedReason, Option<usize>) {
        let mut best = (u64::MAX, ExhaustedReason::Window, None);
        for (i, window) in self.windows.iter().enumerate() {
            let left = window.remaining(self.reserved);
            if left < best.0 {
                best = (left, ExhaustedReason::Window, Some(i));
            }
        }
        if let Some(balance) = self.balance {
            let left = balance.saturating_sub(self.reserved);
            if left < best.0 {
                best = (left, ExhaustedReason::Upstream402, None);
            }
        }
        best
    }

    /// What a normal request could reserve now, ignoring reserves; 0 while latched.
    pub(crate) fn remaining(&mut self, now: i64) -> u64 {
        self.roll(now);
        if self.latch.is_some() {
            0
        } else {
            self.headroom().0
        }
    }

    pub(crate) fn snapshot(&mut self, now: i64) -> Snapshot {
        let remaining = self.remaining(now);
        Snapshot {
            windows: self
                .windows
                .iter()
                .map(|w| WindowUsage {
                    window: w.window,
                    limit: w.limit,
                    spent: w.spent,
                    remaining: w.remaining(self.reserved),
                    resets_in: w.resets_in_duration(now),
                })
                .collect(),
            reserved: self.reserved,
            balance: self.balance,
            latched: self.latch.is_some(),
            latched_for: self
                .latch
                .and_then(|l| l.until)
                .map(|u| millis_to_duration(u - now)),
            remaining,
            critical_reserve: 0,
            epoch: None,
        }
    }

    /// Sets the `tollway_budget_*` gauges of the ledger called `name`.
    #[cfg(feature = "metrics")]
    pub(crate) fn record_gauges(&self, name: &std::sync::Arc<str>) {
        let label = || metrics::SharedString::from(std::sync::Arc::clone(name));
        metrics::gauge!("tollway_budget_reserved_credits", "ledger" => label())
            .set(self.reserved as f64);
        let left = if self.latch.is_some() {
            0
        } else {
            self.headroom().0
        };
        if left != u64::MAX {
            metrics::gauge!("tollway_budget_remaining_credits", "ledger" => label())
                .set(left as f64);
        }
        if let Some(first) = self.windows.first() {
            metrics::gauge!("tollway_budget_spent_credits", "ledger" => label())
                .set(first.spent as f64);
        }
        metrics::gauge!("tollway_budget_latched", "ledger" => label())
            .set(if self.latch.is_some() { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(decision: Decision) -> Grant {
        match decision {
            Decision::Granted(grant) => grant,
            Decision::Refused(reason, _) => panic!("refused: {reason}"),
        }
    }

    #[test]
    fn a_balance_read_before_the_402_never_lifts_its_latch() {
        let mut state = State::new(&[(100, Window::lifetime())], None, 0);
        let early = granted(state.decide(1, 0, 0));
        let late_402 = granted(state.decide(1, 0, 0));
        // The 402 arrives first and latches.
        state.finish(&late_402, &Finish::response(0, None, true), 1);
        assert!(state.latch.is_some());
        // A response sent before the 402 claims credit is left: stale, ignored.
        let applied = state.finish(&early, &Finish::response(1, Some(500), false), 2);
        assert_eq!(applied.synced, None);
        assert!(state.latch.is_some());
        assert!(matches!(state.decide(1, 0, 3), Decision::Refused(..)));
        // A balance read after the 402 (an explicit sync) lifts it.
        state.sync(40);
        assert!(state.latch.is_none());
        assert!(matches!(state.decide(1, 0, 4), Decision::Granted(_)));
    }

    #[test]
    fn a_402_latches_in_the_same_step_as_its_refund() {
        let mut state = State::new(&[(2, Window::lifetime())], None, 0);
        let a = granted(state.decide(1, 0, 0));
        let _b = granted(state.decide(1, 0, 0));
        assert!(matches!(state.decide(1, 0, 0), Decision::Refused(..)));
        // The refund of the 402 frees a credit, but the latch is set in the same call: there is
        // no moment in which the freed credit can be reserved.
        let applied = state.finish(&a, &Finish::response(0, None, true), 1);
        assert_eq!(applied.latched, Some(None));
        assert_eq!(state.reserved, 1);
        assert!(matches!(
            state.decide(1, 0, 1),
            Decision::Refused(ExhaustedReason::Upstream402, None)
        ));
    }
}
