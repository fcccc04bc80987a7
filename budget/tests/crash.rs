//! `kill -9` at arbitrary instants: spend after a restart is never lower than what was charged
//! and never counted twice.
//!
//! The test binary runs itself as the child (`crash_child`, selected by an environment
//! variable). The child reserves and settles (or refunds) in a loop against a file-backed ledger,
//! compacting often, and reports each step on stdout only after the ledger call returned. The
//! parent reads a random number of steps, kills the child with SIGKILL, reopens the journal and
//! checks the spend against what the child reported.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use tollway_budget::{Ledger, Priority, Window};

const CHILD_ENV: &str = "TOLLWAY_BUDGET_CRASH_CHILD";

fn ledger(path: &Path) -> Ledger {
    Ledger::builder()
        .limit(u64::MAX / 2, Window::lifetime())
        .compact_every(37)
        .open(path)
        .expect("journal opens")
}

/// The event a child's line reports. libtest prints `test crash_child ... ` without a newline
/// before the test runs, so the first event shares its line.
fn event(line: &str) -> Option<&str> {
    line.rsplit_once("EV ").map(|(_, event)| event)
}

/// The child role: does nothing unless the parent selected it.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let ledger = ledger(Path::new(&path));
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let reservation = ledger.reserve(1, Priority::Normal).expect("reserve");
        writeln!(out, "EV reserved").unwrap();
        out.flush().unwrap();
        if i % 3 == 0 {
            drop(reservation);
            writeln!(out, "EV refunded").unwrap();
        } else {
            reservation.settle(1);
            writeln!(out, "EV settled").unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn spend_survives_sigkill_at_any_instant() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let exe = std::env::current_exe().unwrap();
    // Lower and upper bounds on what the journal must hold, summed over every run.
    let (mut charged, mut reserved, mut refunded) = (0u64, 0u64, 0u64);
    // Kill points spread over a range; a fixed list keeps the test reproducible while still
    // landing in reserve, settle, refund and compaction at different offsets.
    for (run, stop_after) in [3usize, 41, 120, 257, 500, 1_003, 77, 2_000]
        .iter()
        .enumerate()
    {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        while seen < *stop_after {
            let line = lines.next().expect("child alive").unwrap();
            match event(&line) {
                Some("reserved") => reserved += 1,
                Some("settled") => charged += 1,
                Some("refunded") => refunded += 1,
                _ => continue,
            }
            seen += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Lines the child wrote before it died still count.
        for line in lines.map_while(Result::ok) {
            match event(&line) {
                Some("reserved") => reserved += 1,
                Some("settled") => charged += 1,
                Some("refunded") => refunded += 1,
                _ => {}
            }
        }
        let spent = ledger(&path).snapshot().windows[0].spent;
        // At most one reservation was granted but not yet reported when the child died.
        let upper = reserved + 1 - refunded;
        assert!(
            spent >= charged && spent <= upper,
            "run {run}: spent {spent}, charged {charged}, at most {upper}"
        );
        // Whatever the journal counted is what the next run starts from.
        charged = spent;
        reserved = spent;
        refunded = 0;
    }
    assert!(
        charged > 1_000,
        "the child ran long enough to matter: {charged}"
    );
}
