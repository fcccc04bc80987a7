//! The rate limits the simulator can enforce per key ([`WindowKind`]), each as real limiters
//! count: a sliding log, a fixed window aligned to the wall-clock second, a token bucket with a
//! burst, and a leaky bucket with no burst that counts refused requests too.
//!
//! Each is exact and uses no tollway code: the simulator judges the client with it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

use super::window::SlidingWindow;

/// The length of the rate window: rates are per second.
const SECOND: Duration = Duration::from_secs(1);

/// How the simulator counts a key's requests against its rate `R` (per second).
///
/// Written and read as `sliding`, `fixed`, `token-bucket[:BURST]` and
/// `leaky-bucket[:TOLERANCE_MS]` (the upstream binary's `--window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WindowKind {
    /// At most `R` admitted in any one-second window, however placed: an exact log of
    /// admission times (the default). `X-RateLimit-Reset` is the seconds until the window is
    /// empty.
    SlidingLog,
    /// At most `R` admitted in each wall-clock second (`[k, k+1)` of unix time), counted afresh
    /// at every second. `X-RateLimit-Reset` is the unix time (seconds) the window ends.
    FixedWindow,
    /// A bucket of `burst` tokens, refilled at `R` per second, full at the start; a request
    /// takes one. `X-RateLimit-Limit` is the burst, `-Remaining` the whole tokens left, `-Reset`
    /// the seconds until the bucket is full.
    TokenBucket {
        /// The bucket's size: the most requests at once.
        burst: u32,
    },
    /// One request per `1/R`, with no burst: a request may come `tolerance` early (the leeway
    /// a meter gives for jitter, always less than `1/R`, so no two ever pass back to back).
    /// Every request counts, **refused ones too**: a client that sends early is pushed back
    /// one interval more each time (for a second at most). `X-RateLimit-Reset` is the seconds
    /// until the bucket has drained.
    LeakyBucket {
        /// How early a request may arrive.
        tolerance: Duration,
    },
}

impl WindowKind {
    /// The default burst of [`TokenBucket`](Self::TokenBucket) for `rate`: two seconds' worth.
    pub fn token_bucket(rate: u32) -> Self {
        Self::TokenBucket {
            burst: rate.saturating_mul(2).max(1),
        }
    }

    /// [`LeakyBucket`](Self::LeakyBucket) with the default tolerance of 20 ms.
    pub const fn leaky_bucket() -> Self {
        Self::LeakyBucket {
            tolerance: Duration::from_millis(20),
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SlidingLog => f.write_str("sliding"),
            Self::FixedWindow => f.write_str("fixed"),
            Self::TokenBucket { burst } => write!(f, "token-bucket:{burst}"),
            Self::LeakyBucket { tolerance } => {
                write!(f, "leaky-bucket:{}", tolerance.as_millis())
            }
        }
    }
}

/// Why a [`WindowKind`] could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseWindowKindError(String);

impl fmt::Display for ParseWindowKindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseWindowKindError {}

impl FromStr for WindowKind {
    type Err = ParseWindowKindError;

    /// `sliding`, `fixed`, `token-bucket[:BURST]` (default burst: twice the rate, decided when
    /// the simulator starts; `0` stands for it) or `leaky-bucket[:TOLERANCE_MS]` (default 20).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (name, arg) = match value.split_once(':') {
            Some((name, arg)) => (name, Some(arg)),
            None => (value, None),
        };
        let number = |what: &str| -> Result<Option<u64>, ParseWindowKindError> {
            arg.map(|a| {
                a.parse::<u64>()
                    .map_err(|e| ParseWindowKindError(format!("{name}: {what}: {e}")))
            })
            .transpose()
        };
        match name {
            "sliding" if arg.is_none() => Ok(Self::SlidingLog),
            "fixed" if arg.is_none() => Ok(Self::FixedWindow),
            "token-bucket" => {
                let burst = number("burst")?.unwrap_or(0);
                let burst = u32::try_from(burst)
                    .map_err(|_| ParseWindowKindError(format!("{name}: burst too large")))?;
                Ok(Self::TokenBucket { burst })
            }
            "leaky-bucket" => Ok(match number("tolerance in ms")? {
                Some(ms) => Self::LeakyBucket {
                    tolerance: Duration::from_millis(ms),
                },
                None => Self::leaky_bucket(),
            }),
            _ => Err(ParseWindowKindError(format!(
                "unknown window {value:?}: sliding, fixed, token-bucket[:BURST] or \
                 leaky-bucket[:TOLERANCE_MS]"
            ))),
        }
    }
}

/// The limit a key's answers report: `limit` requests per `window_secs` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) limit: u64,
    pub(crate) window_secs: u64,
}

