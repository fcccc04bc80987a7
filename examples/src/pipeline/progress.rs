//! Live counters of a run, and the progress line drawn from them.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Live counters of a run, shared by the run loop and whoever watches it. Clones share them.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    live: Arc<Live>,
}

#[derive(Debug, Default)]
struct Live {
    users_total: AtomicU64,
    users_done: AtomicU64,
    users_failed: AtomicU64,
    pages: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// A reading of [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Users in the run.
    pub users_total: u64,
    /// Users with every page held.
    pub users_done: u64,
    /// Users that failed.
    pub users_failed: u64,
    /// Pages held.
    pub pages: u64,
    /// Requests sent.
    pub requests: u64,
    /// Retries.
    pub retries: u64,
}

impl Progress {
    /// Fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let l = &self.live;
        Snapshot {
            users_total: l.users_total.load(Ordering::Relaxed),
            users_done: l.users_done.load(Ordering::Relaxed),
            users_failed: l.users_failed.load(Ordering::Relaxed),
            pages: l.pages.load(Ordering::Relaxed),
            requests: l.requests.load(Ordering::Relaxed),
            retries: l.retries.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_users(&self, total: u64) {
        self.live.users_total.store(total, Ordering::Relaxed);
    }

    pub(crate) fn user_done(&self) {
        self.live.users_done.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn user_failed(&self) {
        self.live.users_failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn page(&self) {
        self.live.pages.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request(&self) {
        self.live.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.live.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Redraws a one-line progress bar on stderr every `every` until the returned guard is
    /// dropped, which clears the line. Draws nothing when stderr is not a terminal.
    pub fn draw_on_stderr(&self, every: Duration) -> ProgressLine {
        let task = std::io::stderr().is_terminal().then(|| {
            let progress = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let line = progress.snapshot().line();
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r{line}\x1b[K");
                    let _ = err.flush();
                }
            })
        });
        ProgressLine { task }
    }
}

impl Snapshot {
    /// The progress line: a bar of users settled, then the counters.
    pub fn line(&self) -> String {
        const WIDTH: u64 = 24;
        let settled = self.users_done + self.users_failed;
        let filled = (settled * WIDTH).checked_div(self.users_total).unwrap_or(0);
        let bar: String = (0..WIDTH)
            .map(|i| if i < filled { '#' } else { '-' })
            .collect();
        format!(
            "[{bar}] users {settled}/{} ({} failed) | pages {} | requests {} | retries {}",
            self.users_total, self.users_failed, self.pages, self.requests, self.retries
        )
    }
}

/// Keeps the progress line drawn; dropping it stops drawing and clears the line.
#[derive(Debug)]
pub struct ProgressLine {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_fills_with_settled_users() {
        let progress = Progress::new();
        progress.set_users(4);
        progress.user_done();
        progress.user_failed();
        progress.page();
        progress.request();
        progress.request();
        let line = progress.snapshot().line();
        assert!(line.starts_with(&format!("[{}{}]", "#".repeat(12), "-".repeat(12))));
        assert!(
            line.contains("users 2/4 (1 failed) | pages 1 | requests 2"),
            "{line}"
        );
    }

    #[test]
    fn an_empty_run_draws_an_empty_bar() {
        assert!(
            Snapshot::default()
                .line()
                .starts_with(&format!("[{}]", "-".repeat(24)))
        );
    }
}
