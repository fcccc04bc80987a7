//! The quota's response headers, added beside whatever other layers set.
//!
//! The rule every tollway layer follows: `RateLimit-Policy` and `RateLimit` members are
//! **appended** (never inserted over another layer's), each policy name is unique in the
//! response (a name already taken gets a `-2`, `-3`, ... suffix), a policy and its status carry
//! the same name, and `Retry-After` keeps the larger of an existing value and ours.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue};
use tollway_core::headers::{
    RATELIMIT, RATELIMIT_POLICY, RateLimitPolicy, RateLimitStatus, RetryAfter, format_retry_after,
};

use crate::snapshot::Snapshot;
use crate::window::Window;

/// The header that carries the credits a key has left.
pub const X_QUOTA_REMAINING: HeaderName = HeaderName::from_static("x-quota-remaining");

/// Adds `x-quota-remaining` and one `RateLimit-Policy` / `RateLimit` member per limit of
/// `snapshot` (named `base`, or `base-day`, `base-month`, ... when there are several).
pub(crate) fn add_quota_headers(
    headers: &mut HeaderMap,
    base: &str,
    snapshot: &Snapshot,
    now: i64,
) {
    if snapshot.remaining != u64::MAX {
        headers.insert(X_QUOTA_REMAINING, HeaderValue::from(snapshot.remaining));
    }
    if snapshot.windows.is_empty() {
        return;
    }
    let mut taken: HashSet<String> = RateLimitPolicy::from_headers(headers)
        .iter()
        .map(|p| p.name().to_owned())
        .chain(
            RateLimitStatus::from_headers(headers)
                .iter()
                .map(|s| s.name().to_owned()),
        )
        .collect();
    let several = snapshot.windows.len() > 1;
    let mut policies = Vec::with_capacity(snapshot.windows.len());
    let mut statuses = Vec::with_capacity(snapshot.windows.len());
    for usage in &snapshot.windows {
        let wanted = if several {
            format!("{base}-{}", usage.window.short_name())
        } else {
            base.to_owned()
        };
        let name = unique(&wanted, &mut taken);
        let remaining = if snapshot.latched { 0 } else { usage.remaining };
        let (Ok(policy), Ok(status)) = (
            RateLimitPolicy::new(name.clone(), usage.limit),
            RateLimitStatus::new(name, remaining),
        ) else {
            continue;
        };
        policies.push(match span(usage.window, now) {
            Some(span) => policy.with_window(span),
            None => policy,
        });
        let reset = snapshot.latched_for.or(usage.resets_in);
        statuses.push(match reset {
            Some(reset) => status.with_reset(reset),
            None => status,
        });
    }
    if !policies.is_empty() {
        headers.append(RATELIMIT_POLICY, RateLimitPolicy::header_value(&policies));
        headers.append(RATELIMIT, RateLimitStatus::header_value(&statuses));
    }
}

fn span(window: Window, now: i64) -> Option<Duration> {
    window.span_at(now)
}

/// `wanted`, or `wanted-2`, `wanted-3`, ... whichever is not taken yet; marks it taken.
fn unique(wanted: &str, taken: &mut HashSet<String>) -> String {
    let mut name = wanted.to_owned();
    let mut n = 2u32;
    while taken.contains(&name) {
        name = format!("{wanted}-{n}");
        n += 1;
    }
    taken.insert(name.clone());
    name
}

/// Sets `Retry-After` to `wait`, unless the response already asks for a longer one.
pub(crate) fn merge_retry_after(headers: &mut HeaderMap, wait: Duration) {
    if let Some(existing) = RetryAfter::from_headers(headers)
        && existing.delay_from(SystemTime::now()) >= wait
    {
        return;
    }
    headers.insert(RETRY_AFTER, format_retry_after(wait));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::WindowUsage;

    fn usage(window: Window, limit: u64, remaining: u64) -> WindowUsage {
        WindowUsage {
            window,
            limit,
            spent: limit - remaining,
            remaining,
            resets_in: Some(Duration::from_secs(90)),
        }
    }

    fn snapshot(windows: Vec<WindowUsage>) -> Snapshot {
        Snapshot {
            remaining: windows
                .iter()
                .map(|w| w.remaining)
                .min()
                .unwrap_or(u64::MAX),
            windows,
            reserved: 0,
            balance: None,
            latched: false,
            latched_for: None,
            critical_reserve: 0,
            epoch: None,
        }
    }

    #[test]
    fn members_are_appended_beside_another_layers_and_names_stay_unique() {
        let mut headers = HeaderMap::new();
        headers.insert(
            RATELIMIT_POLICY,
            HeaderValue::from_static("\"quota\";q=10;w=1"),
        );
        headers.insert(RATELIMIT, HeaderValue::from_static("\"quota\";r=3;t=1"));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        let snapshot = snapshot(vec![usage(Window::day(), 100, 40)]);
        add_quota_headers(&mut headers, "quota", &snapshot, 0);
        merge_retry_after(&mut headers, Duration::from_secs(30));
        let policies = RateLimitPolicy::from_headers(&headers);
        let statuses = RateLimitStatus::from_headers(&headers);
        let names: Vec<_> = policies.iter().map(RateLimitPolicy::name).collect();
        assert_eq!(
            names,
            ["quota", "quota-2"],
            "the inner layer's member is kept"
        );
        assert_eq!(
            statuses
                .iter()
                .map(RateLimitStatus::name)
                .collect::<Vec<_>>(),
            names,
            "each status is paired with its policy by name"
        );
        assert_eq!((policies[0].quota(), statuses[0].remaining()), (10, 3));
        assert_eq!((policies[1].quota(), statuses[1].remaining()), (100, 40));
        assert_eq!(policies[1].window(), Some(Duration::from_secs(86_400)));
        assert_eq!(headers[RETRY_AFTER], "120", "the longer wait wins");
        merge_retry_after(&mut headers, Duration::from_secs(600));
        assert_eq!(headers[RETRY_AFTER], "600");
        assert_eq!(headers[X_QUOTA_REMAINING], "40");
    }

    #[test]
    fn several_limits_get_one_member_each() {
        let mut headers = HeaderMap::new();
        let snapshot = snapshot(vec![
            usage(Window::day(), 100, 40),
            usage(Window::month(), 1_000, 700),
            usage(Window::lifetime(), 5_000, 4_000),
        ]);
        add_quota_headers(&mut headers, "quota", &snapshot, 0);
        let policies = RateLimitPolicy::from_headers(&headers);
        let names: Vec<_> = policies.iter().map(RateLimitPolicy::name).collect();
        assert_eq!(names, ["quota-day", "quota-month", "quota-lifetime"]);
        assert_eq!(policies[1].window(), Some(Duration::from_secs(31 * 86_400)));
        assert_eq!(policies[2].window(), None);
    }
}
