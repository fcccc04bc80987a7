//! Concurrent callers: the open → half-open race and probe accounting under contention.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use tollway_core::{FakeClock, SharedClock};

use super::*;
use crate::config::OpenDuration;

fn tripped(max_probes: u32) -> (Arc<Circuit>, FakeClock) {
    let clock = FakeClock::new();
    let config = BreakerConfig::builder()
        .consecutive_failures(1)
        .without_failure_rate()
        .open_duration(OpenDuration::fixed(Duration::from_secs(1)))
        .max_probes(max_probes)
        .build()
        .unwrap();
    let circuit = Circuit::new(config, SharedClock::new(clock.clone()));
    let Ok(ticket) = circuit.admit() else {
        panic!("closed admits")
    };
    circuit.finish(ticket, Verdict::Failure { hint: None }, 0);
    assert_eq!(circuit.state(), State::Open);
    (circuit, clock)
}

#[test]
fn racing_callers_admit_exactly_the_permitted_probes() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 10_000;
    for max_probes in [1, 3] {
        let (circuit, clock) = tripped(max_probes);
        // Each round: the main thread re-trips the breaker and lets the open period lapse, then
        // all workers race open -> half-open at once.
        let start = Arc::new(Barrier::new(THREADS + 1));
        let end = Arc::new(Barrier::new(THREADS + 1));
        let admitted = Arc::new(AtomicU32::new(0));
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (circuit, start, end) =
                    (Arc::clone(&circuit), Arc::clone(&start), Arc::clone(&end));
                let admitted = Arc::clone(&admitted);
                thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        start.wait();
                        if let Ok(Ticket::Probe { .. }) = circuit.admit() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        end.wait();
                    }
                })
            })
            .collect();
        for round in 0..ROUNDS {
            let generation = circuit.counts().generation;
            clock.advance(Duration::from_secs(1));
            admitted.store(0, Ordering::Relaxed);
            start.wait();
            end.wait();
            let counts = circuit.counts();
            assert_eq!(
                admitted.load(Ordering::Relaxed),
                max_probes.min(THREADS as u32),
                "round {round}"
            );
            assert_eq!(counts.state, State::HalfOpen);
            assert_eq!(counts.probes_in_flight, max_probes.min(THREADS as u32));
            assert_eq!(
                counts.generation,
                generation + 1,
                "exactly one open -> half-open"
            );
            // Re-open: a failed probe.
            circuit.finish(
                Ticket::Probe {
                    generation: counts.generation,
                },
                Verdict::Failure { hint: None },
                0,
            );
            assert_eq!(circuit.state(), State::Open);
        }
        for worker in workers {
            worker.join().unwrap();
        }
    }
}

#[test]
fn probes_in_flight_never_exceed_the_limit_under_churn() {
    const THREADS: usize = 6;
    const MAX: u32 = 2;
    let (circuit, clock) = tripped(MAX);
    let in_flight: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|seed| {
            let circuit = Arc::clone(&circuit);
            let in_flight = Arc::clone(&in_flight);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut n = seed as u64;
                while !stop.load(Ordering::Relaxed) {
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let Ok(ticket) = circuit.admit() else {
                        continue;
                    };
                    if let Ticket::Probe { generation } = ticket {
                        let mut map = in_flight.lock();
                        let count = map.entry(generation).or_default();
                        *count += 1;
                        assert!(*count <= MAX, "{count} probes in generation {generation}");
                    }
                    let verdict = match (n >> 33) % 4 {
                        0 => Verdict::Failure { hint: None },
                        1 => Verdict::Ignored,
                        _ => Verdict::Success,
                    };
                    // Un-count before reporting, so the test never counts more than the
                    // breaker holds.
                    if let Ticket::Probe { generation } = ticket {
                        *in_flight.lock().get_mut(&generation).unwrap() -= 1;
                    }
                    circuit.finish(ticket, verdict, 0);
                }
            })
        })
        .collect();
    for _ in 0..400 {
        clock.advance(Duration::from_millis(250));
        thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    let counts = circuit.counts();
    assert!(counts.probes_in_flight <= MAX);
    assert!(
        counts.generation > 2,
        "the breaker kept cycling: {counts:?}"
    );
}
