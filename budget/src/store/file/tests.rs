//! The file store under injected I/O failures: torn appends, failed syncs, failed truncations
//! and rewrites. After each, the journal on disk must replay to exactly what was charged (or
//! more, never less), and nothing is granted that is not durable.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::disk::faulty::{Faults, FaultyDisk};
use super::records::RECORD_LEN;
use crate::error::ReserveError;
use crate::ledger::Ledger;
use crate::priority::Priority;
use crate::store::FileStore;
use crate::window::Window;

fn open(path: &Path, faults: &Arc<Faults>) -> Ledger<FileStore> {
    Ledger::builder()
        .limit(1_000_000, Window::lifetime())
        .compact_every(1_000_000)
        .open_on(path, Arc::new(FaultyDisk(Arc::clone(faults))))
        .expect("journal opens")
}

fn reopen_spent(path: &Path) -> u64 {
    Ledger::builder()
        .limit(1_000_000, Window::lifetime())
        .open(path)
        .expect("journal reopens")
        .snapshot()
        .windows[0]
        .spent
}

fn charge(ledger: &Ledger<FileStore>, times: u64) {
    for _ in 0..times {
        ledger.reserve(1, Priority::Normal).unwrap().settle(1);
    }
}

#[test]
fn a_torn_append_never_shifts_the_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let faults = Faults::new();
    let ledger = open(&path, &faults);
    charge(&ledger, 5);
    // The next append writes 11 bytes of a 29-byte record, then fails (a full disk, a file
    // size limit, EIO).
    faults.torn_append.store(11, Ordering::SeqCst);
    charge(&ledger, 50);
    assert_eq!(ledger.snapshot().windows[0].spent, 55);
    drop(ledger);
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(len % RECORD_LEN as u64, 0, "no torn record left behind");
    assert_eq!(
        reopen_spent(&path),
        55,
        "every charge after the tear survives"
    );
}

#[test]
fn a_torn_append_that_cannot_be_cut_back_is_rewritten_before_anything_is_granted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let faults = Faults::new();
    let ledger = open(&path, &faults);
    charge(&ledger, 3);
    faults.truncate.store(true, Ordering::SeqCst);
    faults.torn_append.store(7, Ordering::SeqCst);
    let held = ledger.reserve(2, Priority::Normal).unwrap();
    charge(&ledger, 10);
    drop(held);
    assert_eq!(ledger.snapshot().windows[0].spent, 13);
    drop(ledger);
    assert_eq!(reopen_spent(&path), 13);
}

#[test]
fn a_failed_sync_is_repaired_by_a_rewrite_and_nothing_undurable_is_granted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let faults = Faults::new();
    let ledger = open(&path, &faults);
    charge(&ledger, 2);
    // A sync fails: the file can no longer be trusted, so it is rewritten, and the waiting
    // reservation is granted only once the rewrite is durable.
    faults.sync.store(true, Ordering::SeqCst);
    let granted = ledger.reserve(1, Priority::Normal).unwrap();
    granted.settle(1);
    // Now the rewrite fails too: the reservation is refused, its credit released.
    faults.rewrite.store(true, Ordering::SeqCst);
    let before = ledger.snapshot();
    let err = ledger.reserve(1, Priority::Normal).unwrap_err();
    let ReserveError::Store(unavailable) = err else {
        panic!("expected StoreUnavailable, got {err}");
    };
    assert!(
        unavailable.to_string().contains("injected fault"),
        "{unavailable}"
    );
    let after = ledger.snapshot();
    assert_eq!(after.reserved, 0, "the refused reservation holds nothing");
    assert_eq!(after.remaining, before.remaining);
    // The disk heals: grants resume, and everything charged meanwhile is on disk.
    faults.rewrite.store(false, Ordering::SeqCst);
    faults.sync.store(false, Ordering::SeqCst);
    charge(&ledger, 4);
    drop(ledger);
    assert_eq!(reopen_spent(&path), 7);
}

#[test]
fn concurrent_reservations_share_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let faults = Faults::new();
    // A slow disk: 5 ms per sync.
    faults.sync_delay_ms.store(5, Ordering::SeqCst);
    let ledger = open(&path, &faults);
    let before = faults.syncs.load(Ordering::SeqCst);
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let ledger = ledger.clone();
            std::thread::spawn(move || charge(&ledger, 10))
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let syncs = faults.syncs.load(Ordering::SeqCst) - before;
    // 320 durable grants; one sync each would be 320 (and 1.6 s of syncing).
    assert!(syncs <= 160, "{syncs} syncs for 320 reservations");
    assert_eq!(ledger.snapshot().windows[0].spent, 320);
    drop(ledger);
    assert_eq!(reopen_spent(&path), 320);
}

