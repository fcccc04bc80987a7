//! The pipeline demo: fetch every follower page of a list of users, the production way.
//!
//! Run with `cargo run --release -p tollway-examples --bin pipeline` (add `-- --help` for the
//! flags). With no `--upstream` it starts the upstream simulator in-process. It shows progress on
//! stderr (a bar on a terminal, plain lines otherwise) with log lines above it (`RUST_LOG`
//! changes what is logged), prints the report as a table on stdout, and exits with status 0
//! when every user was either crawled or failed for a permanent reason (404); otherwise it
//! prints a one-line reason on stderr and exits with status 1 (2 for a usage error).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program: the table and the reasons are its output"
)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::time::Instant;
use tollway_examples::pipeline::cli::{Args, Rate, embedded_simulator};
use tollway_examples::pipeline::{self, Fleet, LogWriter, Report, StopReason};
use tracing_subscriber::EnvFilter;

/// What is logged unless `RUST_LOG` says otherwise: the pipeline's waits and dead letters, and
/// the layers' warnings.
const DEFAULT_LOG: &str = "warn,tollway_examples=info";

#[tokio::main]
async fn main() -> ExitCode {
    let started = Instant::now();
    let args = Args::parse();
    if let Err(reason) = args.check_available() {
        eprintln!("pipeline: {reason}");
        return ExitCode::from(2);
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_target(false)
        .without_time()
        .compact()
        .init();
    match drive(&args, started).await {
        Ok(code) => code,
        Err(reason) => {
            eprintln!("pipeline: {reason}");
            ExitCode::FAILURE
        }
    }
}

async fn drive(args: &Args, started: Instant) -> Result<ExitCode, String> {
    // The deadline counts from the start: asking the API for its rate is part of the run.
    let deadline = args.deadline.map(|after| {
        let at = started.checked_add(after);
        (after, at)
    });
    let out_of_time = |after: Duration| format!("stopped: {}", StopReason::Deadline(after));
    let simulator = match &args.upstream {
        Some(_) => None,
        None => Some(
            embedded_simulator()
                .spawn()
                .await
                .map_err(|e| format!("cannot start the simulator: {e}"))?,
        ),
    };
    let base_url = match (&args.upstream, &simulator) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(sim)) => sim.url(),
        (None, None) => unreachable!("a simulator is started when no --upstream is given"),
    };
    let rate = match args.rate {
        Rate::Fixed(rate) => rate,
        Rate::Auto => {
            let key = args.key();
            let fetch = pipeline::fetch_rate(&base_url, &key);
            let fetched = match deadline {
                Some((after, Some(at))) => tokio::time::timeout_at(at, fetch)
                    .await
                    .map_err(|_| out_of_time(after))?,
                _ => fetch.await,
            };
            fetched.map_err(|e| format!("--rate auto: {e}"))?
        }
    };
    if let Some(addr) = &args.metrics {
        // Before the stack is built: layers register some metrics when they are made.
        let addr = pipeline::serve_metrics(addr)?;
        eprintln!("pipeline: metrics on http://{addr}/metrics");
    }
    let mut config = args.config(&base_url, rate);
    if let Some((after, at)) = deadline {
        // What is left of it; a deadline past the end of the clock is no deadline.
        config.deadline = at.map(|at| at.saturating_duration_since(Instant::now()));
        if config.deadline.is_none() {
            tracing::debug!(?after, "the deadline is past the end of the clock");
        }
    }
    if let Some(url) = &args.redis {
        let fleet = Fleet::connect(url, &base_url, &config.key)
            .await
            .map_err(|e| format!("--redis: {}", one_line(&e)))?;
        eprintln!(
            "pipeline: fleet mode: rate limit and budget shared in Redis under {}",
            fleet.prefix()
        );
        config.fleet = Some(fleet);
    }
    let cache_dir = config.cache_dir.clone();
    let run_dir = args.uses_run_cache_dir().then(|| cache_dir.clone());
    if let Some(dir) = &run_dir {
        // A folder left by a killed run that had our process id.
        let _ = std::fs::remove_dir_all(dir);
    }
    let what = if simulator.is_some() {
        "the in-process simulator at "
    } else {
        ""
    };
    eprintln!("pipeline: crawling {what}{base_url} ({rate} req/s)");
    if !args.naive {
        eprintln!("pipeline: journal in {}", cache_dir.display());
    }

    let line = config.progress.show_on_stderr(args.progress_every);
    let result = if args.naive {
        pipeline::naive::run(config).await
    } else {
        pipeline::crawl(config).await
    };
    drop(line);

    let (report, stopped) = match result {
        Ok(report) => (report, None),
        Err(stopped) => (stopped.report, Some(stopped.reason)),
    };
    println!("{}", report.table(rate.get()));
    if let Some(sim) = &simulator {
        let stats = sim.stats();
        println!(
            "simulator's record: {} requests, 429s: {}, credits charged: {}, duplicate page fetches: {}, busiest second: {}",
            stats.requests,
            stats.status(429),
            stats.credits_charged,
            stats.duplicate_page_fetches,
            stats.max_in_any_1s_window
        );
    }
    if let Some(dir) = &run_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if report.pages_from_journal > 0 && !args.naive && run_dir.is_none() {
        eprintln!(
            "pipeline: {} page(s) came from the journal; delete {} (or pass another --cache-dir) to crawl again",
            report.pages_from_journal,
            cache_dir.display()
        );
    }
    if report.cache_hits > 0 && !args.naive {
        eprintln!(
            "pipeline: {} answer(s) came from the response cache in {}",
            report.cache_hits,
            cache_dir.join(pipeline::CACHE_SUBDIR).display()
        );
    }
    if let Some(path) = &args.report {
        write_report(&report, path)?;
    }
    if let Some(reason) = stopped {
        eprintln!("pipeline: stopped: {reason}");
        return Ok(ExitCode::FAILURE);
    }
    if let Some(reason) = report.incomplete() {
        eprintln!("pipeline: {reason}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn one_line(error: &dyn std::error::Error) -> String {
    error
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn write_report(report: &Report, path: &std::path::Path) -> Result<(), String> {
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    // Whole or not at all: a reader never sees half a report.
    tollway_core::durable::write_atomic(path, (json + "\n").as_bytes())
        .map_err(|e| format!("--report {}: {e}", path.display()))
}
