use super::*;

#[test]
fn defaults() {
    let args = Args::try_parse_from(["pipeline"]).unwrap();
    assert_eq!(args.rate, Rate::Auto);
    assert_eq!(args.users().len(), 20);
    assert_eq!(args.concurrency, DEFAULT_CONCURRENCY);
    assert_eq!(args.max_tries, DEFAULT_MAX_TRIES);
    assert!(args.cache_dir().ends_with(format!(
        "tollway-pipeline/simulator/run-{}",
        std::process::id()
    )));
    assert!(args.uses_run_cache_dir());
    assert!(args.check_available().is_ok());
}

#[test]
fn every_flag_parses() {
    let args = Args::try_parse_from([
        "pipeline",
        "--upstream",
        "http://127.0.0.1:9/",
        "--key",
        "k",
        "--users",
        "1,2, 3",
        "--rate",
        "7",
        "--concurrency",
        "3",
        "--budget",
        "40",
        "--report",
        "r.json",
        "--naive",
        "--deadline",
        "2.5",
        "--max-tries",
        "2",
    ])
    .unwrap();
    assert_eq!(args.users(), ["1", "2", "3"]);
    assert_eq!(args.rate, Rate::Fixed(NonZeroU32::new(7).unwrap()));
    assert_eq!(args.key(), "k");
    assert!(args.cache_dir().ends_with("tollway-pipeline/127.0.0.1_9"));
    let config = args.config("http://127.0.0.1:9", NonZeroU32::new(7).unwrap());
    assert_eq!(config.budget, Some(40));
    assert_eq!(config.concurrency, 3);
    assert_eq!(config.max_tries, 2);
    assert_eq!(config.deadline, Some(Duration::from_millis(2500)));
    assert!(args.naive);
}

#[test]
fn bad_values_are_refused() {
    for bad in [
        &["pipeline", "--rate", "0"][..],
        &["pipeline", "--rate", "fast"],
        &["pipeline", "--concurrency", "0"],
        &["pipeline", "--users", "1,,2"],
        &["pipeline", "--deadline", "-1"],
        &["pipeline", "--max-tries", "0"],
    ] {
        assert!(Args::try_parse_from(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn fleet_mode_needs_an_upstream_and_a_redis_url() {
    let fleet = ["pipeline", "--upstream", "http://127.0.0.1:9"];
    let args = Args::try_parse_from([&fleet[..], &["--redis", "redis://127.0.0.1:6379/"]].concat())
        .unwrap();
    assert!(args.check_available().is_ok());
    assert_eq!(args.redis.as_deref(), Some("redis://127.0.0.1:6379/"));
    // The flag does not touch the rest of the configuration: the fleet is connected later.
    let config = args.config("http://127.0.0.1:9", NonZeroU32::new(7).unwrap());
    assert!(config.fleet.is_none());

    let args = Args::try_parse_from([&fleet[..], &["--redis", "http://x"]].concat()).unwrap();
    assert!(
        args.check_available()
            .unwrap_err()
            .starts_with("--redis: not a Redis URL: "),
        "{:?}",
        args.check_available()
    );
    let args = Args::try_parse_from(["pipeline", "--redis", "redis://x"]).unwrap();
    assert!(
        args.check_available()
            .unwrap_err()
            .starts_with("--redis needs --upstream")
    );
    let args =
        Args::try_parse_from([&fleet[..], &["--redis", "redis://x", "--naive"]].concat()).unwrap();
    assert!(args.check_available().unwrap_err().contains("--naive"));
    for error in [
        Args::try_parse_from(["pipeline", "--redis", "redis://x"]).unwrap(),
        Args::try_parse_from([&fleet[..], &["--redis", "nope"]].concat()).unwrap(),
    ]
    .map(|args| args.check_available().unwrap_err())
    {
        assert!(!error.contains('\n'), "{error}");
    }
}

#[test]
fn the_upstream_must_be_plain_http() {
    let args = Args::try_parse_from(["pipeline", "--upstream", "https://x"]).unwrap();
    assert!(args.check_available().unwrap_err().contains("http://"));
    let args = Args::try_parse_from(["pipeline", "--metrics", "127.0.0.1:9000"]).unwrap();
    assert!(args.check_available().is_ok());
    assert_eq!(args.metrics.as_deref(), Some("127.0.0.1:9000"));
}

#[test]
fn the_limits_of_a_run_parse() {
    let args = Args::try_parse_from(["pipeline"]).unwrap();
    assert_eq!(args.max_wait, Duration::from_secs(60));
    assert_eq!(args.request_timeout, Duration::from_secs(20));
    assert_eq!(args.max_body, 4 << 20);
    assert_eq!((args.budget, args.budget_per_run), (None, None));
    let args = Args::try_parse_from([
        "pipeline",
        "--max-wait",
        "0.5",
        "--request-timeout",
        "3",
        "--max-body",
        "64KiB",
        "--budget",
        "30",
        "--budget-per-run",
        "5",
        "--progress-every",
        "0.25",
    ])
    .unwrap();
    let config = args.config("http://127.0.0.1:9", NonZeroU32::new(7).unwrap());
    assert_eq!(config.max_wait, Duration::from_millis(500));
    assert_eq!(config.request_timeout, Duration::from_secs(3));
    assert_eq!(config.max_body, 65_536);
    assert_eq!((config.budget, config.budget_per_run), (Some(30), Some(5)));
    assert_eq!(args.progress_every, Duration::from_millis(250));
    for (size, bytes) in [
        ("1", 1),
        ("2K", 2048),
        ("3M", 3 << 20),
        ("1GiB", 1 << 30),
        ("7B", 7),
    ] {
        assert_eq!(super::bytes(size), Ok(bytes), "{size}");
    }
}
