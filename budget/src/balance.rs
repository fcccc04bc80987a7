//! Reading the upstream's real balance.

use serde_json::Value;

use crate::error::BalanceParseError;
use crate::ledger::Ledger;

/// The body of a balance endpoint such as `GET /sys/balance`:
/// `{"rate": 11, "amount": 1000}`.
///
/// Poll it now and then and feed it to the ledger with [`sync`](Self::sync), so the ledger's idea
/// of what is left follows the account, even when other clients spend from it.
///
/// ```
/// use tollway_budget::{Balance, Ledger, Window};
///
/// let ledger = Ledger::new(5_000, Window::day());
/// let balance = Balance::parse(br#"{"rate": 11, "amount": 250}"#).unwrap();
/// assert_eq!(balance.rate(), Some(11));
/// balance.sync(&ledger);
/// assert_eq!(ledger.remaining(), 250);
/// assert!(Balance::parse(br#"{"amount": "lots"}"#).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    amount: u64,
    rate: Option<u64>,
}

impl Balance {
    /// Parses a JSON object with a non-negative numeric `amount` (fractions are rounded down) and
    /// an optional numeric `rate`.
    ///
    /// # Errors
    ///
    /// If the body is not JSON, not an object, or has no usable `amount`.
    pub fn parse(body: &[u8]) -> Result<Self, BalanceParseError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| BalanceParseError::new(format!("not JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| BalanceParseError::new("not a JSON object"))?;
        let amount = object
            .get("amount")
            .and_then(non_negative)
            .ok_or_else(|| BalanceParseError::new("no non-negative numeric `amount`"))?;
        let rate = object.get("rate").and_then(non_negative);
        Ok(Self { amount, rate })
    }

    /// Credits left on the account.
    pub const fn amount(&self) -> u64 {
        self.amount
    }

    /// The account's request rate, if the body said.
    pub const fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Feeds the amount to `ledger` ([`Ledger::sync_balance`]).
    pub fn sync(&self, ledger: &Ledger) {
        ledger.sync_balance(self.amount);
    }
}

fn non_negative(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}