/// A request a key's limit let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    /// How many more requests it would let in right now.
    pub(crate) remaining: u64,
    /// How long until it resets (empty, full, or the next window).
    pub(crate) reset: Duration,
    /// The unix time (seconds) it resets at, for a window aligned to the clock.
    pub(crate) reset_unix: Option<u64>,
    pub(crate) policy: Policy,
}

/// A request a key's limit turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// How long until a request would be let in.
    pub(crate) retry_after: Duration,
    /// How long until the limit resets.
    pub(crate) reset: Duration,
    /// The unix time (seconds) it resets at, for a window aligned to the clock.
    pub(crate) reset_unix: Option<u64>,
    pub(crate) policy: Policy,
}

/// One key's limit, of one [`WindowKind`].
#[derive(Debug, Clone)]
pub(crate) enum KeyLimit {
    Sliding(SlidingWindow),
    Fixed { second: u64, count: u64 },
    Token { tokens: f64, at: Instant },
    Leaky { tat: Instant },
}

impl KeyLimit {
    /// A fresh limit of `kind` at `now`: empty windows, a full bucket.
    pub(crate) fn new(kind: WindowKind, now: Instant) -> Self {
        match kind {
            WindowKind::SlidingLog => Self::Sliding(SlidingWindow::new(SECOND)),
            WindowKind::FixedWindow => Self::Fixed {
                second: 0,
                count: 0,
            },
            WindowKind::TokenBucket { burst } => Self::Token {
                tokens: f64::from(burst),
                at: now,
            },
            WindowKind::LeakyBucket { .. } => Self::Leaky { tat: now },
        }
    }

