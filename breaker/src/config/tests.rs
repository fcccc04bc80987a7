use super::*;

#[test]
fn rejects_bad_settings() {
    let bad = [
        BreakerConfig::builder().consecutive_failures(0),
        BreakerConfig::builder().failure_rate(1.5),
        BreakerConfig::builder().failure_rate(0.0),
        BreakerConfig::builder().count_window(0),
        BreakerConfig::builder().time_window(4_000),
        BreakerConfig::builder().minimum_calls(0),
        BreakerConfig::builder().max_probes(0),
        BreakerConfig::builder().probes_to_close(5_000),
        BreakerConfig::builder().probe_timeout(Duration::ZERO),
        BreakerConfig::builder().slow_call_rate(Duration::ZERO, 0.5),
        BreakerConfig::builder().open_duration(OpenDuration::fixed(Duration::ZERO)),
        BreakerConfig::builder().open_duration(OpenDuration::exponential(
            Duration::from_secs(10),
            Duration::from_secs(1),
        )),
        BreakerConfig::builder().open_duration(
            OpenDuration::exponential(Duration::from_secs(1), Duration::from_secs(2))
                .with_jitter(2.0),
        ),
    ];
    for builder in bad {
        let err = builder.build().expect_err("invalid");
        assert!(!err.to_string().is_empty());
    }
    assert!(BreakerConfig::builder().build().is_ok());
}

#[test]
fn exponential_doubles_to_cap_and_jitter_only_shortens() {
    let open = OpenDuration::exponential(Duration::from_secs(1), Duration::from_secs(10));
    assert_eq!(open.nominal(1), Duration::from_secs(1));
    assert_eq!(open.nominal(2), Duration::from_secs(2));
    assert_eq!(open.nominal(4), Duration::from_secs(8));
    assert_eq!(open.nominal(5), Duration::from_secs(10));
    assert_eq!(open.nominal(u32::MAX), Duration::from_secs(10));
    let rng = JitterRng::seeded(3);
    for trip in 1..8 {
        let d = open.for_trip(trip, &rng);
        assert!(d <= open.nominal(trip));
        assert!(d >= open.nominal(trip).mul_f64(0.9));
    }
    let fixed = OpenDuration::fixed(Duration::from_secs(3)).with_jitter(0.5);
    assert_eq!(fixed.for_trip(7, &rng), Duration::from_secs(3));
}

#[test]
fn jitter_is_reproducible_with_a_seeded_rng() {
    let open =
        OpenDuration::exponential(Duration::from_secs(1), Duration::from_secs(60)).with_jitter(0.5);
    let draws = |seed| {
        let rng = JitterRng::seeded(seed);
        (1..6).map(|t| open.for_trip(t, &rng)).collect::<Vec<_>>()
    };
    assert_eq!(draws(9), draws(9));
    assert_ne!(draws(9), draws(10));
}

#[test]
fn default_predicate_counts_upstream_failures_only() {
    use tollway_core::OutcomeKind;
    let config = BreakerConfig::default();
    for kind in [
        OutcomeKind::ServerError,
        OutcomeKind::Timeout,
        OutcomeKind::Transport,
    ] {
        assert!(config.is_failure(&Outcome::new(kind)));
    }
    for kind in [
        OutcomeKind::Success,
        OutcomeKind::RateLimited,
        OutcomeKind::CreditsExhausted,
        OutcomeKind::ClientError,
        OutcomeKind::Rejected,
    ] {
        assert!(!config.is_failure(&Outcome::new(kind)));
    }
}
