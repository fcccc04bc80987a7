//! Processes sharing one cache folder: the byte cap is the folder's, through live writers and
//! writers killed with SIGKILL at random points (mid-write, mid-journal-append, mid-rename).
//!
//! The tests re-run their own binary as the workers (told apart by an environment variable).
//! After each write, and after each round of kills, the folder is summed while holding its
//! lock, so no write can be half-way through while it is counted.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, Script, entry_files};
use http::{Request, Response};
use http_body_util::Full;
use tollway_cache::{CacheLayer, CacheStatus};
use tollway_core::durable::LockFile;

const DIR: &str = "TOLLWAY_CACHE_FLEET_DIR";
const WORKER: &str = "TOLLWAY_CACHE_FLEET_WORKER";
const CAP: u64 = 20_000;

/// A body that names its key and has a size that varies with it (400 to 3,400 bytes), so
/// evictions make room for one entry with one, two or three others.
fn body_for(worker: usize, n: usize) -> Bytes {
    let line = format!("worker {worker} entry {n:05}|");
    let len = 400 + (n * 7919 + worker * 104_729) % 3000;
    Bytes::from(line.repeat(len / line.len() + 1)[..len].to_owned())
}

fn url(worker: usize, n: usize) -> String {
    format!("https://api.test/item?worker={worker}&n={n}")
}

fn script() -> Script {
    Arc::new(|_, request: &Request<()>| {
        let query = request.uri().query().unwrap();
        let mut worker = 0;
        let mut n = 0;
        for pair in query.split('&') {
            match pair.split_once('=').unwrap() {
                ("worker", v) => worker = v.parse().unwrap(),
                ("n", v) => n = v.parse().unwrap(),
                _ => {}
            }
        }
        Ok(Response::new(Full::new(body_for(worker, n))))
    })
}

/// An upstream that is down: a harness over it only reads the cache, never writes it.
fn down() -> Script {
    Arc::new(|_, _: &Request<()>| Err("upstream down".into()))
}

/// Reads `url` from the cache only: `Some(body)` for a hit, `None` for a miss.
async fn read_only(h: &Harness, url: &str) -> Option<Bytes> {
    let reply = h.send(Request::get(url).body(()).unwrap()).await.ok()?;
    assert_eq!(reply.cache, Some(CacheStatus::Hit));
    Some(reply.body)
}

fn layer(dir: &Path) -> CacheLayer {
    CacheLayer::builder(dir)
        .max_bytes(CAP)
        .memory_bytes(0)
        .build()
        .unwrap()
}