    /// Puts a request arriving at `now` (`unix` since the epoch on the wall clock) through the
    /// limit of `kind` at `rate` per second.
    pub(crate) fn try_admit(
        &mut self,
        kind: WindowKind,
        now: Instant,
        unix: Duration,
        rate: u32,
    ) -> Result<Admission, Rejection> {
        let per_second = Policy {
            limit: rate.into(),
            window_secs: 1,
        };
        match (self, kind) {
            (Self::Sliding(window), _) => match window.try_admit(now, rate) {
                Ok(admission) => Ok(Admission {
                    remaining: admission.remaining.into(),
                    reset: admission.reset,
                    reset_unix: None,
                    policy: per_second,
                }),
                Err(rejection) => Err(Rejection {
                    retry_after: rejection.retry_after,
                    reset: rejection.reset,
                    reset_unix: None,
                    policy: per_second,
                }),
            },
            (Self::Fixed { second, count }, _) => {
                let now_second = unix.as_secs();
                if *second != now_second {
                    (*second, *count) = (now_second, 0);
                }
                let end = Duration::from_secs(now_second + 1);
                let reset = end.saturating_sub(unix);
                let reset_unix = Some(now_second + 1);
                if *count >= u64::from(rate) {
                    return Err(Rejection {
                        retry_after: reset,
                        reset,
                        reset_unix,
                        policy: per_second,
                    });
                }
                *count += 1;
                Ok(Admission {
                    remaining: u64::from(rate) - *count,
                    reset,
                    reset_unix,
                    policy: per_second,
                })
            }
            (Self::Token { tokens, at }, WindowKind::TokenBucket { burst }) => {
                let size = f64::from(burst);
                let refill = f64::from(rate);
                *tokens =
                    (*tokens + now.saturating_duration_since(*at).as_secs_f64() * refill).min(size);
                *at = now.max(*at);
                let policy = Policy {
                    limit: burst.into(),
                    window_secs: u64::from(burst.div_ceil(rate.max(1))).max(1),
                };
                let until = |tokens: f64| Duration::from_secs_f64(tokens.max(0.0) / refill);
                if *tokens < 1.0 {
                    return Err(Rejection {
                        retry_after: until(1.0 - *tokens),
                        reset: until(size - *tokens),
                        reset_unix: None,
                        policy,
                    });
                }
                *tokens -= 1.0;
                Ok(Admission {
                    // At most `burst`, so the cast is exact.
                    remaining: tokens.floor() as u64,
                    reset: until(size - *tokens),
                    reset_unix: None,
                    policy,
                })
            }
            (Self::Leaky { tat }, WindowKind::LeakyBucket { tolerance }) => {
                let interval = SECOND / rate.max(1);
                // Less than one interval, or two requests could pass back to back.
                let tolerance = tolerance.min(interval / 2);
                let conforms = *tat <= now + tolerance;
                // Admitted or not, the request counts; a flood is pushed back a second at most.
                *tat = ((*tat).max(now) + interval).min(now + SECOND);
                let reset = tat.saturating_duration_since(now);
                if !conforms {
                    return Err(Rejection {
                        retry_after: tat.saturating_duration_since(now + tolerance),
                        reset,
                        reset_unix: None,
                        policy: per_second,
                    });
                }
                Ok(Admission {
                    remaining: u64::from(*tat <= now + tolerance),
                    reset,
                    reset_unix: None,
                    policy: per_second,
                })
            }
            // A limit is always built for the kind it is asked with.
            (limit, kind) => {
                *limit = Self::new(kind, now);
                limit.try_admit(kind, now, unix, rate)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const MS: Duration = Duration::from_millis(1);

    /// Sends `n` requests `every` apart through a limit of `kind` at 10/s, starting at unix
    /// time `unix0`; the statuses.
    async fn pattern(kind: WindowKind, n: usize, every: Duration, unix0: Duration) -> Vec<bool> {
        let start = Instant::now();
        let mut limit = KeyLimit::new(kind, start);
        let mut out = Vec::new();
        for _ in 0..n {
            let now = Instant::now();
            out.push(
                limit
                    .try_admit(kind, now, unix0 + (now - start), 10)
                    .is_ok(),
            );
            advance(every).await;
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_window_counts_afresh_at_each_wall_clock_second() {
        // Starting 950 ms into a second: 10 go, the 11th is refused, the next second is new.
        let unix0 = Duration::from_millis(1_000_000_950);
        let mut limit = KeyLimit::new(WindowKind::FixedWindow, Instant::now());
        let start = Instant::now();
        for k in 0..10 {
            let admission = limit
                .try_admit(WindowKind::FixedWindow, start, unix0, 10)
                .unwrap();
            assert_eq!(admission.remaining, 9 - k);
            assert_eq!(admission.reset, 50 * MS);
            assert_eq!(admission.reset_unix, Some(1_000_001));
        }
        let refused = limit
            .try_admit(WindowKind::FixedWindow, start, unix0, 10)
            .unwrap_err();
        assert_eq!(refused.retry_after, 50 * MS);
        advance(50 * MS).await;
        let later = unix0 + 50 * MS;
        assert!(
            limit
                .try_admit(WindowKind::FixedWindow, Instant::now(), later, 10)
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_bucket_allows_its_burst_then_its_rate() {
        let kind = WindowKind::TokenBucket { burst: 5 };
        let burst = pattern(kind, 7, Duration::ZERO, Duration::ZERO).await;
        assert_eq!(burst, [true, true, true, true, true, false, false]);
        // Paced at the rate, it never runs dry.
        let paced = pattern(kind, 50, 100 * MS, Duration::ZERO).await;
        assert!(paced.iter().all(|&ok| ok));
        let mut limit = KeyLimit::new(kind, Instant::now());
        let admission = limit
            .try_admit(kind, Instant::now(), Duration::ZERO, 10)
            .unwrap();
        assert_eq!((admission.remaining, admission.reset), (4, 100 * MS));
        assert_eq!(
            admission.policy,
            Policy {
                limit: 5,
                window_secs: 1
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leaky_bucket_has_no_burst_and_counts_refusals() {
        let kind = WindowKind::LeakyBucket { tolerance: 5 * MS };
        // Back to back: only the first.
        let burst = pattern(kind, 3, Duration::ZERO, Duration::ZERO).await;
        assert_eq!(burst, [true, false, false]);
        // At the rate, or up to the tolerance early: all of them.
        assert!(
            pattern(kind, 30, 100 * MS, Duration::ZERO)
                .await
                .iter()
                .all(|&ok| ok)
        );
        // 4 ms early each time: the tolerance is used up by the third.
        let early = pattern(kind, 30, 96 * MS, Duration::ZERO).await;
        assert!(!early.iter().all(|&ok| ok), "{early:?}");
        // A client that keeps sending early is refused every time: each refusal counts.
        let early = pattern(kind, 20, 90 * MS, Duration::ZERO).await;
        assert_eq!(early.iter().filter(|&&ok| ok).count(), 1, "{early:?}");
    }

    #[test]
    fn kinds_read_and_write() {
        for kind in [
            WindowKind::SlidingLog,
            WindowKind::FixedWindow,
            WindowKind::TokenBucket { burst: 22 },
            WindowKind::LeakyBucket { tolerance: 7 * MS },
        ] {
            assert_eq!(kind.to_string().parse::<WindowKind>(), Ok(kind));
        }
        assert_eq!("leaky-bucket".parse(), Ok(WindowKind::leaky_bucket()));
        assert_eq!(
            "token-bucket".parse(),
            Ok(WindowKind::TokenBucket { burst: 0 })
        );
        for bad in [
            "",
            "sliding:3",
            "token-bucket:x",
            "token-bucket:99999999999",
            "gcra",
        ] {
            assert!(bad.parse::<WindowKind>().is_err(), "{bad}");
        }
    }
}
