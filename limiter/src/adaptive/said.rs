//! What one response says about the upstream's limits: the policy to pace by, and the state of
//! each window it reports.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use tollway_core::headers::{RateLimitPolicy, RateLimitStatus, Reset, XRateLimit};

/// A limit the upstream states: `quota` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) quota: u64,
    pub(crate) window: Duration,
}

impl Policy {
    /// The policy's rate, in requests per second.
    pub(crate) fn per_second(&self) -> f64 {
        self.quota as f64 / self.window.as_secs_f64()
    }
}

/// One window's state on one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// The window's limit and length, when the upstream states them (or the limiter learned
    /// them).
    pub(crate) policy: Option<Policy>,
    /// Requests left in it.
    pub(crate) remaining: u64,
    /// How long until it resets, from the moment the response was read.
    pub(crate) reset: Option<Duration>,
}

/// The most windows and policies read from one response: a hostile upstream's thousands cost
/// no more than these.
const MOST_READ: usize = 16;

/// What the limiter learned of its upstream over many responses.
#[derive(Debug, Default)]
pub(crate) struct Learned {
    /// The legacy limit the window below belongs to.
    legacy_limit: u64,
    /// The longest legacy reset given in seconds from now for that limit, in whole seconds: a
    /// legacy window lasts at least that long. Zero until one was seen.
    legacy_window_secs: u64,
    /// The policy applied last: applied again only when the upstream states another.
    pub(crate) applied: Option<Policy>,
}

/// The legacy `X-RateLimit-*` fields of one response.
#[derive(Debug, Clone, Copy)]
struct Legacy {
    limit: Option<u64>,
    remaining: Option<u64>,
    /// The reset, from now.
    reset: Option<Duration>,
    /// The reset when it was given in seconds from now (a timestamp says nothing reliable about
    /// the window's length: the two clocks may disagree by seconds).
    reset_after: Option<Duration>,
}

/// What one response says, before it is read against what the limiter learned.
#[derive(Debug, Default)]
pub(crate) struct Said {
    /// The IETF policy with the shortest window: the one that paces.
    ietf_policy: Option<Policy>,
    ietf_windows: Vec<Window>,
    legacy: Option<Legacy>,
}

/// A response read against what the limiter learned.
#[derive(Debug, Default)]
pub(crate) struct Reading {
    /// The policy to pace by: the IETF one, else the legacy limit over the legacy window.
    pub(crate) policy: Option<Policy>,
    /// Every window the response reports.
    pub(crate) windows: Vec<Window>,
}

impl Said {
    /// Reads `headers` at wall-clock time `now`. Malformed fields count as absent; nothing
    /// here panics or overflows on any value.
    pub(crate) fn read(headers: &HeaderMap, now: SystemTime) -> Self {
        let mut policies = RateLimitPolicy::from_headers(headers);
        policies.truncate(MOST_READ);
        let ietf_windows = RateLimitStatus::from_headers(headers)
            .iter()
            .take(MOST_READ)
            .map(|status| Window {
                policy: policies
                    .iter()
                    .find(|p| p.name() == status.name())
                    .and_then(policy_of),
                remaining: status.remaining(),
                reset: status.reset(),
            })
            .collect();
        let ietf_policy = policies
            .iter()
            .filter_map(policy_of)
            .min_by_key(|p| (p.window, p.quota));
        let legacy = XRateLimit::from_headers(headers).map(|x| Legacy {
            limit: x.limit,
            remaining: x.remaining,
            reset: x.reset.map(|reset| reset.delay_from(now)),
            reset_after: match x.reset {
                Some(Reset::After(after)) => Some(after),
                _ => None,
            },
        });
        Self {
            ietf_policy,
            ietf_windows,
            legacy,
        }
    }

    /// Reads the response against `learned`, and learns from it: a legacy reset in seconds
    /// from now, up to `longest`, is a lower bound on the legacy window's length.
    pub(crate) fn against(self, learned: &mut Learned, longest: Duration) -> Reading {
        let mut windows = self.ietf_windows;
        let mut legacy_policy = None;
        if let Some(legacy) = self.legacy {
            // A new limit (a new plan) may come with a new window: learn it afresh, so that one
            // odd reset does not slow the limiter for good either.
            if let Some(limit) = legacy.limit
                && limit != learned.legacy_limit
            {
                learned.legacy_limit = limit;
                learned.legacy_window_secs = 0;
            }
            if legacy.limit.is_some()
                && let Some(after) = legacy.reset_after.filter(|&a| a <= longest)
            {
                let secs = whole_seconds_ceil(after).max(1);
                learned.legacy_window_secs = learned.legacy_window_secs.max(secs);
            }
            legacy_policy = legacy
                .limit
                .filter(|&limit| limit > 0 && learned.legacy_window_secs > 0)
                .map(|quota| Policy {
                    quota,
                    window: Duration::from_secs(learned.legacy_window_secs),
                });
            if let Some(remaining) = legacy.remaining {
                windows.push(Window {
                    policy: legacy_policy,
                    remaining,
                    reset: legacy.reset,
                });
            }
        }
        Reading {
            policy: self.ietf_policy.or(legacy_policy),
            windows,
        }
    }
}

