//! Crash safety: a writer killed with SIGKILL in the middle of its writes leaves no entry that
//! is served corrupt, and every write it reported done survives.
//!
//! The test re-runs its own binary as the writer (selected by an environment variable): the
//! child caches responses in a loop, printing each key once its write returned; the parent
//! kills it after a number of writes, reopens the folder and checks every key.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, Script};
use http::Response;
use http_body_util::Full;
use tollway_cache::{CacheLayer, CacheStatus};

const ROLE: &str = "TOLLWAY_CACHE_CRASH_WRITER_DIR";
const ACKNOWLEDGED_BEFORE_KILL: usize = 40;

/// The body the writer stores for `n`: long enough that a write takes several syscalls, and
/// different for every `n`, so a torn or misplaced file would show.
fn body_for(n: usize) -> Bytes {
    let line = format!("entry {n:06} ");
    Bytes::from(line.repeat(6000 / line.len()))
}

fn writer_script() -> Script {
    Arc::new(|_, request| {
        let n: usize = request.uri().query().unwrap()[2..].parse().unwrap();
        Ok(Response::new(Full::new(body_for(n))))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writer_leaves_nothing_corrupt() {
    if let Ok(dir) = std::env::var(ROLE) {
        return write_until_killed(dir).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_writer_leaves_nothing_corrupt",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acknowledged = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acknowledged.len() < ACKNOWLEDGED_BEFORE_KILL {
        let line = lines.next().expect("the writer reports").unwrap();
        if let Some(n) = line.strip_prefix("stored ") {
            acknowledged.push(n.parse::<usize>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush runs in the child
    child.wait().unwrap();

    let layer = CacheLayer::builder(dir.path()).build().unwrap();
    let fresh: Script = Arc::new(|_, _| Ok(Response::new(Full::new(Bytes::from("fresh")))));
    let h = Harness::new(layer, Duration::ZERO, fresh);
    let written = acknowledged.iter().max().unwrap() + 8;
    let mut hits = 0;
    for n in 0..written {
        let reply = h.get(&format!("https://api.test/item?n={n}")).await;
        match reply.cache {
            Some(CacheStatus::Hit) => {
                assert_eq!(reply.body, body_for(n), "entry {n} served corrupt");
                hits += 1;
            }
            Some(CacheStatus::Miss) => {
                assert_eq!(reply.body, "fresh");
                assert!(!acknowledged.contains(&n), "acknowledged write {n} lost");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(hits >= ACKNOWLEDGED_BEFORE_KILL);
}

/// The child's side: cache entries one after another until killed.
async fn write_until_killed(dir: String) {
    let layer = CacheLayer::builder(dir).build().unwrap();
    let h = Harness::new(layer, Duration::ZERO, writer_script());
    let mut stdout = std::io::stdout();
    for n in 0.. {
        let reply = h.get(&format!("https://api.test/item?n={n}")).await;
        assert_eq!(reply.body, body_for(n));
        writeln!(stdout, "stored {n}").unwrap();
        stdout.flush().unwrap();
    }
}
