//! The file-backed ledger: replay after a restart, torn and corrupt records, compaction, the
//! lock that keeps a second process out, private files.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use tollway_budget::store::FileStore;
use tollway_budget::{ExhaustedReason, Ledger, Locked, Priority, Window};
use tollway_core::FakeClock;

type FileLedger = Ledger<FileStore>;

const RECORD_LEN: u64 = 29;

/// 2024-06-15 10:00:00 UTC.
fn june15_10h() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_718_445_600)
}

fn open(path: &Path, clock: &FakeClock) -> FileLedger {
    Ledger::builder()
        .limit(100, Window::day())
        .limit(1_000, Window::month())
        .clock(clock.clone())
        .open(path)
        .expect("journal opens")
}

fn spent(ledger: &FileLedger) -> Vec<u64> {
    ledger.snapshot().windows.iter().map(|w| w.spent).collect()
}

#[test]
fn spend_survives_a_restart_and_windows_still_roll() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let clock = FakeClock::starting_at(june15_10h());
    {
        let ledger = open(&path, &clock);
        for _ in 0..7 {
            ledger.reserve(1, Priority::Normal).unwrap().settle(1);
        }
        ledger.reserve(5, Priority::Normal).unwrap().settle(0);
        drop(ledger.reserve(3, Priority::Normal).unwrap());
    }
    let ledger = open(&path, &clock);
    assert_eq!(
        spent(&ledger),
        [7, 7],
        "settled charges once, refunds not at all"
    );
    assert_eq!(ledger.snapshot().reserved, 0);
    drop(ledger);

    clock.advance(Duration::from_secs(14 * 3600));
    let ledger = open(&path, &clock);
    assert_eq!(
        spent(&ledger),
        [0, 7],
        "the day rolled over while we were down"
    );
    ledger.reserve(2, Priority::Normal).unwrap().settle(2);
    drop(ledger);
    let ledger = open(&path, &clock);
    assert_eq!(spent(&ledger), [2, 9]);
}

#[test]
fn reservations_in_flight_at_a_crash_count_as_spent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let clock = FakeClock::starting_at(june15_10h());
    let ledger = open(&path, &clock);
    let in_flight = ledger.reserve(4, Priority::Normal).unwrap();
    // The process dies with the reservation open: the disk holds what it holds right now.
    let crashed = dir.path().join("crashed.journal");
    std::fs::copy(&path, &crashed).unwrap();
    in_flight.settle(1);
    drop(ledger);
    let path = crashed;
    let ledger = open(&path, &clock);
    assert_eq!(spent(&ledger), [4, 4]);
    // ... and only once, however often it restarts.
    drop(ledger);
    let ledger = open(&path, &clock);
    assert_eq!(spent(&ledger), [4, 4]);
    assert_eq!(ledger.snapshot().reserved, 0);
}

#[test]
fn latch_and_balance_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let clock = FakeClock::starting_at(june15_10h());
    let ledger = open(&path, &clock);
    ledger.sync_balance(10);
    ledger.reserve(3, Priority::Normal).unwrap().settle(3);
    ledger.latch();
    drop(ledger);
    let ledger = open(&path, &clock);
    assert!(ledger.is_latched());
    let err = ledger.reserve(1, Priority::Critical).unwrap_err();
    assert_eq!(
        err.exhausted().unwrap().reason(),
        ExhaustedReason::Upstream402
    );
    assert_eq!(ledger.snapshot().balance, Some(7));
    ledger.reset();
    drop(ledger);
    let ledger = open(&path, &clock);
    assert!(!ledger.is_latched());
    // The latch lifts at the day's rollover even while the process is down.
    ledger.latch();
    drop(ledger);
    clock.advance(Duration::from_secs(14 * 3600));
    assert!(!open(&path, &clock).is_latched());
}

#[test]
fn torn_tail_and_corrupt_records_are_skipped_safely() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let clock = FakeClock::starting_at(june15_10h());
    let ledger = Ledger::builder()
        .limit(100, Window::day())
        .clock(clock.clone())
        .compact_every(1_000)
        .open(&path)
        .unwrap();
    for _ in 0..5 {
        ledger.reserve(1, Priority::Normal).unwrap().settle(1);
    }
    drop(ledger);
    // 5 reserve + 5 settle records.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 10 * RECORD_LEN);

    // A half-written record at the tail.
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&[0xAB; 17]).unwrap();
    drop(file);
    let ledger = open(&path, &clock);
    assert_eq!(spent(&ledger)[0], 5);
    drop(ledger);

    // Garbage alone is no journal: it opens empty.
    std::fs::write(&path, b"definitely not a journal").unwrap();
    let ledger = open(&path, &clock);
    assert_eq!(spent(&ledger), [0, 0]);
}

