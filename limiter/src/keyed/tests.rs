use tollway_core::FakeClock;

use super::*;

impl<K: Hash + Eq + Clone, C: LimiterClock> KeyedRateLimiter<K, C> {
    /// Inserts `key` and reports how many keys the insertion looked at to make room.
    pub(crate) fn insert_counting(&self, key: &K) -> usize {
        let hash = self.hash(key);
        let now = self.now();
        let mut shard = self.shard(hash).write();
        let looked = if shard.get(hash, key).is_none() && shard.len() >= self.shared.shard_capacity
        {
            shard.evict(now)
        } else {
            0
        };
        shard.get_or_insert(hash, key.clone(), now, |k| self.hash(k));
        looked
    }
}

fn hourly(max_keys: usize) -> KeyedRateLimiter<u64, FakeClock> {
    RateLimiter::builder(Quota::per_hour(1).burst(1))
        .clock(FakeClock::new())
        .build_keyed(NonZeroUsize::new(max_keys).unwrap())
}

/// Finding: once the map was full and no key idle (an hourly quota), every new key scanned
/// the whole shard, twice, under the write lock. It now looks at a small sample.
#[test]
fn a_new_key_in_a_full_map_looks_at_a_bounded_sample() {
    let limiters = hourly(4_096);
    for key in 0..3 * limiters.key_bound() as u64 {
        assert!(limiters.check(&key).is_ok());
    }
    assert!(
        limiters.len() > limiters.key_bound() * 9 / 10,
        "{}",
        limiters.len()
    );
    let mut most = 0;
    for key in 1_000_000..1_020_000u64 {
        most = most.max(limiters.insert_counting(&key));
    }
    assert!(
        most <= shard::MAX_HAND_STEPS,
        "looked at {most} keys for one new key"
    );
    assert!(limiters.len() <= limiters.key_bound());
    assert!(limiters.memory_used() <= limiters.memory_bound());
}

/// Idle keys go first, then keys unused since the hand passed: a flood of one-off keys
/// never pushes out a key in use, however much it owes.
#[test]
fn keys_in_use_survive_a_flood_of_one_off_keys() {
    let limiters = RateLimiter::builder(Quota::per_hour(1).burst(1))
        .clock(FakeClock::new())
        .build_keyed::<u64>(NonZeroUsize::new(64).unwrap());
    limiters.check(&0).unwrap();
    for key in 100..10_000 {
        limiters.check(&key).unwrap();
        assert!(limiters.len() <= 64);
        // The client behind key 0 keeps trying: refused, and remembered.
        if key % 8 == 0 {
            assert!(limiters.check(&0).is_err(), "key 0 forgotten at {key}");
        }
    }
}

#[test]
fn idle_keys_are_forgotten_before_used_ones() {
    let clock = FakeClock::new();
    let limiters = RateLimiter::builder(Quota::per_second(1).burst(1))
        .clock(clock.clone())
        .build_keyed::<u64>(NonZeroUsize::new(64).unwrap());
    for key in 0..64 {
        limiters.check(&key).unwrap();
    }
    clock.advance(Duration::from_secs(5));
    // Key 0 owes again; the 63 others are idle: 63 new keys replace exactly those.
    limiters.check(&0).unwrap();
    for key in 100..163 {
        limiters.check(&key).unwrap();
    }
    assert!(limiters.check(&0).is_err(), "the key that owes was kept");
}

/// Tiny bounds work too (a shard smaller than the vector's first growth step panicked).
#[test]
fn tiny_key_bounds_hold() {
    for max_keys in 1..=9 {
        let limiters = hourly(max_keys);
        for key in 0..20 {
            assert!(limiters.check(&key).is_ok());
        }
        assert_eq!(limiters.len(), limiters.key_bound().min(20));
    }
}

/// Multi-quota keys are bare TATs too: no full limiter per key.
#[test]
fn keys_with_several_quotas_stay_bare() {
    let limiters = RateLimiter::builder(Quota::per_second(10).burst(2))
        .quota(Quota::per_minute(3).burst(3))
        .clock(FakeClock::new())
        .build_keyed::<u64>(NonZeroUsize::new(64).unwrap());
    for key in 0..10 {
        limiters.check(&key).unwrap();
    }
    let shard = limiters.shared.shards[0].read();
    assert!(shard.entries().all(|e| e.limiter.is_none()));
}
