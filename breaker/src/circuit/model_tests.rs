//! The state machine against a plain reference model, on a fake clock: any sequence of
//! admissions, completions, cancellations, clock moves and overrides must leave both in the
//! same state and give the same answers.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use tollway_core::{FakeClock, SharedClock};

use super::*;
use crate::config::OpenDuration;

const WINDOW: usize = 6;
const MIN_CALLS: u64 = 4;
const RATE: f64 = 0.5;
const CONSECUTIVE: u32 = 3;
const MAX_PROBES: u32 = 2;
const TO_CLOSE: u32 = 2;
const BASE_MS: u64 = 1_000;
const MAX_MS: u64 = 5_000;
const PROBE_TIMEOUT_MS: u64 = 3_000;

fn config() -> BreakerConfig {
    BreakerConfig::builder()
        .consecutive_failures(CONSECUTIVE)
        .failure_rate(RATE)
        .count_window(WINDOW as u32)
        .minimum_calls(MIN_CALLS as u32)
        .open_duration(
            OpenDuration::exponential(
                Duration::from_millis(BASE_MS),
                Duration::from_millis(MAX_MS),
            )
            .with_jitter(0.0),
        )
        .max_probes(MAX_PROBES)
        .probes_to_close(TO_CLOSE)
        .probe_timeout(Duration::from_millis(PROBE_TIMEOUT_MS))
        .build()
        .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelTicket {
    Closed(u64),
    Probe(u64),
}

#[derive(Debug)]
struct Model {
    state: State,
    generation: u64,
    consecutive: u32,
    window: VecDeque<bool>,
    trips: u32,
    open_until: u64,
    probes: u32,
    successes: u32,
    probe_deadline: u64,
    forced_open: bool,
}

impl Model {
    fn new() -> Self {
        Self {
            state: State::Closed,
            generation: 0,
            consecutive: 0,
            window: VecDeque::new(),
            trips: 0,
            open_until: 0,
            probes: 0,
            successes: 0,
            probe_deadline: 0,
            forced_open: false,
        }
    }

    fn open_micros(&self) -> u64 {
        let ms = (BASE_MS << (self.trips - 1).min(20)).min(MAX_MS);
        ms * 1_000
    }

    fn trip(&mut self, now: u64) -> u64 {
        self.state = State::Open;
        self.generation += 1;
        self.trips += 1;
        self.probes = 0;
        self.successes = 0;
        let open_for = self.open_micros();
        self.open_until = now + open_for;
        open_for
    }

    fn close(&mut self) {
        self.forced_open = false;
        self.state = State::Closed;
        self.generation += 1;
        self.trips = 0;
        self.consecutive = 0;
        self.window.clear();
        self.probes = 0;
        self.successes = 0;
    }

    /// `Ok(ticket)` or `Err(retry_after in µs)`.
    fn force_open(&mut self) {
        self.forced_open = true;
        self.state = State::Open;
        self.generation += 1;
        self.probes = 0;
        self.successes = 0;
    }

    fn admit(&mut self, now: u64) -> Result<ModelTicket, u64> {
        if self.forced_open {
            return Err(BASE_MS * 1_000);
        }
        match self.state {
            State::Closed => Ok(ModelTicket::Closed(self.generation)),
            State::Open if now < self.open_until => Err(self.open_until - now),
            State::Open => {
                self.state = State::HalfOpen;
                self.generation += 1;
                self.probes = 1;
                self.successes = 0;
                self.probe_deadline = now + PROBE_TIMEOUT_MS * 1_000;
                Ok(ModelTicket::Probe(self.generation))
            }
            State::HalfOpen if self.probes < MAX_PROBES => {
                self.probes += 1;
                self.probe_deadline = now + PROBE_TIMEOUT_MS * 1_000;
                Ok(ModelTicket::Probe(self.generation))
            }
            State::HalfOpen if now >= self.probe_deadline => Err(self.trip(now)),
            State::HalfOpen => Err((self.probe_deadline - now).min(BASE_MS * 1_000)),
        }
    }

    fn finish(&mut self, ticket: ModelTicket, verdict: Verdict, now: u64) {
        match ticket {
            ModelTicket::Closed(generation) => {
                if self.state != State::Closed || generation != self.generation {
                    return;
                }
                let failed = match verdict {
                    Verdict::Ignored => return,
                    Verdict::Success => false,
                    Verdict::Failure { .. } => true,
                };
                if self.window.len() == WINDOW {
                    self.window.pop_front();
                }
                self.window.push_back(failed);
                if failed {
                    self.consecutive += 1;
                    let calls = self.window.len() as u64;
                    let failures = self.window.iter().filter(|f| **f).count() as u64;
                    let rate_trip = calls >= MIN_CALLS && failures as f64 >= RATE * calls as f64;
                    if self.consecutive >= CONSECUTIVE || rate_trip {
                        self.trip(now);
                    }
                } else {
                    self.consecutive = 0;
                }
            }
            ModelTicket::Probe(generation) => {
                if self.state != State::HalfOpen || generation != self.generation {
                    return;
                }
                match verdict {
                    Verdict::Ignored => self.probes -= 1,
                    Verdict::Failure { .. } => {
                        self.trip(now);
                    }
                    Verdict::Success => {
                        self.successes += 1;
                        if self.successes >= TO_CLOSE {
                            self.close();
                        } else {
                            self.probes -= 1;
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Admit,
    /// Completes the pending call at this index (modulo the number pending).
    Finish(usize, u8),
    /// Drops the pending call at this index without a result.
    Cancel(usize),
    AdvanceMs(u64),
    ForceClosed,
    ForceOpen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Admit),
        4 => (any::<usize>(), 0u8..3).prop_map(|(i, v)| Op::Finish(i, v)),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => prop_oneof![0u64..50, 900u64..1_200, 2_900u64..5_200].prop_map(Op::AdvanceMs),
        1 => Just(Op::ForceClosed),
        1 => Just(Op::ForceOpen),
    ]
}

fn verdict(code: u8) -> Verdict {
    match code {
        0 => Verdict::Success,
        1 => Verdict::Failure { hint: None },
        _ => Verdict::Ignored,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn matches_reference_model(ops in proptest::collection::vec(op(), 1..120)) {
        let clock = FakeClock::new();
        let circuit = Circuit::new(config(), SharedClock::new(clock.clone()));
        let mut model = Model::new();
        let mut pending: Vec<(Ticket, ModelTicket)> = Vec::new();
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Admit => {
                    let real = circuit.admit();
                    let expected = model.admit(now);
                    match (real, expected) {
                        (Ok(ticket), Ok(model_ticket)) => {
                            let same = matches!(
                                (ticket, model_ticket),
                                (Ticket::Closed { generation: a }, ModelTicket::Closed(b))
                                    | (Ticket::Probe { generation: a }, ModelTicket::Probe(b))
                                    if a == b
                            );
                            prop_assert!(same, "{ticket:?} vs {model_ticket:?}");
                            pending.push((ticket, model_ticket));
                        }
                        (Err(open), Err(micros)) => {
                            prop_assert_eq!(open.retry_after(), Duration::from_micros(micros));
                        }
                        (real, expected) => {
                            prop_assert!(false, "admit: {real:?} vs model {expected:?}");
                        }
                    }
                }
                Op::Finish(i, code) if !pending.is_empty() => {
                    let (ticket, model_ticket) = pending.swap_remove(i % pending.len());
                    circuit.finish(ticket, verdict(code), 0);
                    model.finish(model_ticket, verdict(code), now);
                }
                Op::Cancel(i) if !pending.is_empty() => {
                    let (ticket, model_ticket) = pending.swap_remove(i % pending.len());
                    if let Ticket::Probe { generation } = ticket {
                        circuit.cancel_probe(generation);
                    }
                    model.finish(model_ticket, Verdict::Ignored, now);
                }
                Op::Finish(..) | Op::Cancel(_) => {}
                Op::AdvanceMs(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    now += ms * 1_000;
                }
                Op::ForceClosed => {
                    circuit.force(State::Closed, Mode::Normal, true);
                    model.close();
                }
                Op::ForceOpen => {
                    circuit.force(State::Open, Mode::ForcedOpen, false);
                    model.force_open();
                }
            }
            let counts = circuit.counts();
            prop_assert_eq!(counts.state, model.state);
            prop_assert_eq!(counts.mode == Mode::ForcedOpen, model.forced_open);
            prop_assert_eq!(counts.generation, model.generation);
            prop_assert_eq!(counts.trips, model.trips);
            if model.state == State::Closed {
                prop_assert_eq!(counts.consecutive_failures, model.consecutive);
                prop_assert_eq!(counts.window_calls, model.window.len() as u64);
                let failures = model.window.iter().filter(|f| **f).count() as u64;
                prop_assert_eq!(counts.window_failures, failures);
            }
            if model.state == State::HalfOpen {
                prop_assert_eq!(counts.probes_in_flight, model.probes);
                prop_assert_eq!(counts.probe_successes, model.successes);
                prop_assert!(counts.probes_in_flight <= MAX_PROBES);
            }
        }
    }
}
