use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::structured::{self, Member, Param};
use super::{joined_values, whole_seconds_ceil};
use crate::HeaderError;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// One quota policy of a `RateLimit-Policy` field: `"burst";q=100;w=60`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitPolicy {
    name: String,
    quota: u64,
    window: Option<u64>,
    quota_units: Option<String>,
    partition_key: Option<Vec<u8>>,
}

impl RateLimitPolicy {
    /// A policy named `name` allowing `quota` units. The name must be visible ASCII or spaces.
    pub fn new(name: impl Into<String>, quota: u64) -> Result<Self, HeaderError> {
        let name = name.into();
        if !structured::is_valid_string(&name) {
            return Err(HeaderError::new(
                "ratelimit-policy",
                "name is not visible ASCII",
            ));
        }
        Ok(Self {
            name,
            quota,
            window: None,
            quota_units: None,
            partition_key: None,
        })
    }

    /// Sets the window (`w`), written in whole seconds rounded up.
    #[must_use]
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = Some(whole_seconds_ceil(window));
        self
    }

    /// Sets the quota units (`qu`, e.g. `"requests"` or `"content-bytes"`).
    pub fn with_quota_units(mut self, units: impl Into<String>) -> Result<Self, HeaderError> {
        let units = units.into();
        if !structured::is_valid_string(&units) {
            return Err(HeaderError::new(
                "ratelimit-policy",
                "qu is not visible ASCII",
            ));
        }
        self.quota_units = Some(units);
        Ok(self)
    }

    /// Sets the partition key (`pk`): raw bytes, written as a base64 byte sequence.
    #[must_use]
    pub fn with_partition_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Units allowed per window (`q`).
    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// The window length (`w`), if given.
    pub fn window(&self) -> Option<Duration> {
        self.window.map(Duration::from_secs)
    }

    /// The quota units (`qu`), if given; absent means requests.
    pub fn quota_units(&self) -> Option<&str> {
        self.quota_units.as_deref()
    }

    /// The partition key (`pk`), decoded, if given.
    pub fn partition_key(&self) -> Option<&[u8]> {
        self.partition_key.as_deref()
    }

    /// Parses a field value. The whole value is malformed if it is not a valid RFC 9651 List
    /// (invalid base64 in a byte sequence, say); a member that is not a named item, or has no
    /// non-negative `q`, is skipped, as the draft asks. Parameters the draft does not define
    /// (dates, display strings, anything) are accepted and ignored.
    pub fn parse(value: &[u8]) -> Result<Vec<Self>, HeaderError> {
        let members = structured::parse_list(value)
            .map_err(|reason| HeaderError::new("ratelimit-policy", reason))?;
        Ok(members.into_iter().filter_map(Self::from_member).collect())
    }

    /// The policies of every `RateLimit-Policy` header in `headers`; empty if absent or
    /// malformed.
    pub fn from_headers(headers: &HeaderMap) -> Vec<Self> {
        joined_values(headers, &RATELIMIT_POLICY)
            .and_then(|v| Self::parse(&v).ok())
            .unwrap_or_default()
    }

    fn from_member(member: Member) -> Option<Self> {
        Some(Self {
            quota: member.non_negative("q")?,
            window: member.non_negative("w"),
            quota_units: member.text("qu").filter(|u| structured::is_valid_string(u)),
            partition_key: member.bytes("pk"),
            name: member.name,
        })
    }

    /// Formats `policies` as one `RateLimit-Policy` field value.
    pub fn header_value(policies: &[Self]) -> HeaderValue {
        let mut writer = structured::Writer::new();
        for policy in policies {
            let mut params = vec![("q", Param::Integer(policy.quota))];
            if let Some(units) = &policy.quota_units {
                params.push(("qu", Param::String(units)));
            }
            if let Some(window) = policy.window {
                params.push(("w", Param::Integer(window)));
            }
            if let Some(pk) = &policy.partition_key {
                params.push(("pk", Param::Bytes(pk)));
            }
            writer.member(&policy.name, &params);
        }
        HeaderValue::try_from(writer.finish())
            .expect("names and units were validated as visible ASCII")
    }
}

/// The state of one policy in a `RateLimit` field: `"burst";r=50;t=30`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitStatus {
    name: String,
    remaining: u64,
    reset: Option<u64>,
    partition_key: Option<Vec<u8>>,
}

impl RateLimitStatus {
    /// The state of the policy `name` with `remaining` units left. The name must be visible ASCII.
    pub fn new(name: impl Into<String>, remaining: u64) -> Result<Self, HeaderError> {
        let name = name.into();
        if !structured::is_valid_string(&name) {
            return Err(HeaderError::new("ratelimit", "name is not visible ASCII"));
        }
        Ok(Self {
            name,
            remaining,
            reset: None,
            partition_key: None,
        })
    }

    /// Sets the time until the quota resets (`t`), written in whole seconds rounded up.
    #[must_use]
    pub fn with_reset(mut self, reset: Duration) -> Self {
        self.reset = Some(whole_seconds_ceil(reset));
        self
    }

