//! Which rate-limit headers responses carry ([`HeaderOptions`]), and writing them with core's
//! formatters: `Retry-After` rounded up, IETF `RateLimit-Policy` / `RateLimit`, legacy
//! `X-RateLimit-*`.

use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue};
use tollway_core::headers::{
    RATELIMIT, RATELIMIT_POLICY, RateLimitPolicy, RateLimitStatus, Reset, XRateLimit,
    format_retry_after, whole_seconds_ceil,
};

use crate::gcra::SlotView;
use crate::quota::Quota;

/// How `X-RateLimit-Reset` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetStyle {
    /// Seconds from now, rounded up (`X-RateLimit-Reset: 12`).
    #[default]
    SecondsFromNow,
    /// A unix timestamp in seconds, as seed 003's API writes it (`1620537960`).
    UnixTimestamp,
}

/// Which headers the server side writes; each is on or off.
///
/// Default: `Retry-After` on rejections, IETF `RateLimit-Policy` and `RateLimit` on every
/// response, legacy `X-RateLimit-*` off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderOptions {
    pub(crate) retry_after: bool,
    pub(crate) ietf: bool,
    pub(crate) legacy: bool,
    pub(crate) on_allowed: bool,
    pub(crate) reset_style: ResetStyle,
}

impl Default for HeaderOptions {
    fn default() -> Self {
        Self {
            retry_after: true,
            ietf: true,
            legacy: false,
            on_allowed: true,
            reset_style: ResetStyle::SecondsFromNow,
        }
    }
}

impl HeaderOptions {
    /// No rate-limit header at all (a rejection is then only its status and body).
    pub const fn none() -> Self {
        Self {
            retry_after: false,
            ietf: false,
            legacy: false,
            on_allowed: false,
            reset_style: ResetStyle::SecondsFromNow,
        }
    }

    /// Every header, on every response.
    pub const fn all() -> Self {
        Self {
            retry_after: true,
            ietf: true,
            legacy: true,
            on_allowed: true,
            reset_style: ResetStyle::SecondsFromNow,
        }
    }

    /// `Retry-After` on rejections, in whole seconds rounded up (a 300 ms wait is `1`).
    #[must_use]
    pub const fn retry_after(mut self, on: bool) -> Self {
        self.retry_after = on;
        self
    }

    /// IETF `RateLimit-Policy` and `RateLimit`, one member per policy.
    #[must_use]
    pub const fn ietf(mut self, on: bool) -> Self {
        self.ietf = on;
        self
    }

    /// Legacy `X-RateLimit-Limit`, `-Remaining` and `-Reset`, for the most restrictive policy.
    #[must_use]
    pub const fn legacy(mut self, on: bool) -> Self {
        self.legacy = on;
        self
    }

    /// Whether admitted responses carry the policy headers too (rejections always do when
    /// they are on).
    #[must_use]
    pub const fn on_allowed(mut self, on: bool) -> Self {
        self.on_allowed = on;
        self
    }

    /// How `X-RateLimit-Reset` is written.
    #[must_use]
    pub const fn reset_style(mut self, style: ResetStyle) -> Self {
        self.reset_style = style;
        self
    }

    /// Whether any policy header is written (so whether per-quota state must be read).
    pub(crate) const fn wants_state(&self) -> bool {
        self.ietf || self.legacy
    }
}

/// One named quota as clients are told about it.
#[derive(Debug, Clone)]
pub(crate) struct PolicyInfo {
    pub(crate) name: String,
    /// `q`: requests per window.
    pub(crate) advertised: u64,
    /// `w`: whole seconds.
    pub(crate) window: Duration,
}

impl PolicyInfo {
    /// A GCRA quota said as "`q` requests per `w` seconds": `w` is the time a bucket takes to
    /// fill from empty (at least one second), and `q` what the rate admits in it, never less
    /// than the burst.
    pub(crate) fn new(name: String, quota: Quota) -> Self {
        let interval = quota.interval().as_nanos().max(1);
        let fill = quota.interval().saturating_mul(quota.burst().get());
        let window = Duration::from_secs(whole_seconds_ceil(fill).max(1));
        let per_window = u64::try_from(window.as_nanos() / interval).unwrap_or(u64::MAX);
        Self {
            name,
            advertised: per_window.max(u64::from(quota.burst().get())),
            window,
        }
    }
}

/// The `RateLimit-Policy` value for `policies`.
pub(crate) fn policy_header(policies: &[&PolicyInfo]) -> HeaderValue {
    let policies: Vec<RateLimitPolicy> = policies
        .iter()
        .filter_map(|info| {
            RateLimitPolicy::new(info.name.clone(), info.advertised)
                .ok()
                .map(|p| p.with_window(info.window))
        })
        .collect();
    RateLimitPolicy::header_value(&policies)
}

