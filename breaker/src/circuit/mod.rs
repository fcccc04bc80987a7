//! The state machine every breaker service shares through an `Arc`.
//!
//! All state that decides admission lives in one packed [`Word`]; every change of it is a
//! compare-and-swap, so exactly one caller wins each transition and does its side effects. The
//! closed path loads the word, and on completion updates the window (see [`crate::window`]),
//! whose counts are tagged with the generation they belong to. Open and probe deadlines live in
//! their own atomics, tagged with their generation too and installed by compare-and-swap only
//! while that generation is current: a thread descheduled between a transition and its deadline
//! write can never overwrite a later cycle's deadline.

//!
//! Files: admission and reads here; [`ticket`] (what admission grants), [`record`] (the
//! completion path), [`transition`] (trips, closes, deadlines, announcements).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollway_core::{CircuitOpen, Outcome, OutcomeKind, SharedClock};

use crate::config::{BreakerConfig, FailureWindow};
use crate::event::{Mode, Reason, State};
use crate::hot::{Light, Slot};
use crate::metrics::Metrics;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::window::{Consecutive, Tally};
use crate::word::Word;

mod record;
mod ticket;
mod transition;

pub(crate) use ticket::{PackedTicket, Ticket, Verdict};
use transition::{MICROS_MASK, read_deadline};

/// Counts read through a [`BreakerHandle`](crate::BreakerHandle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerCounts {
    /// The current state.
    pub state: State,
    /// The current mode.
    pub mode: Mode,
    /// The current generation (it changes on every state change).
    pub generation: u64,
    /// Calls in the rate window (0 when no rate trip is configured).
    pub window_calls: u64,
    /// Failures in the rate window.
    pub window_failures: u64,
    /// Slow calls in the rate window.
    pub window_slow_calls: u64,
    /// Failures in a row, in the closed state.
    pub consecutive_failures: u32,
    /// Trips since the breaker last closed after probing (drives the growing open duration).
    pub trips: u32,
    /// Half-open probes in flight.
    pub probes_in_flight: u32,
    /// Successful probes in the current half-open cycle.
    pub probe_successes: u32,
    /// How long until the breaker admits a probe, when it is open.
    pub open_remaining: Option<Duration>,
}

pub(crate) struct Circuit {
    word: AtomicU64,
    open_until: AtomicU64,
    probe_deadline: AtomicU64,
    consecutive: Consecutive,
    /// Where the words a completing call reads live; see [`crate::hot`].
    slot: Slot,
    /// Whether a closed-state call may complete through a [`Light`] reference: the default
    /// classifier, no slow-call timing, no time window and no metrics to count successes.
    light: bool,
    trips: AtomicU32,
    last_used_secs: AtomicU64,
    tally: Option<Tally>,
    /// The default classifier and failure predicate: every status below 400 is a success.
    plain_statuses: bool,
    clock: SharedClock,
    origin: Instant,
    config: BreakerConfig,
    metrics: Metrics,
}

impl std::fmt::Debug for Circuit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = Word(self.word.load(Ordering::Relaxed));
        f.debug_struct("Circuit")
            .field("name", &self.config.name)
            .field("state", &word.state())
            .field("mode", &word.mode())
            .field("generation", &word.generation())
            .finish_non_exhaustive()
    }
}

impl Circuit {
    pub(crate) fn new(config: BreakerConfig, clock: SharedClock) -> Arc<Self> {
        let wants_window = config.failure_rate.is_some() || config.slow_call.is_some();
        let ring = match config.window {
            FailureWindow::Count(n) if wants_window => u64::from(n),
            _ => 0,
        };
        let light = config.classifies_by_default()
            && config.slow_call.is_none()
            && (!wants_window || ring > 0)
            && !cfg!(feature = "metrics");
        Arc::new_cyclic(|owner| {
            let slot = Slot::acquire(owner.clone(), ring);
            let hot = slot.words();
            Self {
                word: AtomicU64::new(Word::new(State::Closed, Mode::Normal, 0).0),
                open_until: AtomicU64::new(0),
                probe_deadline: AtomicU64::new(0),
                consecutive: Consecutive(&hot.consecutive),
                slot,
                light,
                trips: AtomicU32::new(0),
                last_used_secs: AtomicU64::new(0),
                tally: wants_window.then(|| Tally::new(config.window, hot)),
                plain_statuses: config.classifies_by_default(),
                origin: clock.now(),
                clock,
                metrics: Metrics::new(&config.name),
                config,
            }
        })
    }