/// The bytes of every entry file in `dir`, summed under the folder lock.
fn locked_total(dir: &Path) -> u64 {
    let _lock = LockFile::lock(dir.join("folder.lock")).unwrap();
    entry_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_folder_keep_its_byte_cap() {
    if let Ok(dir) = std::env::var(DIR) {
        let worker = std::env::var(WORKER).unwrap().parse().unwrap();
        return write_and_check(Path::new(&dir), worker).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    tollway_test_support::run_workers("processes_sharing_a_folder_keep_its_byte_cap", 3, |w| {
        vec![(DIR, path.clone()), (WORKER, w.to_string())]
    })
    .await;
    assert!(locked_total(dir.path()) <= CAP);
    // What is left is whole: every entry is a hit with its own body.
    let h = Harness::new(layer(dir.path()), Duration::ZERO, down());
    let mut hits = 0;
    for worker in 0..3 {
        for n in 0..40 {
            if let Some(body) = read_only(&h, &url(worker, n)).await {
                assert_eq!(body, body_for(worker, n));
                hits += 1;
            }
        }
    }
    assert!(hits >= 5, "the folder kept {hits} entries");
    assert_eq!(hits, entry_files(dir.path()).len());
}

/// A worker: cache 40 entries, checking the folder's total after each.
async fn write_and_check(dir: &Path, worker: usize) {
    let h = Harness::new(layer(dir), Duration::ZERO, script());
    for n in 0..40 {
        let reply = h.get(&url(worker, n)).await;
        assert_eq!(reply.body, body_for(worker, n));
        let total = locked_total(dir);
        assert!(total <= CAP, "worker {worker} after {n}: {total} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_killed_at_random_never_break_the_cap_or_leave_a_torn_entry() {
    if let Ok(dir) = std::env::var(DIR) {
        let worker = std::env::var(WORKER).unwrap().parse().unwrap();
        return write_until_killed(Path::new(&dir), worker).await;
    }
    let dir = tempfile::tempdir().unwrap();
    // A process that stays up through every round, and keeps writing after each.
    let survivor = Harness::new(layer(dir.path()), Duration::ZERO, script());
    let mut delays = 20u64;
    for round in 0..10 {
        let children: Vec<_> = (0..2)
            .map(|w| {
                Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "writers_killed_at_random_never_break_the_cap_or_leave_a_torn_entry",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(DIR, dir.path())
                    .env(WORKER, (round * 2 + w + 1).to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Kill at varied moments: a pseudo-random 20-170 ms, real time.
        delays = (delays * 7 + 31) % 150 + 20;
        tokio::time::sleep(Duration::from_millis(delays)).await;
        for mut child in children {
            child.kill().unwrap(); // SIGKILL: no destructor runs
            child.wait().unwrap();
        }
        let total = locked_total(dir.path());
        assert!(total <= CAP, "round {round}: {total} bytes");
        for n in 0..5 {
            let reply = survivor.get(&url(0, round * 5 + n)).await;
            assert_eq!(reply.body, body_for(0, round * 5 + n));
            assert!(
                locked_total(dir.path()) <= CAP,
                "round {round}, survivor write {n}"
            );
        }
    }
    // Reopened, every entry any writer left is whole: served with its own body, or a miss.
    let h = Harness::new(layer(dir.path()), Duration::ZERO, down());
    assert!(h.layer.total_bytes() <= CAP);
    let (mut hits, mut by_killed) = (0, 0);
    for worker in 0..=20 {
        for n in 0..200 {
            if let Some(body) = read_only(&h, &url(worker, n)).await {
                assert_eq!(body, body_for(worker, n), "worker {worker} entry {n}");
                hits += 1;
                by_killed += usize::from(worker > 0);
            }
        }
    }
    assert_eq!(
        hits,
        entry_files(dir.path()).len(),
        "every file is a whole entry"
    );
    assert!(by_killed > 0, "the killed writers wrote before they died");
}

/// A child's side: cache entries one after another until killed.
async fn write_until_killed(dir: &Path, worker: usize) {
    let h = Harness::new(layer(dir), Duration::ZERO, script());
    for n in 0.. {
        h.get(&url(worker, n % 200)).await;
    }
}

const HOLDER: &str = "TOLLWAY_CACHE_FLEET_HOLDER";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_a_process_killed_mid_fetch_is_not_waited_for() {
    if let Ok(dir) = std::env::var(HOLDER) {
        // The child: a fetch whose upstream never answers, so it holds the key's lock.
        let hang: Script = Arc::new(|_, _: &Request<()>| Err("unreachable".into()));
        let h = Harness::new(layer(Path::new(&dir)), Duration::from_secs(3600), hang);
        let _ = h.get(&url(0, 0)).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Learn the key's lock file: the entry's path with `.lock`.
    let probe = Harness::new(layer(dir.path()), Duration::ZERO, script());
    probe.get(&url(0, 0)).await;
    let [entry] = entry_files(dir.path()).try_into().unwrap();
    let lock = entry.with_extension("lock");
    assert!(
        probe
            .layer
            .handle()
            .invalidate(&Request::get(url(0, 0)).body(()).unwrap())
            .await
            .unwrap()
    );
    drop(probe);

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_lock_held_by_a_process_killed_mid_fetch_is_not_waited_for",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLDER, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the child holds the lock.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if lock.exists() && LockFile::try_lock(&lock).unwrap().is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child never took the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL, mid-fetch: its lock file stays behind
    child.wait().unwrap();
    assert!(lock.exists(), "the killed holder could not remove its file");

    let h = Harness::new(layer(dir.path()), Duration::ZERO, script());
    let started = std::time::Instant::now();
    let reply = h.get(&url(0, 0)).await;
    assert_eq!(reply.cache, Some(CacheStatus::Miss));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?} for a dead process's lock",
        started.elapsed()
    );
    assert!(!lock.exists(), "the new holder removed the file when done");
}
