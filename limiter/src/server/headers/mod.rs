//! Which rate-limit headers responses carry ([`HeaderOptions`]), and writing them:
//! `Retry-After` rounded up, IETF `RateLimit-Policy` / `RateLimit`, legacy `X-RateLimit-*`.
//!
//! Other layers (the budget's quota layer, the application) may have written the same fields.
//! The rule every tollway layer follows: **append** its own `RateLimit-Policy` and `RateLimit`
//! members as new field lines (never replace the field), each policy name once, its status
//! paired with its policy by name; keep the larger `Retry-After`; keep the legacy set of the
//! policy with the least left.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue};
use tollway_core::headers::{
    RATELIMIT, RATELIMIT_POLICY, RateLimitPolicy, RateLimitStatus, RetryAfter, X_RATELIMIT_LIMIT,
    X_RATELIMIT_REMAINING, X_RATELIMIT_RESET, XRateLimit, format_retry_after, whole_seconds_ceil,
};

use super::error::InvalidPolicy;
use crate::gcra::SlotView;
use crate::quota::Quota;

/// How `X-RateLimit-Reset` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetStyle {
    /// Seconds from now, rounded up (`X-RateLimit-Reset: 12`).
    #[default]
    SecondsFromNow,
    /// A unix timestamp in seconds, as some APIs write it (`1620537960`).
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

/// One named quota as clients are told about it, with its header fragments formatted once.
#[derive(Debug, Clone)]
pub(crate) struct PolicyInfo {
    pub(crate) name: String,
    /// `q`: requests per window.
    pub(crate) advertised: u64,
    /// Its `RateLimit-Policy` member: `"name";q=100;w=60`.
    member: String,
    /// Its name as a structured-field string: `"name"`.
    quoted: String,
    /// `X-RateLimit-Limit`.
    limit: HeaderValue,
}

impl PolicyInfo {
    /// A GCRA quota said as "`q` requests per `w` seconds": `w` is the time a bucket takes to
    /// fill from empty (at least one second), and `q` what the rate admits in it, never less
    /// than the burst. Fails if `name` cannot be written in a header.
    pub(crate) fn new(name: String, quota: Quota) -> Result<Self, InvalidPolicy> {
        let interval = quota.interval().as_nanos().max(1);
        let fill = quota.interval().saturating_mul(quota.burst());
        let window = Duration::from_secs(whole_seconds_ceil(fill).max(1));
        let per_window = u64::try_from(window.as_nanos() / interval).unwrap_or(u64::MAX);
        let advertised = per_window.max(u64::from(quota.burst()));
        let invalid = |_| InvalidPolicy::new(&name, "the name is not visible ASCII");
        let policy = RateLimitPolicy::new(name.clone(), advertised).map_err(invalid)?;
        let member = value_text(&RateLimitPolicy::header_value(
            &[policy.with_window(window)],
        ));
        let status = RateLimitStatus::new(name.clone(), 0).map_err(invalid)?;
        let status = value_text(&RateLimitStatus::header_value(&[status]));
        let quoted = status.strip_suffix(";r=0").unwrap_or(&status).to_owned();
        Ok(Self {
            name,
            advertised,
            member,
            quoted,
            limit: HeaderValue::from(advertised),
        })
    }
}

