use super::*;

fn info(name: &str, quota: Quota) -> PolicyInfo {
    PolicyInfo::new(name.into(), quota).unwrap()
}

#[test]
fn advertised_policies() {
    let hourly = info("hour", Quota::per_hour(1000).burst(1000));
    assert_eq!(hourly.member, r#""hour";q=1000;w=3600"#);
    let per_second = info("sec", Quota::per_second(10).burst(1));
    assert_eq!(per_second.member, r#""sec";q=10;w=1"#);
    let fifteen_min = info("ip", Quota::per(100, Duration::from_secs(900)).burst(100));
    assert_eq!(fifteen_min.member, r#""ip";q=100;w=900"#);
    assert!(PolicyInfo::new("bad\u{7f}".into(), Quota::per_second(1).burst(1)).is_err());
}

fn burst_state() -> ([PolicyInfo; 1], [(usize, SlotView); 1]) {
    let view = SlotView {
        available: 0,
        full_in: 300_000_000,
        wait: 300_000_000,
    };
    ([info("burst", Quota::per_second(10).burst(5))], [(0, view)])
}

#[test]
fn writes_every_family_rounded_up() {
    let (policies, states) = burst_state();
    let mut headers = HeaderMap::new();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let options = HeaderOptions::all();
    let wait = Some(Duration::from_millis(300));
    write(&options, &mut headers, &policies, &states, wait, || wall);
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
    let wait = Some(Duration::from_secs(1));
    write(&options, &mut headers, &policies, &states, wait, || wall);
    assert_eq!(headers["x-ratelimit-reset"], "1001");
    assert!(headers.get("retry-after").is_none());
    assert!(headers.get("ratelimit").is_none());
}

/// Rename-issue item 2: another layer's members stay, ours are appended, a name is never
/// reported twice, and the larger `Retry-After` wins.
#[test]
fn another_layers_headers_keep_their_members() {
    let (policies, states) = burst_state();
    let mut headers = HeaderMap::new();
    headers.insert(
        RATELIMIT_POLICY,
        HeaderValue::from_static(r#""quota";q=1000;w=86400"#),
    );
    headers.insert(
        RATELIMIT,
        HeaderValue::from_static(r#""quota";r=12;t=3600"#),
    );
    headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
    let wall = SystemTime::UNIX_EPOCH;
    let wait = Some(Duration::from_secs(3));
    write(
        &HeaderOptions::all(),
        &mut headers,
        &policies,
        &states,
        wait,
        || wall,
    );
    fn names(headers: &HeaderMap) -> (Vec<String>, Vec<String>) {
        let policies = RateLimitPolicy::from_headers(headers);
        let statuses = RateLimitStatus::from_headers(headers);
        (
            policies.iter().map(|p| p.name().to_owned()).collect(),
            statuses.iter().map(|s| s.name().to_owned()).collect(),
        )
    }
    let both = |list: [&str; 2]| {
        (
            list.map(String::from).to_vec(),
            list.map(String::from).to_vec(),
        )
    };
    assert_eq!(names(&headers), both(["quota", "burst"]));
    assert_eq!(headers["retry-after"], "120", "the larger wait stays");

    // Written twice (two layers with the same name): reported once.
    write(
        &HeaderOptions::all(),
        &mut headers,
        &policies,
        &states,
        None,
        || wall,
    );
    assert_eq!(names(&headers), both(["quota", "burst"]));
    // A shorter existing Retry-After gives way to ours.
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    write(
        &HeaderOptions::all(),
        &mut headers,
        &policies,
        &states,
        wait,
        || wall,
    );
    assert_eq!(headers["retry-after"], "3");
}

#[test]
fn legacy_headers_of_another_layer_stay_unless_ours_have_less_left() {
    let (policies, states) = burst_state();
    let mut headers = HeaderMap::new();
    headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from_static("0"));
    headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from_static("7"));
    let legacy = HeaderOptions::none().legacy(true);
    write(
        &legacy,
        &mut headers,
        &policies,
        &states,
        None,
        SystemTime::now,
    );
    assert_eq!(headers["x-ratelimit-limit"], "7");
    headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from_static("9"));
    write(
        &legacy,
        &mut headers,
        &policies,
        &states,
        None,
        SystemTime::now,
    );
    assert_eq!(headers["x-ratelimit-limit"], "10");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
}
