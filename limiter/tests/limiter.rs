//! The limiter handle: exact admission counts on a fake clock, and waiting on tokio's paused
//! clock (FIFO, cancel-safety, bounds, pauses, runtime rate changes).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tollway_core::{FakeClock, TokioClock};
use tollway_limiter::{Adaptive, Quota, RateLimiter};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn sixty_simulated_seconds_admit_exactly_rate_times_sixty_plus_burst() {
    for (rate, burst) in [(10, 1), (8, 5), (100, 20), (1_000, 3), (11, 1), (7, 5)] {
        let clock = FakeClock::new();
        let limiter = RateLimiter::builder(Quota::per_second(rate).burst(burst))
            .clock(clock.clone())
            .build();
        let mut admitted = 0u64;
        // Try as often as anyone could: every millisecond, until refused, for 60 s inclusive.
        for _ in 0..=60_000 {
            while limiter.check().is_ok() {
                admitted += 1;
            }
            clock.advance(MS);
        }
        // When a second does not divide evenly, the interval is rounded up to the nanosecond
        // (never faster than the rate): 11/s's 660th request after the burst is due 660 ns
        // after 60 s, so one fewer fits.
        let uneven = 1_000_000_000 % rate != 0;
        let expected = u64::from(rate) * 60 + u64::from(burst) - u64::from(uneven);
        assert_eq!(admitted, expected, "rate {rate} burst {burst}");
    }
}

#[test]
fn several_quotas_are_all_or_nothing() {
    let clock = FakeClock::new();
    let limiter = RateLimiter::builder(Quota::per_second(11).burst(1))
        .quota(Quota::per_minute(3).burst(3))
        .clock(clock.clone())
        .build();
    let mut admitted = 0;
    for _ in 0..10_000 {
        if limiter.check().is_ok() {
            admitted += 1;
        }
        clock.advance(MS);
    }
    assert_eq!(admitted, 3, "the minute quota binds over 10 s");
    // The per-second quota was not charged for the ~10,000 refusals (it would owe 15 minutes):
    // at 30 s the minute quota has room for one more, and it goes through at once.
    clock.advance(Duration::from_secs(20));
    assert!(limiter.check().is_ok());
    // The next: the minute quota (interval 20 s, TAT 80 s, room up to 30 + 60 s) says 10 s.
    let refused = limiter.check().unwrap_err();
    assert_eq!(refused.retry_after(), Duration::from_secs(10));
}

#[test]
fn check_n_peek_and_refund() {
    let limiter = RateLimiter::builder(Quota::per_second(10).burst(5))
        .clock(FakeClock::new())
        .build();
    assert_eq!(limiter.check_n(nz(6)).unwrap_err().burst(), 5);
    assert!(limiter.check_n(nz(4)).unwrap().is_ok());
    assert_eq!(limiter.available(), 1);
    assert_eq!(limiter.peek_n(nz(2)).unwrap_err().retry_after(), 100 * MS);
    assert_eq!(limiter.available(), 1, "peek consumes nothing");
    limiter.refund(3);
    assert_eq!(limiter.available(), 4);
    assert!(limiter.peek_n(nz(6)).is_err());
}

#[test]
fn set_rate_keeps_the_debt() {
    let clock = FakeClock::new();
    let limiter = RateLimiter::builder(Quota::per_second(10).burst(10))
        .clock(clock.clone())
        .build();
    for _ in 0..10 {
        limiter.check().unwrap();
    }
    // Ten requests owed at 10/s: one second. At 5/s the same ten requests are owed for 2 s.
    limiter.set_rate(Quota::per_second(5));
    assert_eq!(limiter.quotas()[0].burst(), 10, "burst kept");
    assert_eq!(
        limiter.check().unwrap_err().retry_after(),
        Duration::from_millis(200)
    );
    clock.advance(Duration::from_millis(200));
    assert!(limiter.check().is_ok());
    assert!(limiter.check().is_err());
    // Back to 20/s: the one request owed (200 ms at 5/s) is now 50 ms.
    limiter.set_rate(Quota::per_second(20));
    assert_eq!(
        limiter.check().unwrap_err().retry_after(),
        Duration::from_millis(50)
    );
    assert!(limiter.set_quota(3, Quota::per_second(1).burst(1)).is_err());
}