#[test]
fn a_corrupt_record_never_hides_the_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let clock = FakeClock::starting_at(june15_10h());
    let ledger = Ledger::builder()
        .limit(100, Window::day())
        .clock(clock.clone())
        .compact_every(1_000)
        .open(&path)
        .unwrap();
    let held: Vec<_> = (0..3)
        .map(|_| ledger.reserve(2, Priority::Normal).unwrap())
        .collect();
    // Crash with all three open: keep the disk as it is now.
    let crashed = dir.path().join("crashed.journal");
    std::fs::copy(&path, &crashed).unwrap();
    drop(held);
    drop(ledger);
    let path = crashed;
    // Corrupt the first of three reserve records.
    let mut file = OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(6)).unwrap();
    file.write_all(&[0x55]).unwrap();
    drop(file);
    let ledger = open(&path, &clock);
    assert_eq!(
        spent(&ledger)[0],
        4,
        "the two intact reservations still count"
    );
}

#[test]
fn compaction_keeps_spend_and_open_reservations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let clock = FakeClock::starting_at(june15_10h());
    let build = || {
        Ledger::builder()
            .limit(10_000, Window::rolling(Duration::from_secs(3600)))
            .limit(100_000, Window::month())
            .clock(clock.clone())
            .compact_every(16)
            .open(&path)
            .unwrap()
    };
    let ledger = build();
    let held = ledger.reserve(5, Priority::Normal).unwrap();
    for i in 0..200 {
        ledger.reserve(1, Priority::Normal).unwrap().settle(1);
        if i % 50 == 0 {
            clock.advance(Duration::from_secs(600));
        }
    }
    // Compaction ran many times; the journal is far smaller than 400 records.
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len < 40 * RECORD_LEN, "journal is {len} bytes");
    held.settle(5);
    drop(ledger);
    let ledger = build();
    assert_eq!(spent(&ledger), [205, 205]);
    drop(ledger);
    // An hour and a bit later the rolling window has let go of everything but the month keeps it.
    clock.advance(Duration::from_secs(3600 + 61));
    let ledger = build();
    assert_eq!(spent(&ledger), [0, 205]);
}

#[test]
fn a_journal_cut_at_any_byte_opens_without_forgetting_whole_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let clock = FakeClock::starting_at(june15_10h());
    let ledger = Ledger::builder()
        .limit(1_000, Window::day())
        .clock(clock.clone())
        .compact_every(1_000)
        .open(&path)
        .unwrap();
    // Settled charges of 1, 2, 3, 4 and 5, one after the other.
    for charge in 1..=5 {
        ledger.reserve(5, Priority::Normal).unwrap().settle(charge);
    }
    drop(ledger);
    let full = std::fs::read(&path).unwrap();
    assert_eq!(full.len() as u64, 10 * RECORD_LEN);
    let cut_path = dir.path().join("cut.journal");
    for len in 0..=full.len() {
        std::fs::write(&cut_path, &full[..len]).unwrap();
        let ledger = open(&cut_path, &clock);
        // Whole records: pairs (reserve 5, settle n). A reservation whose settle was cut off
        // counts its full cost of 5.
        let whole = len / RECORD_LEN as usize;
        let settled = (whole / 2) as u64;
        let expected = settled * (settled + 1) / 2 + if whole % 2 == 1 { 5 } else { 0 };
        assert_eq!(spent(&ledger)[0], expected, "cut at byte {len}");
    }
}

#[test]
fn a_configured_balance_is_used_once_then_the_journal_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let clock = FakeClock::starting_at(june15_10h());
    let build = || {
        Ledger::builder()
            .limit(100, Window::day())
            .balance(50)
            .clock(clock.clone())
            .open(&path)
            .unwrap()
    };
    let ledger = build();
    assert_eq!(ledger.snapshot().balance, Some(50));
    ledger.reserve(3, Priority::Normal).unwrap().settle(3);
    drop(ledger);
    let ledger = build();
    assert_eq!(ledger.snapshot().balance, Some(47));
    ledger.sync_balance(10);
    drop(ledger);
    assert_eq!(build().snapshot().balance, Some(10));
}