/// Writes the policy headers for `states` (policy index and state), and `Retry-After` for a
/// rejection after `wait`. `all_policies` is the `RateLimit-Policy` value when every policy
/// applies, formatted once.
pub(crate) fn write(
    options: &HeaderOptions,
    headers: &mut HeaderMap,
    policies: &[PolicyInfo],
    all_policies: &HeaderValue,
    states: &[(usize, SlotView)],
    wait: Option<Duration>,
    wall_now: impl FnOnce() -> SystemTime,
) {
    if let (true, Some(wait)) = (options.retry_after, wait) {
        headers.insert(RETRY_AFTER, format_retry_after(wait));
    }
    let info = |index: usize| policies.get(index);
    if states.is_empty() {
        return;
    }
    if options.ietf {
        let every_policy =
            states.len() == policies.len() && states.iter().enumerate().all(|(i, &(p, _))| i == p);
        let policy_value = if every_policy {
            all_policies.clone()
        } else {
            let applied: Vec<&PolicyInfo> = states.iter().filter_map(|&(p, _)| info(p)).collect();
            policy_header(&applied)
        };
        let statuses: Vec<RateLimitStatus> = states
            .iter()
            .filter_map(|&(p, view)| {
                RateLimitStatus::new(info(p)?.name.clone(), view.available)
                    .ok()
                    .map(|r| r.with_reset(Duration::from_nanos(view.full_in)))
            })
            .collect();
        headers.insert(RATELIMIT_POLICY, policy_value);
        headers.insert(RATELIMIT, RateLimitStatus::header_value(&statuses));
    }
    if options.legacy {
        // The policy closest to refusing: least left, then longest to refill.
        let Some(&(tightest, view)) = states
            .iter()
            .min_by_key(|(_, v)| (v.available, std::cmp::Reverse(v.full_in)))
        else {
            return;
        };
        let Some(tightest) = info(tightest) else {
            return;
        };
        let until_full = Duration::from_nanos(view.full_in);
        let reset = match options.reset_style {
            ResetStyle::SecondsFromNow => Reset::After(until_full),
            ResetStyle::UnixTimestamp => Reset::At(wall_now() + until_full),
        };
        XRateLimit {
            limit: Some(tightest.advertised),
            remaining: Some(view.available),
            reset: Some(reset),
        }
        .write_to(headers);
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn advertised_policies() {
        let hourly = PolicyInfo::new(
            "hour".into(),
            Quota::per_hour(nz(1000)).with_burst(nz(1000)),
        );
        assert_eq!((hourly.advertised, hourly.window.as_secs()), (1000, 3600));
        let per_second = PolicyInfo::new("sec".into(), Quota::per_second(nz(10)));
        assert_eq!(
            (per_second.advertised, per_second.window.as_secs()),
            (10, 1)
        );
        let fifteen_min = Quota::per(Duration::from_secs(900), nz(100))
            .unwrap()
            .with_burst(nz(100));
        let seed_004 = PolicyInfo::new("ip".into(), fifteen_min);
        assert_eq!((seed_004.advertised, seed_004.window.as_secs()), (100, 900));
    }

    #[test]
    fn writes_every_family_rounded_up() {
        let info = PolicyInfo::new("burst".into(), Quota::per_second(nz(10)).with_burst(nz(5)));
        let quota = Quota::per_second(nz(10)).with_burst(nz(5));
        let view = SlotView {
            quota,
            available: 0,
            full_in: 300_000_000,
            wait: 300_000_000,
        };
        let mut headers = HeaderMap::new();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let policies = [info];
        let all = policy_header(&[&policies[0]]);
        let states = [(0, view)];
        write(
            &HeaderOptions::all(),
            &mut headers,
            &policies,
            &all,
            &states,
            Some(Duration::from_millis(300)),
            || wall,
        );
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(headers["ratelimit-policy"], r#""burst";q=10;w=1"#);
        assert_eq!(headers["ratelimit"], r#""burst";r=0;t=1"#);
        assert_eq!(headers["x-ratelimit-limit"], "10");
        assert_eq!(headers["x-ratelimit-remaining"], "0");
        assert_eq!(headers["x-ratelimit-reset"], "1");

        let mut headers = HeaderMap::new();
        let options = HeaderOptions::none()
            .legacy(true)
            .reset_style(ResetStyle::UnixTimestamp);
        write(
            &options,
            &mut headers,
            &policies,
            &all,
            &states,
            Some(Duration::from_secs(1)),
            || wall,
        );
        assert_eq!(headers["x-ratelimit-reset"], "1001");
        assert!(headers.get("retry-after").is_none());
        assert!(headers.get("ratelimit").is_none());
    }
}