fn tokio_limiter(rate: u32, burst: u32) -> tollway_limiter::RateLimiterBuilder<TokioClock> {
    RateLimiter::builder(Quota::per_second(rate).burst(burst)).clock(TokioClock)
}

/// Spawns `n` waiters in order and records (index, time since start) as each gets its permit.
async fn spawn_waiters(
    limiter: &RateLimiter<TokioClock>,
    n: usize,
) -> (
    Arc<Mutex<Vec<(usize, Duration)>>>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..n {
        let limiter = limiter.clone();
        let log = Arc::clone(&log);
        handles.push(tokio::spawn(async move {
            limiter.acquire().await.expect("no bounds");
            log.lock().push((i, start.elapsed()));
        }));
        // Let each one queue before the next is spawned.
        tokio::task::yield_now().await;
    }
    (log, handles)
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_order_exactly_when_due() {
    let limiter = tokio_limiter(10, 1).build();
    let (log, handles) = spawn_waiters(&limiter, 6).await;
    for h in handles {
        h.await.unwrap();
    }
    let log = log.lock().clone();
    let order: Vec<usize> = log.iter().map(|&(i, _)| i).collect();
    assert_eq!(order, vec![0, 1, 2, 3, 4, 5], "first come, first served");
    for (k, &(_, at)) in log.iter().enumerate() {
        let due = 100 * MS * k as u32;
        // tokio's timer has millisecond ticks: never early, never more than a tick late.
        assert!(
            at >= due && at <= due + MS,
            "waiter {k} at {at:?}, due {due:?}"
        );
    }
    assert_eq!(limiter.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn late_timer_wakes_do_not_slow_an_adaptive_pace() {
    // 1/11 s is no whole number of milliseconds: each wake-up comes up to a tick late. An
    // adaptive limiter (which paces a margin under the upstream's limit) must not carry that
    // lateness forward (it once did: 111 permits took 10.01 s).
    let limiter = tokio_limiter(11, 1).adaptive(Adaptive::new()).build();
    let (log, handles) = spawn_waiters(&limiter, 111).await;
    for h in handles {
        h.await.unwrap();
    }
    let log = log.lock().clone();
    let interval = Quota::per_second(11).burst(1).interval();
    for (k, &(_, at)) in log.iter().enumerate() {
        let due = interval * k as u32;
        assert!(
            at >= due && at <= due + MS,
            "waiter {k} at {at:?}, due {due:?}"
        );
    }
    // And never closer together than the interval less its 2% margin.
    for pair in log.windows(2) {
        assert!(pair[1].1 - pair[0].1 >= interval.mul_f64(0.98), "{pair:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_plain_limiter_never_admits_two_closer_than_its_interval() {
    // Configured at exactly an upstream's rate, a plain limiter must not go faster than it in
    // any window: late wake-ups push the rest back rather than catch up.
    let limiter = tokio_limiter(11, 1).build();
    let (log, handles) = spawn_waiters(&limiter, 30).await;
    for h in handles {
        h.await.unwrap();
    }
    let log = log.lock().clone();
    let interval = Quota::per_second(11).burst(1).interval();
    for pair in log.windows(2) {
        assert!(pair[1].1 - pair[0].1 >= interval, "{pair:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_gives_its_turn_to_the_next() {
    let limiter = tokio_limiter(10, 1).build();
    limiter.check().unwrap();
    // Three waiters; the second is cancelled before its turn.
    let start = Instant::now();
    let first = tokio::spawn({
        let l = limiter.clone();
        async move { l.acquire().await.map(|()| start.elapsed()) }
    });
    tokio::task::yield_now().await;
    let second = tokio::spawn({
        let l = limiter.clone();
        async move { l.acquire().await }
    });
    tokio::task::yield_now().await;
    let third = tokio::spawn({
        let l = limiter.clone();
        async move { l.acquire().await.map(|()| start.elapsed()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(limiter.queued(), 3);
    second.abort();
    assert!(second.await.unwrap_err().is_cancelled());
    assert_eq!(limiter.queued(), 2);
    let first = first.await.unwrap().unwrap();
    let third = third.await.unwrap().unwrap();
    assert!(first >= 100 * MS && first <= 101 * MS, "{first:?}");
    // The third takes the second's slot: nothing was reserved for the cancelled one.
    assert!(third >= 200 * MS && third <= 201 * MS, "{third:?}");
    // And nothing is owed beyond the two permits taken: the next is due at 300 ms.
    assert_eq!(
        limiter.check().unwrap_err().retry_after(),
        (300 * MS).saturating_sub(start.elapsed())
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_head_while_it_sleeps_wakes_the_next_on_time() {
    let limiter = tokio_limiter(10, 1).build();
    limiter.check().unwrap();
    let start = Instant::now();
    let mut head = Box::pin(limiter.acquire());
    assert!(futures_util::FutureExt::now_or_never(head.as_mut()).is_none());
    let next = tokio::spawn({
        let l = limiter.clone();
        async move { l.acquire().await.map(|()| start.elapsed()) }
    });
    tokio::time::sleep(50 * MS).await;
    drop(head);
    let at = next.await.unwrap().unwrap();
    assert!(at >= 100 * MS && at <= 101 * MS, "{at:?}");
}

#[tokio::test(start_paused = true)]
async fn bounds_fail_fast_with_retry_after() {
    let limiter = tokio_limiter(10, 1)
        .max_wait(Duration::from_millis(250))
        .max_queue(3)
        .build();
    limiter.check().unwrap();
    let (_log, handles) = spawn_waiters(&limiter, 2).await;
    assert_eq!(limiter.queued(), 2);
    // A third waiter would be due at 300 ms: past the max wait.
    let refused = limiter.acquire().await.unwrap_err();
    assert_eq!(refused.retry_after(), 300 * MS);
    assert_eq!(limiter.queued(), 2, "a refusal does not queue");
    for h in handles {
        h.await.unwrap();
    }

    let small_queue = tokio_limiter(10, 1).max_queue(1).build();
    small_queue.check().unwrap();
    let (_log, handles) = spawn_waiters(&small_queue, 1).await;
    let refused = small_queue.acquire().await.unwrap_err();
    assert_eq!(refused.retry_after(), 200 * MS);
    for h in handles {
        h.await.unwrap();
    }

    let never_wait = tokio_limiter(10, 1).max_wait(Duration::ZERO).build();
    never_wait.acquire().await.unwrap();
    assert!(never_wait.acquire().await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_pause_holds_everyone_then_releases_them_one_interval_apart() {
    let limiter = tokio_limiter(10, 5).build();
    limiter.pause(Duration::from_secs(2));
    assert!(limiter.paused_for().is_some());
    assert!(limiter.check().is_err());
    let (log, handles) = spawn_waiters(&limiter, 4).await;
    for h in handles {
        h.await.unwrap();
    }
    let times: Vec<Duration> = log.lock().iter().map(|&(_, t)| t).collect();
    for (k, at) in times.iter().enumerate() {
        let due = Duration::from_secs(2) + 100 * MS * k as u32;
        assert!(
            *at >= due && *at <= due + MS,
            "waiter {k} at {at:?}, due {due:?}"
        );
    }
    assert!(limiter.paused_for().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_faster_rate_wakes_the_sleeping_head_early() {
    let limiter = tokio_limiter(1, 1).build();
    limiter.check().unwrap();
    let start = Instant::now();
    let waiter = tokio::spawn({
        let l = limiter.clone();
        async move { l.acquire().await.map(|()| start.elapsed()) }
    });
    tokio::time::sleep(10 * MS).await;
    // From 1/s to 10/s: the 0.99 request still owed (990 ms at 1/s) becomes 99 ms, counted
    // from 10 ms; without the wake-up the waiter would sleep until 1 s.
    limiter.set_rate(Quota::per_second(10));
    let at = waiter.await.unwrap().unwrap();
    assert!(at >= 109 * MS && at <= 110 * MS, "{at:?}");
}

#[tokio::test(start_paused = true)]
async fn check_does_not_jump_the_queue() {
    let limiter = tokio_limiter(10, 1).build();
    limiter.check().unwrap();
    let (_log, handles) = spawn_waiters(&limiter, 1).await;
    tokio::time::sleep(150 * MS).await;
    // The waiter took the 100 ms permit; at 150 ms the next is due at 200 ms.
    assert!(limiter.check().is_err());
    for h in handles {
        h.await.unwrap();
    }
    let (_log, handles) = spawn_waiters(&limiter, 1).await;
    assert!(limiter.check().is_err(), "a waiter is queued");
    assert!(limiter.peek().is_err());
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn acquire_n_waits_for_the_whole_cost_in_turn() {
    let limiter = tokio_limiter(10, 3).build();
    assert_eq!(limiter.acquire_n(nz(4)).unwrap_err().burst(), 3);
    limiter.acquire_n(nz(3)).unwrap().await.unwrap();
    let start = Instant::now();
    // Two permits are due 200 ms from now; a cost-1 waiter behind waits its turn (300 ms).
    let big = tokio::spawn({
        let l = limiter.clone();
        async move {
            l.acquire_n(nz(2)).unwrap().await.unwrap();
            start.elapsed()
        }
    });
    tokio::task::yield_now().await;
    let small = tokio::spawn({
        let l = limiter.clone();
        async move {
            l.acquire().await.unwrap();
            start.elapsed()
        }
    });
    let (big, small) = (big.await.unwrap(), small.await.unwrap());
    assert!(big >= 200 * MS && big <= 201 * MS, "{big:?}");
    assert!(small >= 300 * MS && small <= 301 * MS, "{small:?}");
}

#[tokio::test(start_paused = true)]
async fn a_pause_past_max_wait_fails_the_queue_at_once_and_refunds_do_not_shorten_it() {
    let limiter = tokio_limiter(10, 1)
        .max_wait(Duration::from_millis(500))
        .build();
    limiter.check().unwrap();
    let start = Instant::now();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let l = limiter.clone();
            tokio::spawn(async move { (l.acquire().await, start.elapsed()) })
        })
        .collect();
    tokio::task::yield_now().await;
    tokio::time::sleep(10 * MS).await;
    limiter.pause(Duration::from_secs(5));
    for w in waiters {
        let (result, at) = w.await.unwrap();
        assert!(result.is_err(), "a 5 s pause is past the 500 ms max wait");
        assert!(
            at <= 11 * MS,
            "refused at once, not at the old due time: {at:?}"
        );
    }
    limiter.refund(3);
    let left = limiter.check().unwrap_err().retry_after();
    assert!(left >= Duration::from_millis(4_980), "{left:?}");
}

/// Finding: an adaptive limiter forgave a late head up to 2% of its *wait*, and a wait can be
/// a whole pause (a `Retry-After`): the head that waited out a 1 s pause and woke 2 ms late was
/// admitted as of its due time, and the next permit came one interval after that due time, 8
/// ms after the head really went at 100 per second: closer than the upstream's own interval,
/// which a leaky bucket without burst refuses. The forgiveness is a share of the interval the
/// limiter paces at, whatever the wait.
#[tokio::test(start_paused = true)]
async fn a_late_wake_after_a_long_pause_never_brings_the_next_permit_too_close() {
    let limiter = tokio_limiter(100, 1).adaptive(Adaptive::new()).build();
    limiter.pause(Duration::from_secs(1));
    let (log, handles) = spawn_waiters(&limiter, 2).await;
    // The runtime is busy as the pause ends: the head's timer fires 2 ms late.
    tokio::time::advance(Duration::from_millis(1_002)).await;
    for h in handles {
        h.await.unwrap();
    }
    let log = log.lock().clone();
    let interval = Quota::per_second(100).burst(1).interval();
    assert!(
        log[1].1 - log[0].1 >= interval.mul_f64(0.98),
        "{log:?}: closer than the upstream's interval"
    );
}
