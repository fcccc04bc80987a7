//! `kill -9` at random instants, hundreds of times: spend after a restart is never lower than
//! what was charged and never counts a reservation twice. Then again with the journal's file
//! size limited (`RLIMIT_FSIZE`), so that appends fail part-way through a record, as on a full
//! disk, and with the limit lifted part-way through most runs (space freed), so that appends
//! succeed again after a torn one.
//!
//! The test binary runs itself as the child (`crash_child`, selected by an environment
//! variable). The child's threads reserve, settle and refund on one file-backed ledger,
//! compacting often, and report each step on stdout only after the ledger call returned. The
//! parent kills the child with SIGKILL at a random moment, reopens the journal and checks the
//! spend against what the child reported. The seed is printed; `TOLLWAY_CRASH_SEED` replays it.
#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tollway_budget::store::FileStore;
use tollway_budget::{Ledger, Priority, Window};

const CHILD_ENV: &str = "TOLLWAY_BUDGET_CRASH_CHILD";
const THREADS: u64 = 4;
/// The most one reservation costs.
const MAX_COST: u64 = 3;
/// The journal's size limit in the fault runs: 24 whole records and part of a 25th. Between
/// compactions (every 37 records) the journal always outgrows it, so appends keep failing
/// part-way and the journal keeps being cut back and rewritten.
const FILE_LIMIT: u64 = 700;

fn open(path: &Path) -> Ledger<FileStore> {
    Ledger::builder()
        .limit(u64::MAX / 2, Window::lifetime())
        .compact_every(37)
        .open(path)
        .expect("journal opens")
}

/// The child role: does nothing unless the parent selected it.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let ledger = open(Path::new(&path));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let emit = move |out: &Mutex<std::io::Stdout>, what: &str, credits: u64| {
        let mut out = out.lock().unwrap();
        writeln!(out, "\nEV {what} {credits}").unwrap();
        out.flush().unwrap();
    };
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (ledger, out) = (ledger.clone(), Arc::clone(&out));
            std::thread::spawn(move || {
                for i in t.. {
                    let cost = 1 + i % MAX_COST;
                    let Ok(reservation) = ledger.reserve(cost, Priority::Normal) else {
                        emit(&out, "error", 0);
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    };
                    emit(&out, "reserved", cost);
                    if i % 4 == 0 {
                        drop(reservation);
                        emit(&out, "refunded", cost);
                    } else {
                        // Charges up to the cost (an over-charge is durable a moment later).
                        let charge = cost - i % 2;
                        reservation.settle(charge);
                        emit(&out, "settled", charge);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// What a child reported before it died.
#[derive(Debug, Default)]
struct Reported {
    reserved: u64,
    settled: u64,
    refunded: u64,
    errors: u64,
    events: u64,
}

impl Reported {
    fn add(&mut self, line: &str) {
        let Some((_, event)) = line.rsplit_once("EV ") else {
            return;
        };
        let Some((what, credits)) = event.split_once(' ') else {
            return;
        };
        let Ok(credits) = credits.trim().parse::<u64>() else {
            return; // a line cut by the kill
        };
        match what {
            "reserved" => self.reserved += credits,
            "settled" => self.settled += credits,
            "refunded" => self.refunded += credits,
            "error" => self.errors += 1,
            _ => return,
        }
        self.events += 1;
    }
}

/// Runs the child until it has reported something, lets it run a random while longer, kills it.
fn run_and_kill(path: &Path, file_limit: Option<u64>, rng: &mut StdRng) -> Reported {
    let exe = std::env::current_exe().unwrap();
    let args = ["crash_child", "--exact", "--nocapture", "--test-threads=1"];
    let mut command = match file_limit {
        None => Command::new(&exe),
        Some(limit) => {
            // SIGXFSZ ignored (inherited across exec): writes past the limit fail with EFBIG,
            // after writing what fits, instead of killing the child.
            let mut command = Command::new("bash");
            command
                .arg("-c")
                .arg("trap '' XFSZ; exec prlimit --fsize=\"$0\":unlimited -- \"$@\"")
                .arg(limit.to_string())
                .arg(&exe);
            command
        }
    };
    let stderr_path = path.with_extension("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut child = command
        .args(args)
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Reported::default()));
    let reader = {
        let lines = Arc::clone(&lines);
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().add(&line);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines.lock().unwrap().events == 0 {
        if Instant::now() > deadline {
            let _ = child.kill();
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("the child never got going:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_micros(rng.random_range(0..15_000)));
    if file_limit.is_some() && rng.random_bool(0.75) {
        // The disk has room again: later appends succeed, after whatever tore before.
        let lifted = Command::new("prlimit")
            .arg(format!("--pid={}", child.id()))
            .arg("--fsize=unlimited")
            .status()
            .unwrap();
        assert!(lifted.success());
        std::thread::sleep(Duration::from_micros(rng.random_range(0..15_000)));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    Arc::try_unwrap(lines).unwrap().into_inner().unwrap()
}

/// The kill loops take turns: a child process forked by one loop holds copies of the parent's
/// descriptors until it execs, and the other loop's journal lock, just released by the parent,
/// could still be held by such a copy when its own child opens the journal.
static TURNS: Mutex<()> = Mutex::new(());

fn kill_loop(kills: usize, file_limit: Option<u64>) {
    let _turn = TURNS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let seed = std::env::var("TOLLWAY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("kill loop seed {seed} (TOLLWAY_CRASH_SEED replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let mut spent_before = 0u64;
    let mut total = Reported::default();
    for run in 0..kills {
        let reported = run_and_kill(&path, file_limit, &mut rng);
        let spent = open(&path).snapshot().windows[0].spent;
        // Every settled charge is there...
        let at_least = spent_before + reported.settled;
        // ...and no reservation counts twice: at most every reservation granted (those
        // granted but not yet reported included), less those refunded. A refund is in the
        // file once reported, unless the journal was failing: then it may be lost (counted
        // as spent, never less).
        let refunded = if file_limit.is_some() {
            0
        } else {
            reported.refunded
        };
        let at_most = spent_before + reported.reserved + THREADS * MAX_COST - refunded;
        assert!(
            spent >= at_least && spent <= at_most,
            "seed {seed}, run {run}: spent {spent}, expected {at_least}..={at_most} \
             ({reported:?}, {spent_before} before)"
        );
        spent_before = spent;
        total.reserved += reported.reserved;
        total.events += reported.events;
        total.errors += reported.errors;
    }
    assert!(
        total.reserved > 100 * kills as u64 / 10,
        "the children ran long enough to matter: {total:?}"
    );
    // A child killed in the middle of a compaction leaves its temporary file; the next opener
    // sweeps them, so they never pile up.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    eprintln!("{kills} kills: {total:?}, {spent_before} spent");
}

#[test]
fn spend_survives_two_hundred_sigkills_at_random_instants() {
    kill_loop(200, None);
}

#[test]
fn spend_survives_sigkills_while_appends_fail_part_way() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipping: util-linux prlimit is not installed");
        return;
    }
    kill_loop(200, Some(FILE_LIMIT));
}
