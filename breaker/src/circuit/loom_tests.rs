//! Model checks of the state word and what is tagged with its generation, under every
//! interleaving loom explores (`RUSTFLAGS="--cfg tollway_loom" cargo test -p tollway-breaker --lib`).

use std::time::Duration;

use std::sync::Arc;

use loom::thread;
use tollway_core::{FakeClock, SharedClock};

use super::*;
use crate::config::OpenDuration;

fn model(f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    // Every interleaving with up to three preemptions: enough for a thread to be descheduled
    // between a compare-and-swap and the write that follows it, while another runs a cycle.
    builder.preemption_bound = Some(3);
    builder.check(f);
}

fn circuit(config: crate::config::BreakerConfigBuilder) -> (Arc<Circuit>, FakeClock) {
    let clock = FakeClock::new();
    let circuit = Circuit::new(config.build().unwrap(), SharedClock::new(clock.clone()));
    (circuit, clock)
}

/// A thread that moved the breaker half-open and was descheduled before writing its probe
/// deadline must not overwrite the deadline of a later half-open cycle: with that cycle's only
/// probe hung, the probe timeout must still re-open the breaker.
#[test]
fn a_late_probe_deadline_never_hides_the_current_one() {
    model(|| {
        let (circuit, clock) = circuit(
            BreakerConfig::builder()
                .consecutive_failures(1)
                .without_failure_rate()
                .open_duration(OpenDuration::fixed(Duration::from_secs(1)))
                .max_probes(1)
                .probe_timeout(Duration::from_secs(5)),
        );
        let ticket = circuit.admit().unwrap();
        circuit.finish(ticket, Verdict::Failure { hint: None }, 0);
        clock.advance(Duration::from_secs(1));

        let prober = {
            let circuit = Arc::clone(&circuit);
            thread::spawn(move || {
                // Open (generation 1) -> half-open (generation 2), then its deadline.
                assert!(matches!(
                    circuit.admit(),
                    Ok(Ticket::Probe { generation: 2 })
                ));
            })
        };
        let cycler = {
            let (circuit, clock) = (Arc::clone(&circuit), clock.clone());
            thread::spawn(move || {
                while circuit.word().generation() < 2 {
                    thread::yield_now();
                }
                // The probe fails (open, generation 3); after the open duration a new probe is
                // admitted (half-open, generation 4) and hangs.
                circuit.finish(
                    Ticket::Probe { generation: 2 },
                    Verdict::Failure { hint: None },
                    0,
                );
                clock.advance(Duration::from_secs(1));
                assert!(matches!(
                    circuit.admit(),
                    Ok(Ticket::Probe { generation: 4 })
                ));
            })
        };
        prober.join().unwrap();
        cycler.join().unwrap();

        clock.advance(Duration::from_secs(6));
        assert!(circuit.admit().is_err());
        assert_eq!(circuit.state(), State::Open, "the hung probe timed out");
    });
}

/// A closed-state result read before an open -> closed cycle lands nowhere in the new cycle's
/// counts, however the threads interleave.
#[test]
fn a_late_closed_result_never_counts_in_a_later_cycle() {
    model(|| {
        let (circuit, _clock) = circuit(
            BreakerConfig::builder()
                .consecutive_failures(2)
                .failure_rate(0.5)
                .count_window(4)
                .minimum_calls(3),
        );
        let late = circuit.admit().unwrap();

        let reporter = {
            let circuit = Arc::clone(&circuit);
            thread::spawn(move || circuit.finish(late, Verdict::Failure { hint: None }, 0))
        };
        let cycler = {
            let circuit = Arc::clone(&circuit);
            thread::spawn(move || {
                circuit.force(State::Open, Mode::ForcedOpen, false);
                circuit.force(State::Closed, Mode::Normal, false);
                let ticket = circuit.admit().unwrap();
                circuit.finish(ticket, Verdict::Failure { hint: None }, 0);
            })
        };
        reporter.join().unwrap();
        cycler.join().unwrap();

        let counts = circuit.counts();
        assert_eq!(counts.state, State::Closed);
        assert_eq!(counts.generation, 2);
        assert_eq!(counts.consecutive_failures, 1);
        assert_eq!((counts.window_calls, counts.window_failures), (1, 1));
    });
}

/// Racing callers take exactly the permitted probes, and one open -> half-open transition.
#[test]
fn racing_callers_take_exactly_the_permitted_probes() {
    model(|| {
        let (circuit, clock) = circuit(
            BreakerConfig::builder()
                .consecutive_failures(1)
                .without_failure_rate()
                .open_duration(OpenDuration::fixed(Duration::from_secs(1)))
                .max_probes(1),
        );
        let ticket = circuit.admit().unwrap();
        circuit.finish(ticket, Verdict::Failure { hint: None }, 0);
        clock.advance(Duration::from_secs(1));
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let circuit = Arc::clone(&circuit);
                thread::spawn(move || circuit.admit().is_ok())
            })
            .collect();
        let admitted = callers
            .into_iter()
            .map(|c| c.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(admitted, 1);
        let counts = circuit.counts();
        assert_eq!((counts.state, counts.generation), (State::HalfOpen, 2));
        assert_eq!(counts.probes_in_flight, 1);
    });
}
