//! The completion path: a finished call's result counted into its own generation, and the
//! half-open probes settled.

use std::time::Duration;

use super::{Circuit, Ticket, Verdict};
use crate::event::{Mode, Reason, State};
use crate::window::Totals;

impl Circuit {
    /// Records the result of a call admitted with `ticket` that started at `start`.
    #[inline]
    pub(crate) fn finish(&self, ticket: Ticket, verdict: Verdict, start: u64) {
        let slow = match (start, self.config.slow_call) {
            (1.., Some((threshold, _))) => {
                let took = self.now_micros().saturating_sub(start - 1);
                Duration::from_micros(took) > threshold
            }
            _ => false,
        };
        if ticket != Ticket::Untracked {
            self.metrics.call(match verdict {
                Verdict::Success => Some(false),
                Verdict::Failure { .. } => Some(true),
                Verdict::Ignored => None,
            });
        }
        match ticket {
            Ticket::Closed { generation } => self.finish_closed(generation, verdict, slow),
            Ticket::Probe { generation } => {
                let verdict = match verdict {
                    Verdict::Success if slow => Verdict::Failure { hint: None },
                    other => other,
                };
                self.finish_probe(generation, verdict);
            }
            Ticket::Untracked => {}
        }
    }

    /// A probe that will never report (its future or its service was dropped) gives its permit
    /// back.
    pub(crate) fn cancel_probe(&self, generation: u64) {
        self.finish_probe(generation, Verdict::Ignored);
    }

    /// Records a closed-state result into the counts of its own generation: a result from an
    /// earlier cycle is dropped by the counts themselves, wherever it was delayed.
    #[inline]
    pub(super) fn finish_closed(&self, generation: u64, verdict: Verdict, slow: bool) {
        let (failed, hint) = match verdict {
            Verdict::Success => (false, None),
            Verdict::Failure { hint } => (true, hint),
            Verdict::Ignored => return,
        };
        let Some(in_a_row) = self.consecutive.record(generation, failed) else {
            return;
        };
        let mut reason = self
            .config
            .consecutive_failures
            .is_some_and(|n| failed && in_a_row >= n)
            .then_some(Reason::ConsecutiveFailures);
        if let Some(tally) = &self.tally {
            let now = if tally.needs_time() {
                self.now_micros()
            } else {
                0
            };
            let Some(totals) = tally.record(generation, failed, slow, now) else {
                return;
            };
            if reason.is_none() && (failed || slow) {
                reason = self.rate_reason(totals);
            }
        }
        if let Some(reason) = reason {
            let word = self.word();
            if word.state() != State::Closed || word.generation() != generation {
                // The cycle this result belongs to is over.
                return;
            }
            if word.mode() == Mode::MetricsOnly {
                tracing::debug!(
                    breaker = %self.config.name,
                    reason = reason.as_str(),
                    "breaker would trip (metrics-only mode)"
                );
                return;
            }
            // Losing the race means another caller already tripped it.
            let _ = self.trip(word, reason, hint, self.now_micros());
        }
    }

    pub(super) fn rate_reason(&self, totals: Totals) -> Option<Reason> {
        if totals.calls < u64::from(self.config.minimum_calls) {
            return None;
        }
        let calls = totals.calls as f64;
        if self
            .config
            .failure_rate
            .is_some_and(|rate| totals.failures as f64 >= rate * calls)
        {
            return Some(Reason::FailureRate);
        }
        if self
            .config
            .slow_call
            .is_some_and(|(_, rate)| totals.slow as f64 >= rate * calls)
        {
            return Some(Reason::SlowCallRate);
        }
        None
    }

    pub(super) fn finish_probe(&self, generation: u64, verdict: Verdict) {
        let mut word = self.word();
        loop {
            if word.state() != State::HalfOpen
                || word.mode() != Mode::Normal
                || word.generation() != generation
            {
                return;
            }
            let probes = word.probes().saturating_sub(1);
            let attempt = match verdict {
                Verdict::Ignored => self.cas(word, word.with_probes(probes)),
                Verdict::Failure { hint } => self
                    .trip(word, Reason::ProbeFailed, hint, self.now_micros())
                    .map(drop),
                Verdict::Success => {
                    let successes = word.successes() + 1;
                    if successes >= self.config.probes_to_close {
                        self.close(word, Reason::ProbesSucceeded, true)
                    } else {
                        self.cas(word, word.with_probes(probes).with_successes(successes))
                    }
                }
            };
            match attempt {
                Ok(()) => return,
                Err(actual) => word = actual,
            }
        }
    }
}
