//! State changes: trips, closes and the generation-tagged deadlines they install, announced
//! to logs, metrics and the user's callback.

use std::time::Duration;

use super::Circuit;
use crate::event::{Mode, Reason, State, StateChange};
use crate::sync::{AtomicU64, Ordering};
use crate::word::Word;

impl Circuit {
    /// Opens the breaker from `from`; returns how long it stays open, or the word that won.
    pub(super) fn trip(
        &self,
        from: Word,
        reason: Reason,
        hint: Option<Duration>,
        now: u64,
    ) -> Result<Duration, Word> {
        let to = Word::new(State::Open, Mode::Normal, from.next_generation());
        self.cas(from, to)?;
        let trips = self.trips.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let mut open_for = self.config.open_duration.for_trip(trips, &self.config.rng);
        if let (Some(cap), Some(hint)) = (self.config.honor_retry_after, hint) {
            // The upstream may ask for longer, never for shorter: a `Retry-After: 1` on every
            // 503 must not defeat the growing open duration.
            open_for = open_for.max(hint.min(cap));
        }
        let micros = u64::try_from(open_for.as_micros()).unwrap_or(MICROS_MASK);
        self.install_deadline(
            &self.open_until,
            to.generation(),
            now.saturating_add(micros),
        );
        tracing::warn!(
            breaker = %self.config.name,
            reason = reason.as_str(),
            open_for_ms = open_for.as_millis() as u64,
            trips,
            "circuit breaker opened"
        );
        self.announce(from, to, reason);
        Ok(open_for)
    }

    /// Closes the breaker from `from` (and, if `forget_trips`, forgets the trip count that grows
    /// the open duration). The new generation's counts start empty by themselves.
    pub(super) fn close(&self, from: Word, reason: Reason, forget_trips: bool) -> Result<(), Word> {
        let to = Word::new(State::Closed, Mode::Normal, from.next_generation());
        self.cas(from, to)?;
        if forget_trips {
            self.trips.store(0, Ordering::Relaxed);
        }
        self.announce(from, to, reason);
        Ok(())
    }

    pub(super) fn set_probe_deadline(&self, generation: u64, now: u64) {
        let micros = u64::try_from(self.config.probe_timeout.as_micros()).unwrap_or(MICROS_MASK);
        self.install_deadline(&self.probe_deadline, generation, now.saturating_add(micros));
    }

    /// Stores `micros` as the deadline of `generation` in `slot`, by compare-and-swap, and only
    /// while `generation` is the breaker's current one; a later deadline of the same generation
    /// is kept. The slot is read before the word each round, so a newer generation's deadline
    /// that is already in the slot is seen as newer and never overwritten.
    pub(super) fn install_deadline(&self, slot: &AtomicU64, generation: u64, micros: u64) {
        let new = pack_deadline(generation, micros);
        let mut current = slot.load(Ordering::Acquire);
        loop {
            if self.word().generation() != generation {
                return;
            }
            if current >> TAG_SHIFT == new >> TAG_SHIFT && current >= new {
                return;
            }
            match slot.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    pub(super) fn announce(&self, from: Word, to: Word, reason: Reason) {
        if to.state() != State::Open || reason == Reason::Manual {
            tracing::info!(
                breaker = %self.config.name,
                from = from.state().as_str(),
                to = to.state().as_str(),
                mode = ?to.mode(),
                reason = reason.as_str(),
                generation = to.generation(),
                "circuit breaker state changed"
            );
        }
        if from.state() != to.state() {
            self.metrics.transition(from.state(), to.state());
        }
        if let Some(callback) = &self.config.on_state_change {
            callback(&StateChange {
                breaker: self.config.name.clone(),
                from: from.state(),
                to: to.state(),
                mode: to.mode(),
                reason,
                generation: to.generation(),
            });
        }
    }
}

/// Deadlines are microseconds since the breaker was made (56 bits: 2,284 years) under an 8-bit
/// generation tag: enough to tell the deadline of the current generation from the one before.
pub(super) const TAG_SHIFT: u32 = 56;
pub(super) const TAG_MASK: u64 = 0xFF;
pub(super) const MICROS_MASK: u64 = (1 << TAG_SHIFT) - 1;

pub(super) const fn pack_deadline(generation: u64, micros: u64) -> u64 {
    let micros = if micros < MICROS_MASK {
        micros
    } else {
        MICROS_MASK
    };
    ((generation & TAG_MASK) << TAG_SHIFT) | micros
}

pub(super) fn read_deadline(slot: &AtomicU64, generation: u64) -> Option<u64> {
    let value = slot.load(Ordering::Acquire);
    (value >> TAG_SHIFT == generation & TAG_MASK).then_some(value & MICROS_MASK)
}
