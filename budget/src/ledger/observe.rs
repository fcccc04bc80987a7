//! What a ledger tells its logs and metrics.

use std::time::Duration;

use tollway_core::{BudgetExhausted, ExhaustedReason};

use super::Ledger;
use crate::error::ReserveError;
use crate::priority::Priority;
use crate::store::{Finish, Grant, Store};

impl<St: Store> Ledger<St> {
    /// A refusal: logged, counted, typed.
    pub(crate) fn reject(
        &self,
        reason: ExhaustedReason,
        retry_after: Option<Duration>,
        cost: u64,
        priority: Priority,
    ) -> ReserveError {
        tracing::debug!(
            ledger = %self.shared.name,
            %reason,
            cost,
            priority = priority.as_str(),
            ?retry_after,
            "budget refused a request"
        );
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "tollway_budget_rejected_total",
            "ledger" => self.label(),
            "reason" => reason_label(reason),
        )
        .increment(1);
        ReserveError::Exhausted(BudgetExhausted::new(reason, retry_after))
    }

    /// Counts what a settle or refund gives back or charges.
    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    #[inline]
    pub(crate) fn count_finish(&self, grant: &Grant, finish: &Finish) {
        #[cfg(feature = "metrics")]
        match finish.charge {
            Some(charge) => metrics::counter!(
                "tollway_budget_charged_credits_total",
                "ledger" => self.label(),
            )
            .increment(charge),
            None => metrics::counter!(
                "tollway_budget_refunded_credits_total",
                "ledger" => self.label(),
            )
            .increment(grant.cost()),
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (grant, finish);
    }

    #[cfg(feature = "metrics")]
    fn label(&self) -> metrics::SharedString {
        metrics::SharedString::from(std::sync::Arc::clone(&self.shared.name))
    }
}

#[cfg(feature = "metrics")]
fn reason_label(reason: ExhaustedReason) -> &'static str {
    match reason {
        ExhaustedReason::Window => "window",
        ExhaustedReason::CriticalReserve => "critical_reserve",
        ExhaustedReason::Upstream402 => "upstream_402",
        _ => "other",
    }
}