/// A policy of requests with a quota and a window; other units (bytes, say) do not pace
/// requests.
fn policy_of(policy: &RateLimitPolicy) -> Option<Policy> {
    if policy.quota_units().is_some_and(|u| u != "requests") {
        return None;
    }
    let window = policy.window().filter(|w| !w.is_zero())?;
    (policy.quota() > 0).then_some(Policy {
        quota: policy.quota(),
        window,
    })
}

fn whole_seconds_ceil(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn read(pairs: &[(&'static str, &'static str)], learned: &mut Learned) -> Reading {
        Said::read(&headers(pairs), SystemTime::now()).against(learned, HOUR)
    }

    #[test]
    fn the_shortest_ietf_window_paces() {
        let mut learned = Learned::default();
        let reading = read(
            &[
                (
                    "ratelimit-policy",
                    "\"day\";q=1000;w=86400, \"sec\";q=11;w=1, \"bytes\";q=9;w=1;qu=\"content-bytes\"",
                ),
                ("ratelimit", "\"sec\";r=0;t=1, \"day\";r=7;t=500"),
            ],
            &mut learned,
        );
        let sec = Policy {
            quota: 11,
            window: Duration::from_secs(1),
        };
        assert_eq!(reading.policy, Some(sec));
        assert_eq!(
            reading.windows,
            [
                Window {
                    policy: Some(sec),
                    remaining: 0,
                    reset: Some(Duration::from_secs(1))
                },
                Window {
                    policy: Some(Policy {
                        quota: 1000,
                        window: Duration::from_secs(86_400)
                    }),
                    remaining: 7,
                    reset: Some(Duration::from_secs(500))
                }
            ]
        );
    }

    #[test]
    fn a_legacy_window_lasts_at_least_its_longest_reset() {
        let mut learned = Learned::default();
        // No reset seen yet: the limit alone says nothing about the window.
        let reading = read(&[("x-ratelimit-limit", "60")], &mut learned);
        assert_eq!(reading.policy, None);
        let reading = read(
            &[
                ("x-ratelimit-limit", "60"),
                ("x-ratelimit-remaining", "12"),
                ("x-ratelimit-reset", "20"),
            ],
            &mut learned,
        );
        assert_eq!(reading.policy.unwrap().window, Duration::from_secs(20));
        let reading = read(
            &[("x-ratelimit-limit", "60"), ("x-ratelimit-reset", "5")],
            &mut learned,
        );
        assert_eq!(
            reading.policy.unwrap().window,
            Duration::from_secs(20),
            "never shorter than a reset seen"
        );
        // Another limit is learned afresh: its window too.
        let reading = read(
            &[("x-ratelimit-limit", "100"), ("x-ratelimit-reset", "3")],
            &mut learned,
        );
        assert_eq!(reading.policy.unwrap().window, Duration::from_secs(3));
        // A timestamp (clocks may disagree) and a reset beyond the longest pause teach nothing.
        for reset in ["1999999999", "86400"] {
            let mut fresh = Learned::default();
            let pairs = [("x-ratelimit-limit", "60"), ("x-ratelimit-reset", reset)];
            let reading = Said::read(&headers(&pairs), SystemTime::now()).against(&mut fresh, HOUR);
            assert_eq!(reading.policy, None, "{reset}");
        }
    }

    #[test]
    fn a_flood_of_policies_reads_a_few() {
        let policies: Vec<String> = (1..=5_000).map(|i| format!("\"p{i}\";q={i};w=1")).collect();
        let statuses: Vec<String> = (1..=5_000).map(|i| format!("\"p{i}\";r=0;t=1")).collect();
        let mut map = HeaderMap::new();
        map.insert("ratelimit-policy", policies.join(", ").parse().unwrap());
        map.insert("ratelimit", statuses.join(", ").parse().unwrap());
        let reading = Said::read(&map, SystemTime::now()).against(&mut Learned::default(), HOUR);
        assert_eq!(reading.windows.len(), MOST_READ);
        assert_eq!(reading.policy.unwrap().quota, 1);
    }

    #[test]
    fn garbage_is_absent() {
        let mut learned = Learned::default();
        let reading = read(
            &[
                (
                    "ratelimit-policy",
                    "\"a\";q=0;w=1, \"b\";q=5;w=0, \"c\";q=5, ]]]",
                ),
                ("x-ratelimit-limit", "99999999999999999999999"),
                ("x-ratelimit-reset", "-3"),
            ],
            &mut learned,
        );
        assert_eq!(reading.policy, None);
        assert!(reading.windows.is_empty());
        let reading = read(
            &[
                (
                    "ratelimit-policy",
                    "\"a\";q=0;w=1, \"b\";q=5;w=0, \"c\";q=5",
                ),
                ("x-ratelimit-limit", "99999999999999999999999"),
                ("x-ratelimit-reset", "1"),
            ],
            &mut learned,
        );
        let policy = reading.policy.unwrap();
        assert_eq!(policy.quota, u64::MAX, "saturates, never overflows");
        assert!(policy.per_second().is_finite());
    }
}