    /// What a closed-state call's future may hold instead of the breaker, if its result can be
    /// judged without it.
    #[inline]
    pub(crate) fn light(&self) -> Option<Light> {
        self.light.then(|| self.slot.light())
    }

    pub(crate) const fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn word(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    fn cas(&self, from: Word, to: Word) -> Result<(), Word> {
        self.word
            .compare_exchange(from.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(Word)
    }

    fn elapsed(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.origin)
    }

    fn now_micros(&self) -> u64 {
        u64::try_from(self.elapsed().as_micros()).unwrap_or(MICROS_MASK)
    }

    /// Decides whether a call may go through. Closed: one atomic load.
    #[inline]
    pub(crate) fn admit(&self) -> Result<Ticket, CircuitOpen> {
        let word = self.word();
        if word.is_closed_normal() {
            return Ok(Ticket::Closed {
                generation: word.generation(),
            });
        }
        let verdict = self.admit_slow(word);
        if verdict.is_err() {
            self.metrics.rejected();
        }
        verdict
    }

    #[cold]
    fn admit_slow(&self, mut word: Word) -> Result<Ticket, CircuitOpen> {
        loop {
            let generation = word.generation();
            match (word.mode(), word.state()) {
                (Mode::Disabled, _) => return Ok(Ticket::Untracked),
                (Mode::MetricsOnly, _) | (Mode::Normal, State::Closed) => {
                    return Ok(Ticket::Closed { generation });
                }
                (Mode::ForcedOpen, _) => {
                    return Err(CircuitOpen::new(self.config.open_duration.base()));
                }
                (Mode::Normal, State::Open) => {
                    let now = self.now_micros();
                    let Some(until) = read_deadline(&self.open_until, generation) else {
                        // The trip that opened this generation has not stored its deadline yet.
                        return Err(CircuitOpen::new(self.config.open_duration.base()));
                    };
                    if now < until {
                        return Err(CircuitOpen::new(Duration::from_micros(until - now)));
                    }
                    let next = Word::new(State::HalfOpen, Mode::Normal, word.next_generation())
                        .with_probes(1);
                    match self.cas(word, next) {
                        Ok(()) => {
                            self.set_probe_deadline(next.generation(), now);
                            self.announce(word, next, Reason::OpenElapsed);
                            return Ok(Ticket::Probe {
                                generation: next.generation(),
                            });
                        }
                        Err(actual) => word = actual,
                    }
                }
                (Mode::Normal, State::HalfOpen) => {
                    if word.probes() < self.config.max_probes {
                        match self.cas(word, word.with_probes(word.probes() + 1)) {
                            Ok(()) => {
                                self.set_probe_deadline(generation, self.now_micros());
                                return Ok(Ticket::Probe { generation });
                            }
                            Err(actual) => word = actual,
                        }
                        continue;
                    }
                    let now = self.now_micros();
                    let deadline = read_deadline(&self.probe_deadline, generation);
                    match deadline {
                        Some(deadline) if now >= deadline => {
                            // The probes in flight went quiet: re-open rather than wait forever.
                            match self.trip(word, Reason::ProbeTimeout, None, now) {
                                Ok(open_for) => return Err(CircuitOpen::new(open_for)),
                                Err(actual) => word = actual,
                            }
                        }
                        _ => {
                            let base = self.config.open_duration.base();
                            let left = deadline.map_or(base, |d| Duration::from_micros(d - now));
                            return Err(CircuitOpen::new(left.min(base)));
                        }
                    }
                }
            }
        }
    }

    /// When timing is needed for this call (slow-call detection), its start, as microseconds
    /// since the breaker was made plus one; 0 when not timed. (A word, not an `Option<Instant>`:
    /// it keeps the response future small.)
    #[inline]
    pub(crate) fn start(&self) -> u64 {
        if self.config.slow_call.is_some() {
            self.now_micros().saturating_add(1)
        } else {
            0
        }
    }

    /// Whether a response with `status` is a success without classifying it (the common case,
    /// decided with one comparison).
    #[inline]
    pub(crate) fn plainly_succeeded(&self, status: http::StatusCode) -> bool {
        self.plain_statuses && status.as_u16() < 400
    }

    /// What `outcome` means: local rejections are ignored; failures per the configuration.
    #[inline]
    pub(crate) fn judge(&self, outcome: &Outcome) -> Verdict {
        if outcome.kind() == OutcomeKind::Rejected {
            Verdict::Ignored
        } else if self.config.is_failure(outcome) {
            let hint = outcome
                .retry_after()
                .map(|r| r.delay_from(self.clock.system_now()));
            Verdict::Failure { hint }
        } else {
            Verdict::Success
        }
    }

    /// Operator override: moves to `state` in `mode`, starting a new generation (whose counts
    /// start empty).
    pub(crate) fn force(&self, state: State, mode: Mode, forget_trips: bool) {
        let mut word = self.word();
        loop {
            let to = Word::new(state, mode, word.next_generation());
            match self.cas(word, to) {
                Ok(()) => {
                    if forget_trips {
                        self.trips.store(0, Ordering::Relaxed);
                    }
                    self.announce(word, to, Reason::Manual);
                    return;
                }
                Err(actual) => word = actual,
            }
        }
    }

    pub(crate) fn counts(&self) -> BreakerCounts {
        let word = self.word();
        let now = self.now_micros();
        let closed = word.state() == State::Closed;
        let totals = self
            .tally
            .as_ref()
            .filter(|_| closed)
            .map(|t| t.totals(word.generation(), now))
            .unwrap_or_default();
        let open_remaining = (word.state() == State::Open && word.mode() == Mode::Normal)
            .then(|| read_deadline(&self.open_until, word.generation()))
            .flatten()
            .map(|until| Duration::from_micros(until.saturating_sub(now)));
        BreakerCounts {
            state: word.state(),
            mode: word.mode(),
            generation: word.generation(),
            window_calls: totals.calls,
            window_failures: totals.failures,
            window_slow_calls: totals.slow,
            consecutive_failures: if closed {
                self.consecutive.get(word.generation())
            } else {
                0
            },
            trips: self.trips.load(Ordering::Relaxed),
            probes_in_flight: word.probes(),
            probe_successes: word.successes(),
            open_remaining,
        }
    }

    pub(crate) fn state(&self) -> State {
        self.word().state()
    }

    pub(crate) fn mode(&self) -> Mode {
        self.word().mode()
    }

    /// Marks the breaker used now (keyed registries evict idle ones first). Writes at most once
    /// a second.
    pub(crate) fn touch(&self) {
        let now = self.elapsed().as_secs();
        if self.last_used_secs.load(Ordering::Relaxed) != now {
            self.last_used_secs.store(now, Ordering::Relaxed);
        }
    }

    /// Seconds since the breaker was last used, per [`touch`](Self::touch).
    pub(crate) fn idle_secs(&self) -> u64 {
        self.elapsed()
            .as_secs()
            .saturating_sub(self.last_used_secs.load(Ordering::Relaxed))
    }
}

#[cfg(all(test, tollway_loom))]
mod loom_tests;
#[cfg(all(test, not(tollway_loom)))]
mod model_tests;
#[cfg(all(test, not(tollway_loom)))]
mod race_tests;