fn value_text(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// Writes the policy headers for `states` (policy index and state), and `Retry-After` for a
/// rejection after `wait`, next to whatever another layer already wrote (see the module docs).
pub(crate) fn write(
    options: &HeaderOptions,
    headers: &mut HeaderMap,
    policies: &[PolicyInfo],
    states: &[(usize, SlotView)],
    wait: Option<Duration>,
    wall_now: impl Fn() -> SystemTime,
) {
    if let (true, Some(wait)) = (options.retry_after, wait) {
        merge_retry_after(headers, wait, &wall_now);
    }
    if states.is_empty() {
        return;
    }
    if options.ietf {
        write_ietf(headers, policies, states);
    }
    if options.legacy {
        write_legacy(options, headers, policies, states, &wall_now);
    }
}

/// `Retry-After`: the larger of an existing value and `wait`.
fn merge_retry_after(headers: &mut HeaderMap, wait: Duration, wall_now: &impl Fn() -> SystemTime) {
    if let Some(existing) = RetryAfter::from_headers(headers)
        && existing.delay_from(wall_now()) >= wait
    {
        return;
    }
    headers.insert(RETRY_AFTER, format_retry_after(wait));
}

/// Appends this layer's `RateLimit-Policy` and `RateLimit` members as new field lines. A
/// policy whose name another layer already wrote (in either field) is left out, so every name
/// appears once and its status sits next to its own policy.
fn write_ietf(headers: &mut HeaderMap, policies: &[PolicyInfo], states: &[(usize, SlotView)]) {
    let taken = existing_names(headers);
    let mut policy_line = String::new();
    let mut status_line = String::new();
    for &(index, view) in states {
        let Some(info) = policies.get(index) else {
            continue;
        };
        if taken.contains(&info.name) {
            tracing::debug!(policy = %info.name, "another layer already reports this policy");
            continue;
        }
        if !policy_line.is_empty() {
            policy_line.push_str(", ");
            status_line.push_str(", ");
        }
        policy_line.push_str(&info.member);
        status_line.push_str(&info.quoted);
        let reset = whole_seconds_ceil(Duration::from_nanos(view.full_in));
        // Writing to a String cannot fail.
        let _ = write!(status_line, ";r={};t={reset}", view.available);
    }
    if let (Ok(policy), Ok(status)) = (
        HeaderValue::try_from(policy_line),
        HeaderValue::try_from(status_line),
    ) && !policy.is_empty()
    {
        headers.append(RATELIMIT_POLICY, policy);
        headers.append(RATELIMIT, status);
    }
}

/// The policy names other layers already wrote.
fn existing_names(headers: &HeaderMap) -> Vec<String> {
    if !headers.contains_key(RATELIMIT_POLICY) && !headers.contains_key(RATELIMIT) {
        return Vec::new();
    }
    let policies = RateLimitPolicy::from_headers(headers);
    let statuses = RateLimitStatus::from_headers(headers);
    policies
        .iter()
        .map(|p| p.name().to_owned())
        .chain(statuses.iter().map(|s| s.name().to_owned()))
        .collect()
}

/// Legacy `X-RateLimit-*` for the policy closest to refusing; an existing set from another
/// layer stays unless this one has less left.
fn write_legacy(
    options: &HeaderOptions,
    headers: &mut HeaderMap,
    policies: &[PolicyInfo],
    states: &[(usize, SlotView)],
    wall_now: &impl Fn() -> SystemTime,
) {
    // The policy closest to refusing: least left, then longest to refill.
    let Some(&(tightest, view)) = states
        .iter()
        .min_by_key(|(_, v)| (v.available, std::cmp::Reverse(v.full_in)))
    else {
        return;
    };
    let Some(info) = policies.get(tightest) else {
        return;
    };
    if let Some(existing) = XRateLimit::from_headers(headers).and_then(|x| x.remaining)
        && existing <= view.available
    {
        return;
    }
    let until_full = Duration::from_nanos(view.full_in);
    let reset = match options.reset_style {
        ResetStyle::SecondsFromNow => whole_seconds_ceil(until_full),
        ResetStyle::UnixTimestamp => whole_seconds_ceil(
            (wall_now() + until_full)
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        ),
    };
    headers.insert(X_RATELIMIT_LIMIT, info.limit.clone());
    headers.insert(X_RATELIMIT_REMAINING, small_number(view.available));
    headers.insert(X_RATELIMIT_RESET, small_number(reset));
}

/// A number as a header value; the small ones (the usual remaining counts and resets) are
/// formatted once per process and shared.
fn small_number(n: u64) -> HeaderValue {
    const CACHED: usize = 1_024;
    static SMALL: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    match usize::try_from(n) {
        Ok(i) if i < CACHED => {
            SMALL.get_or_init(|| (0..CACHED as u64).map(HeaderValue::from).collect())[i].clone()
        }
        _ => HeaderValue::from(n),
    }
}

#[cfg(test)]
mod tests;