#[test]
fn a_journal_is_private_and_opened_by_one_ledger_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh/folder/budget.journal");
    let faults = Faults::new();
    let first = open(&path, &faults);
    charge(&first, 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&dir.path().join("fresh")), 0o700);
    }
    let second = Ledger::builder()
        .limit(10, Window::lifetime())
        .open(&path)
        .unwrap_err();
    assert_eq!(second.kind(), std::io::ErrorKind::WouldBlock);
    assert!(
        second
            .get_ref()
            .and_then(|e| e.downcast_ref::<crate::Locked>())
            .is_some(),
        "{second}"
    );
    // The first keeps working, and once it is gone the journal opens again.
    charge(&first, 1);
    drop(first);
    assert_eq!(reopen_spent(&path), 2);
}

#[tokio::test]
async fn an_over_charge_is_durable_before_the_response_is_returned() {
    use std::convert::Infallible;
    use std::time::{Duration, Instant};

    use tower::{Layer, ServiceExt, service_fn};

    use crate::{BudgetLayer, ChargePolicy};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let faults = Faults::new();
    // Every sync takes 300 ms: what waits for one is plain to see.
    faults.sync_delay_ms.store(300, Ordering::SeqCst);
    let ledger = open(&path, &faults);
    let inner = service_fn(|request: http::Request<()>| async move {
        let used = if request.uri().path() == "/over" {
            "7"
        } else {
            "1"
        };
        let response = http::Response::builder()
            .header("x-credits-used", used)
            .body(())
            .unwrap();
        Ok::<_, Infallible>(response)
    });
    let service = BudgetLayer::new(ledger.clone())
        .charge(ChargePolicy::from_header("x-credits-used"))
        .layer(inner);
    let call = |path: &'static str| {
        let service = service.clone();
        async move {
            let started = Instant::now();
            service
                .oneshot(http::Request::get(path).body(()).unwrap())
                .await
                .unwrap();
            started.elapsed()
        }
    };
    // One sync for the reservation...
    let normal = call("/normal").await;
    assert!(normal >= Duration::from_millis(300), "{normal:?}");
    // ...and one more for a charge above it, before the response comes back. (Flushed first, so
    // that the settle above is not still being synced when the next reservation arrives.)
    ledger.flush().await;
    let over = call("/over").await;
    assert!(over >= Duration::from_millis(590), "{over:?}");
    assert_eq!(ledger.snapshot().windows[0].spent, 8);
}

#[test]
fn a_journal_dirty_at_shutdown_is_rewritten_before_the_store_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let faults = Faults::new();
    let ledger = open(&path, &faults);
    charge(&ledger, 3);
    let held = ledger.reserve(1, Priority::Normal).unwrap();
    // The settle's append tears and the rewrite that would repair it fails: the over-charge is
    // only in memory when the disk heals and the ledger is dropped at once.
    faults.rewrite.store(true, Ordering::SeqCst);
    faults.torn_append.store(5, Ordering::SeqCst);
    held.settle(50);
    assert_eq!(ledger.snapshot().windows[0].spent, 53);
    faults.rewrite.store(false, Ordering::SeqCst);
    drop(ledger);
    // Replayed from disk, the settle must not have vanished (the reservation alone counts 1).
    assert_eq!(reopen_spent(&path), 53);
}

#[tokio::test]
async fn waiting_on_a_record_after_the_store_closed_never_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.journal");
    let faults = Faults::new();
    let ledger = open(&path, &faults);
    let held = ledger.reserve(1, Priority::Normal).unwrap();
    let other = ledger.reserve(1, Priority::Normal).unwrap();
    // The disk stays broken: the store closes with the journal dirty.
    faults.rewrite.store(true, Ordering::SeqCst);
    faults.torn_append.store(5, Ordering::SeqCst);
    other.settle(1);
    drop(ledger);
    // The reservation held the last handle on the ledger: settling it closes the store, and
    // its record can never become durable. The wait must end with an error.
    let settled = tokio::time::timeout(std::time::Duration::from_secs(5), held.settle_async(7))
        .await
        .expect("settle_async returns once the store is closed");
    assert!(
        settled.is_err(),
        "a record that was never durable is reported"
    );
}
