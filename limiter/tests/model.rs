//! The lock-free state against a plain reference model, on a fake clock; and a two-thread
//! stress test of the all-or-nothing commit.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tollway_core::FakeClock;
use tollway_limiter::{Quota, RateLimiter};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// GCRA written the obvious way, in u128, one quota after another.
#[derive(Debug, Clone)]
struct Model {
    quotas: Vec<(u128, u128, u32)>, // interval, capacity, burst
    tats: Vec<u128>,
    paused_until: u128,
}

impl Model {
    fn new(quotas: &[Quota]) -> Self {
        Self {
            quotas: quotas
                .iter()
                .map(|q| {
                    let i = q.interval().as_nanos();
                    (i, i * u128::from(q.burst()), q.burst())
                })
                .collect(),
            tats: vec![0; quotas.len()],
            paused_until: 0,
        }
    }

    fn wait(&self, now: u128, n: u32) -> u128 {
        self.quotas
            .iter()
            .zip(&self.tats)
            .map(|(&(i, cap, _), &tat)| {
                (tat.max(now) + u128::from(n) * i).saturating_sub(now + cap)
            })
            .max()
            .unwrap()
    }

    /// `None`: the cost never fits; `Some(0)`: admitted; `Some(w)`: refused for `w` ns.
    fn check(&mut self, now: u128, n: u32) -> Option<u128> {
        if self.quotas.iter().any(|&(_, _, b)| n > b) {
            return None;
        }
        let wait = self.wait(now, n);
        if wait == 0 {
            for (tat, &(i, _, _)) in self.tats.iter_mut().zip(&self.quotas) {
                *tat = (*tat).max(now) + u128::from(n) * i;
            }
        }
        Some(wait)
    }

    /// Returns capacity, but never shortens a pause.
    fn refund(&mut self, n: u32, now: u128) {
        for (tat, &(i, _, _)) in self.tats.iter_mut().zip(&self.quotas) {
            *tat = tat.saturating_sub(u128::from(n) * i);
        }
        if self.paused_until > now {
            self.pause(self.paused_until);
        }
    }

    /// Keeps the debt beyond the pause in requests; the pause itself stays as it is. Where the
    /// converted value equals the old one and the interval changed, the limiter moves it by
    /// one nanosecond (so that a concurrent commit never uses the old parameters on it):
    /// earlier when nothing is owed, later when something is (not inside a burst-1 pause).
    fn set_quota(&mut self, index: usize, quota: Quota, now: u128) {
        let (old, _, _) = self.quotas[index];
        let new = quota.interval().as_nanos();
        self.quotas[index] = (new, new * u128::from(quota.burst()), quota.burst());
        let base = now.max(self.paused_until);
        let tat = self.tats[index];
        let scaled = if tat <= base || old == new {
            tat
        } else {
            base + (tat - base) * new / old
        };
        self.tats[index] = if scaled != tat || old == new || (now < tat && tat <= base) {
            scaled
        } else if tat > now || tat == 0 {
            tat + 1
        } else {
            tat - 1
        };
    }

    fn pause(&mut self, until: u128) {
        self.paused_until = self.paused_until.max(until);
        for (tat, &(i, cap, _)) in self.tats.iter_mut().zip(&self.quotas) {
            *tat = (*tat).max(until + cap - i);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Check(u32),
    Refund(u32),
    SetQuota(usize, u32, u32),
    Pause(u64),
}

fn quota() -> impl Strategy<Value = Quota> {
    (1u32..50, 1u32..6, prop::bool::ANY).prop_map(|(n, burst, minute)| {
        let rate = if minute {
            Quota::per_minute(n)
        } else {
            Quota::per_second(n)
        };
        rate.burst(burst)
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..400_000_000).prop_map(Op::Advance),
        6 => (1u32..4).prop_map(Op::Check),
        1 => (1u32..3).prop_map(Op::Refund),
        1 => (0usize..3, 1u32..50, 1u32..6).prop_map(|(i, n, b)| Op::SetQuota(i, n, b)),
        1 => (0u64..2_000_000_000).prop_map(Op::Pause),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn limiter_matches_the_reference_model(
        quotas in prop::collection::vec(quota(), 1..4),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let clock = FakeClock::new();
        let mut builder = RateLimiter::builder(quotas[0]).clock(clock.clone());
        for &q in &quotas[1..] {
            builder = builder.quota(q);
        }
        let limiter = builder.build();
        let mut model = Model::new(&quotas);
        for op in ops {
            let now = clock.elapsed().as_nanos();
            match op {
                Op::Advance(ns) => clock.advance(Duration::from_nanos(ns)),
                Op::Check(n) => {
                    let expected = model.check(now, n);
                    let actual = limiter.check_n(nz(n));
                    match (expected, actual) {
                        (None, Err(e)) => prop_assert_eq!(e.cost(), n),
                        (Some(0), Ok(Ok(()))) => {}
                        (Some(wait), Ok(Err(refused))) => {
                            prop_assert_eq!(refused.retry_after().as_nanos(), wait);
                        }
                        (e, a) => prop_assert!(false, "model {:?}, limiter {:?}", e, a),
                    }
                    // A peek says the same and consumes nothing.
                    let peeked = limiter.peek().map_err(|e| e.retry_after().as_nanos());
                    match model.wait(now, 1) {
                        0 => prop_assert_eq!(peeked, Ok(())),
                        w => prop_assert_eq!(peeked, Err(w)),
                    }
                }
                Op::Refund(n) => {
                    model.refund(n, now);
                    limiter.refund(n);
                }
                Op::SetQuota(i, rate, burst) => {
                    let q = Quota::per_second(rate).burst(burst);
                    if i < quotas.len() {
                        model.set_quota(i, q, now);
                        prop_assert!(limiter.set_quota(i, q).is_ok());
                    } else {
                        prop_assert!(limiter.set_quota(i, q).is_err());
                    }
                }
                Op::Pause(ns) => {
                    model.pause(now + u128::from(ns));
                    limiter.pause(Duration::from_nanos(ns));
                }
            }
            let now = clock.elapsed().as_nanos();
            let available = (0..).take_while(|&k| model.wait(now, k + 1) == 0).count() as u64;
            prop_assert_eq!(limiter.available(), available);
        }
    }
}

#[test]
fn two_threads_admit_exactly_what_the_model_admits() {
    // 100/s with burst 50, and 70 per minute with burst 70: the per-second quota binds first,
    // then the minute one, so refusals by the second must give back the first's commits.
    let quotas = [
        Quota::per_second(100).burst(50),
        Quota::per_minute(70).burst(70),
    ];
    let clock = FakeClock::new();
    let limiter = RateLimiter::builder(quotas[0])
        .quota(quotas[1])
        .clock(clock.clone())
        .build();
    let mut model = Model::new(&quotas);
    let admitted = Arc::new(AtomicU64::new(0));
    let mut expected = 0;
    for round in 0..5 {
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..2_000 {
                        if limiter.check().is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let now = clock.elapsed().as_nanos();
        while model.check(now, 1) == Some(0) {
            expected += 1;
        }
        assert_eq!(admitted.load(Ordering::Relaxed), expected, "round {round}");
        clock.advance(Duration::from_secs(1));
    }
    assert!(
        expected > 70,
        "the minute quota refilled a little each second"
    );
}