    /// Sets the partition key (`pk`): raw bytes, written as a base64 byte sequence.
    #[must_use]
    pub fn with_partition_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Units left in the window (`r`).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Time until the quota resets (`t`), if given.
    pub fn reset(&self) -> Option<Duration> {
        self.reset.map(Duration::from_secs)
    }

    /// The partition key (`pk`), decoded, if given.
    pub fn partition_key(&self) -> Option<&[u8]> {
        self.partition_key.as_deref()
    }

    /// Parses a field value, with the rules of [`RateLimitPolicy::parse`]; members without a
    /// name or a non-negative `r` are skipped.
    pub fn parse(value: &[u8]) -> Result<Vec<Self>, HeaderError> {
        let members = structured::parse_list(value)
            .map_err(|reason| HeaderError::new("ratelimit", reason))?;
        Ok(members.into_iter().filter_map(Self::from_member).collect())
    }

    /// The states in every `RateLimit` header in `headers`; empty if absent or malformed.
    pub fn from_headers(headers: &HeaderMap) -> Vec<Self> {
        joined_values(headers, &RATELIMIT)
            .and_then(|v| Self::parse(&v).ok())
            .unwrap_or_default()
    }

    fn from_member(member: Member) -> Option<Self> {
        Some(Self {
            remaining: member.non_negative("r")?,
            reset: member.non_negative("t"),
            partition_key: member.bytes("pk"),
            name: member.name,
        })
    }

    /// Formats `states` as one `RateLimit` field value.
    pub fn header_value(states: &[Self]) -> HeaderValue {
        let mut writer = structured::Writer::new();
        for state in states {
            let mut params = vec![("r", Param::Integer(state.remaining))];
            if let Some(reset) = state.reset {
                params.push(("t", Param::Integer(reset)));
            }
            if let Some(pk) = &state.partition_key {
                params.push(("pk", Param::Bytes(pk)));
            }
            writer.member(&state.name, &params);
        }
        HeaderValue::try_from(writer.finish()).expect("names were validated as visible ASCII")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_examples() {
        let policies =
            RateLimitPolicy::parse(br#""burst";q=100;w=60,"daily";q=1000;w=86400"#).unwrap();
        assert_eq!(policies.len(), 2);
        assert_eq!(policies[0].name(), "burst");
        assert_eq!(policies[0].quota(), 100);
        assert_eq!(policies[0].window(), Some(Duration::from_secs(60)));
        let status = RateLimitStatus::parse(br#""burst";r=50;t=30"#).unwrap();
        assert_eq!(status[0].remaining(), 50);
        assert_eq!(status[0].reset(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn members_missing_required_parameters_are_skipped() {
        let policies = RateLimitPolicy::parse(br#""a";w=60, "b";q=-1, "c";q=5"#).unwrap();
        assert_eq!(policies.len(), 1);
        assert_eq!(policies[0].name(), "c");
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append(RATELIMIT, r#""second";r=0;t=1"#.parse().unwrap());
        headers.append(RATELIMIT, r#""hour";r=10;t=3000"#.parse().unwrap());
        assert_eq!(RateLimitStatus::from_headers(&headers).len(), 2);
    }

    #[test]
    fn formats_with_escapes_and_clamps() {
        let policy = RateLimitPolicy::new(r#"a"b\c"#, u64::MAX)
            .unwrap()
            .with_window(Duration::from_millis(1500));
        let value = RateLimitPolicy::header_value(&[policy]);
        assert_eq!(value, r#""a\"b\\c";q=999999999999999;w=2"#);
        assert!(RateLimitPolicy::new("tab\there", 1).is_err());
    }

    #[test]
    fn valid_fields_the_old_subset_dropped_keep_their_hint() {
        // An inner list, an `@date` and a `%"display"` parameter are valid RFC 9651: the
        // field parses and its policy still reports the used-up quota.
        let status = RateLimitStatus::parse(
            br#"("x" "y"), "burst";r=0;t=30;at=@1700000000;why=%"slow down""#,
        )
        .unwrap();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].remaining(), 0);
        assert_eq!(status[0].reset(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn invalid_base64_rejects_the_field() {
        assert!(RateLimitStatus::parse(br#""burst";r=0;t=30;pk=:a$b=:"#).is_err());
        assert!(RateLimitPolicy::parse(br#""burst";q=5;pk=:Y=Q=:"#).is_err());
        let ok = RateLimitPolicy::parse(br#""burst";q=5;pk=:YQ==:"#).unwrap();
        assert_eq!(ok[0].partition_key(), Some(&b"a"[..]));
    }

    #[test]
    fn partition_keys_are_bytes_both_ways() {
        let state = RateLimitStatus::new("s", 3)
            .unwrap()
            .with_partition_key(*b"\x01key");
        let value = RateLimitStatus::header_value(std::slice::from_ref(&state));
        assert_eq!(RateLimitStatus::parse(value.as_bytes()).unwrap(), [state]);
    }
}