#[test]
fn journal_files_are_private_and_their_folders_too() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spend/2024/budget.journal");
    let clock = FakeClock::starting_at(june15_10h());
    let ledger = open(&path, &clock);
    ledger.reserve(1, Priority::Normal).unwrap().settle(1);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&path),
        0o600,
        "spend records are nobody else's business"
    );
    assert_eq!(mode(&dir.path().join("spend")), 0o700);
    assert_eq!(mode(&dir.path().join("spend/2024")), 0o700);
    // Compaction rewrites the file: still private.
    drop(ledger);
    drop(open(&path, &clock));
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn a_second_ledger_on_one_journal_is_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let clock = FakeClock::starting_at(june15_10h());
    let first = open(&path, &clock);
    first.reserve(3, Priority::Normal).unwrap().settle(3);
    let err = Ledger::builder()
        .limit(100, Window::day())
        .open(&path)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    let locked = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<Locked>())
        .unwrap_or_else(|| panic!("expected Locked, got {err}"));
    assert!(locked.path().ends_with("budget.journal.lock"));
    // The first keeps working; the journal was not touched by the refused opener.
    first.reserve(2, Priority::Normal).unwrap().settle(2);
    assert_eq!(spent(&first), [5, 5]);
    drop(first);
    assert_eq!(spent(&open(&path, &clock)), [5, 5]);
}

#[cfg(unix)]
#[test]
fn a_journal_reached_through_a_symlink_is_still_one_journal() {
    // Two workers configured with two names for one journal (a symlink, as deployment tools
    // make) are two openers of one journal: the second is refused, and the link is followed,
    // never replaced by a file of its own that would start a second budget.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let alias = dir.path().join("alias.journal");
    let clock = FakeClock::starting_at(june15_10h());
    drop(open(&path, &clock));
    std::os::unix::fs::symlink(&path, &alias).unwrap();
    let first = open(&path, &clock);
    first.reserve(3, Priority::Normal).unwrap().settle(3);
    let err = Ledger::builder()
        .limit(100, Window::day())
        .open(&alias)
        .unwrap_err();
    assert!(
        err.get_ref()
            .and_then(|e| e.downcast_ref::<Locked>())
            .is_some(),
        "expected Locked, got {err}"
    );
    drop(first);
    // Through the link alone: it spends from the same journal and leaves the link a link.
    let second = open(&alias, &clock);
    assert_eq!(spent(&second), [3, 3]);
    second.reserve(4, Priority::Normal).unwrap().settle(4);
    drop(second);
    assert!(
        std::fs::symlink_metadata(&alias)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(spent(&open(&path, &clock)), [7, 7]);
}

#[test]
fn spend_journaled_ahead_of_a_clock_that_stepped_back_over_a_restart_keeps_its_period() {
    // Spend made just after midnight; the process restarts with its wall clock 40 minutes
    // behind (a VM resumed from a snapshot, before NTP steps it). Those charges belong to the
    // new day: when the clock reaches that day they must still be counted, not dropped with
    // the day before.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let after_midnight =
        FakeClock::starting_at(june15_10h() + Duration::from_secs(14 * 3600 + 1800));
    let first = open(&path, &after_midnight);
    first.reserve(5, Priority::Normal).unwrap().settle(5);
    drop(first);
    let behind = FakeClock::starting_at(june15_10h() + Duration::from_secs(13 * 3600 + 50 * 60));
    let second = open(&path, &behind);
    assert_eq!(spent(&second), [5, 5]);
    behind.advance(Duration::from_secs(20 * 60));
    assert_eq!(
        spent(&second),
        [5, 5],
        "the new day's spend was dropped with the old day"
    );
    drop(second);
    assert_eq!(spent(&open(&path, &behind)), [5, 5]);
}

const SECOND_PROCESS: &str = "TOLLWAY_BUDGET_SECOND_OPENER";

/// The second process's role: opening the journal must fail with `Locked`.
#[test]
fn second_opener() {
    let Some(path) = std::env::var_os(SECOND_PROCESS) else {
        return;
    };
    let err = Ledger::builder()
        .limit(100, Window::day())
        .open(Path::new(&path))
        .expect_err("the journal is held by the first process");
    assert!(
        err.get_ref()
            .and_then(|e| e.downcast_ref::<Locked>())
            .is_some(),
        "expected Locked, got {err}"
    );
}

#[tokio::test]
async fn a_second_process_is_refused_and_the_first_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let clock = FakeClock::starting_at(june15_10h());
    let first = open(&path, &clock);
    first.reserve(4, Priority::Normal).unwrap().settle(4);
    let path_text = path.to_str().unwrap().to_owned();
    tollway_test_support::run_workers("second_opener", 2, |_| {
        vec![(SECOND_PROCESS, path_text.clone())]
    })
    .await;
    first.reserve(1, Priority::Normal).unwrap().settle(1);
    assert_eq!(spent(&first), [5, 5]);
    drop(first);
    assert_eq!(spent(&open(&path, &clock)), [5, 5]);
}
