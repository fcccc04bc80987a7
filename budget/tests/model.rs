//! A property test against a reference model: random reserves, settles, refunds and clock moves
//! on a ledger with a daily limit, a rolling limit and a critical reserve.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use tollway_budget::{Ledger, Priority, Reservation, Window};
use tollway_core::{ExhaustedReason, FakeClock};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
/// A rolling window is kept in 60 buckets: spend leaves it within one bucket after its length.
const BUCKET_MS: i64 = HOUR_MS / 60;
const DAILY: u64 = 40;
const HOURLY: u64 = 15;
const RESERVE: u64 = 3;

#[derive(Debug, Clone)]
enum Op {
    Reserve { cost: u64, critical: bool },
    Settle { pick: usize, percent: u64 },
    Refund { pick: usize },
    Advance { secs: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..6, any::<bool>()).prop_map(|(cost, critical)| Op::Reserve { cost, critical }),
        3 => (any::<usize>(), 0u64..=100).prop_map(|(pick, percent)| Op::Settle { pick, percent }),
        1 => any::<usize>().prop_map(|pick| Op::Refund { pick }),
        2 => (0u64..5_000).prop_map(|secs| Op::Advance { secs }),
    ]
}

fn sum_where(charges: &[(i64, u64)], keep: impl Fn(i64) -> bool) -> u64 {
    charges
        .iter()
        .filter(|(t, _)| keep(*t))
        .map(|(_, a)| a)
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn ledger_matches_the_model(start_secs in 1_600_000_000u64..1_900_000_000, ops in prop::collection::vec(op(), 1..120)) {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(start_secs);
        let clock = FakeClock::starting_at(start);
        let ledger = Ledger::builder()
            .limit(DAILY, Window::day())
            .limit(HOURLY, Window::rolling(Duration::from_millis(HOUR_MS as u64)))
            .critical_reserve(RESERVE)
            .clock(clock.clone())
            .build();
        let mut now = start_secs as i64 * 1000;
        let mut charges: Vec<(i64, u64)> = Vec::new();
        let mut open: Vec<Reservation> = Vec::new();

        for op in ops {
            match op {
                Op::Reserve { cost, critical } => {
                    let before = ledger.snapshot();
                    let reserved: u64 = open.iter().map(Reservation::cost).sum();
                    prop_assert_eq!(before.reserved, reserved);
                    let left = (DAILY.saturating_sub(before.windows[0].spent))
                        .min(HOURLY.saturating_sub(before.windows[1].spent))
                        .saturating_sub(reserved);
                    let floor = if critical { 0 } else { RESERVE };
                    let priority = if critical { Priority::Critical } else { Priority::Normal };
                    match ledger.reserve(cost, priority) {
                        Ok(reservation) => {
                            prop_assert!(left >= cost + floor, "granted {} with {} left", cost, left);
                            open.push(reservation);
                        }
                        Err(err) => {
                            prop_assert!(left < cost + floor, "refused {} with {} left", cost, left);
                            let expected = if left < cost {
                                ExhaustedReason::Window
                            } else {
                                ExhaustedReason::CriticalReserve
                            };
                            prop_assert_eq!(err.exhausted().unwrap().reason(), expected);
                        }
                    }
                }
                Op::Settle { pick, percent } => {
                    if !open.is_empty() {
                        let reservation = open.swap_remove(pick % open.len());
                        let charge = reservation.cost() * percent / 100;
                        reservation.settle(charge);
                        charges.push((now, charge));
                    }
                }
                Op::Refund { pick } => {
                    if !open.is_empty() {
                        drop(open.swap_remove(pick % open.len()));
                    }
                }
                Op::Advance { secs } => {
                    clock.advance(Duration::from_secs(secs));
                    now += secs as i64 * 1000;
                }
            }
            let snapshot = ledger.snapshot();
            let day_start = now - now.rem_euclid(DAY_MS);
            prop_assert_eq!(snapshot.windows[0].spent, sum_where(&charges, |t| t >= day_start));
            let rolling = snapshot.windows[1].spent;
            let at_least = sum_where(&charges, |t| now - t < HOUR_MS);
            let at_most = sum_where(&charges, |t| now - t < HOUR_MS + BUCKET_MS);
            prop_assert!(at_least <= rolling && rolling <= at_most, "{} <= {} <= {}", at_least, rolling, at_most);
            let reserved: u64 = open.iter().map(Reservation::cost).sum();
            prop_assert_eq!(snapshot.reserved, reserved);
            // Charges never exceed what was reserved, so no limit is ever overrun.
            prop_assert!(snapshot.windows[0].spent + reserved <= DAILY);
            prop_assert!(rolling + reserved <= HOURLY);
        }
    }
}
