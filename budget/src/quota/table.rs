//! The quota table: one ledger per key, bounded.
//!
//! Clients choose keys (any API key string, any address), so the table is bounded: at most
//! `max_keys` ledgers, each key at most `max_key_len` bytes (longer ones are refused before they
//! get here). When full, the key that was added first is evicted (its next request starts a
//! fresh quota), in constant time per request: no scan, whatever the flood.

use std::collections::{HashMap, VecDeque};

use super::key::QuotaKey;
use crate::ledger::Ledger;

#[derive(Debug)]
pub(crate) struct Table {
    map: HashMap<QuotaKey, (Ledger, u64)>,
    /// Keys in the order they were added, with the generation they were added at; entries whose
    /// key was forgotten (or re-added since) are stale and skipped.
    order: VecDeque<(QuotaKey, u64)>,
    generation: u64,
    max_keys: usize,
}

impl Table {
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            generation: 0,
            max_keys,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The ledger of `key`, made by `make` if it has none.
    pub(crate) fn get_or_insert(
        &mut self,
        key: &QuotaKey,
        make: impl FnOnce() -> Ledger,
    ) -> Ledger {
        if let Some((ledger, _)) = self.map.get(key) {
            return ledger.clone();
        }
        while self.map.len() >= self.max_keys {
            let Some((oldest, generation)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&oldest).is_some_and(|(_, g)| *g == generation) {
                self.map.remove(&oldest);
                tracing::debug!(key = %oldest, "quota table full: evicted the oldest key");
            }
        }
        self.generation += 1;
        let ledger = make();
        self.map
            .insert(key.clone(), (ledger.clone(), self.generation));
        self.order.push_back((key.clone(), self.generation));
        // Forgotten keys leave stale entries behind: drop them once they outnumber live ones.
        if self.order.len() > 2 * self.max_keys.max(16) {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|(_, live)| live == g));
        }
        ledger
    }

    pub(crate) fn remove(&mut self, key: &QuotaKey) {
        self.map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Window;

    #[test]
    fn a_full_table_evicts_the_oldest_key_and_forgetting_never_evicts_a_live_one() {
        let mut table = Table::new(3);
        let make = || Ledger::new(5, Window::day());
        for key in ["a", "b", "c"] {
            table.get_or_insert(&QuotaKey::from(key), make);
        }
        table.remove(&QuotaKey::from("a"));
        table.get_or_insert(&QuotaKey::from("a"), make); // re-added: the newest now
        table.get_or_insert(&QuotaKey::from("d"), make); // full: "b" goes, not "a"
        assert_eq!(table.len(), 3);
        assert!(table.map.contains_key(&QuotaKey::from("a")));
        assert!(!table.map.contains_key(&QuotaKey::from("b")));
        // A flood of new keys keeps the table at its bound and the bookkeeping small.
        for i in 0..10_000 {
            table.get_or_insert(&QuotaKey::from(format!("flood-{i}")), make);
            assert!(table.len() <= 3);
            assert!(table.order.len() <= 2 * 16 + 1);
        }
    }
}
