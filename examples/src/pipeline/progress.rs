//! Live counters of a run, and how they are shown: an `indicatif` bar (rate, ETA) on a
//! terminal, plain lines now and then otherwise (a log file, CI, a pipe).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;

/// How long a note (what the run waits for) stays on the bar.
const NOTE_FOR: Duration = Duration::from_secs(10);

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
    /// The latest note, when it was made, and how many notes came before.
    note: Mutex<Option<(String, Instant, u64)>>,
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

    /// Says what the run is waiting for (`waiting 60 s (429 ...)`); shown for a few seconds.
    pub fn note(&self, note: impl Into<String>) {
        let mut slot = self.live.note.lock();
        let count = slot.as_ref().map_or(0, |(_, _, count)| count + 1);
        *slot = Some((note.into(), Instant::now(), count));
    }

    /// The latest note if it is recent, with its number (each new note has a higher one).
    pub fn recent_note(&self) -> Option<(String, u64)> {
        let slot = self.live.note.lock();
        slot.as_ref()
            .filter(|(_, at, _)| at.elapsed() < NOTE_FOR)
            .map(|(note, _, count)| (note.clone(), *count))
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

    /// Shows progress on stderr until the returned guard is dropped: an `indicatif` bar redrawn
    /// ten times a second when stderr is a terminal, else a plain line every `every` (when
    /// something changed) and one at the end. Call it inside a tokio runtime.
    pub fn show_on_stderr(&self, every: Duration) -> ProgressLine {
        if std::io::stderr().is_terminal() {
            self.bar()
        } else {
            self.plain_lines(std::io::stderr(), every)
        }
    }

    /// Writes a plain progress line to `out` every `every` when something changed since the
    /// last one (a new note counts), and a last one when the guard is dropped.
    pub fn plain_lines(&self, out: impl Write + Send + 'static, every: Duration) -> ProgressLine {
        let out = Arc::new(Mutex::new(out));
        let started = Instant::now();
        let progress = self.clone();
        let writer = Arc::clone(&out);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last = (Snapshot::default(), None);
            loop {
                tick.tick().await;
                let now = (progress.snapshot(), progress.recent_note().map(|(_, n)| n));
                if now != last {
                    let line = progress.plain_line(started.elapsed());
                    let _ = writeln!(writer.lock(), "{line}");
                    last = now;
                }
            }
        });
        ProgressLine {
            kind: Kind::Plain {
                task,
                out: Box::new(move |line: &str| {
                    let _ = writeln!(out.lock(), "{line}");
                }),
                progress: self.clone(),
                started,
            },
        }
    }

    /// One plain progress line, `elapsed` into the run.
    pub fn plain_line(&self, elapsed: Duration) -> String {
        let snapshot = self.snapshot();
        let mut line = format!(
            "pipeline: {} | {:.1} pages/s | {:.0} s",
            snapshot.counters(),
            per_second(snapshot.pages, elapsed),
            elapsed.as_secs_f64()
        );
        if let Some((note, _)) = self.recent_note() {
            line.push_str(" | ");
            line.push_str(&note);
        }
        line
    }

    fn bar(&self) -> ProgressLine {
        let bar = ProgressBar::with_draw_target(
            Some(self.snapshot().users_total),
            ProgressDrawTarget::stderr_with_hz(10),
        );
        let style = ProgressStyle::with_template(
            "{spinner} {elapsed:>4} [{bar:24}] {pos}/{len} users, ETA {eta} | {msg}",
        )
        .map(|style| style.progress_chars("#>-"))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        *ACTIVE_BAR.lock() = Some(bar.clone());
        let progress = self.clone();
        let drawn = bar.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let snapshot = progress.snapshot();
                drawn.set_length(snapshot.users_total);
                drawn.set_position(snapshot.users_done + snapshot.users_failed);
                let mut message = format!(
                    "{} | {:.1} pages/s",
                    snapshot.counters(),
                    per_second(snapshot.pages, started.elapsed())
                );
                if let Some((note, _)) = progress.recent_note() {
                    message.push_str(" | ");
                    message.push_str(&note);
                }
                drawn.set_message(message);
            }
        });
        ProgressLine {
            kind: Kind::Bar { task, bar },
        }
    }
}

/// The bar on screen, if any: log lines are written above it (see [`LogWriter`]).
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Writes to stderr, above the progress bar when one is drawn: give it to a log subscriber so
/// that log lines and the bar do not overwrite each other.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE_BAR.lock().clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

impl Snapshot {
    /// The counters as a line: users settled (and failed), pages, requests, retries.
    pub fn counters(&self) -> String {
        let settled = self.users_done + self.users_failed;
        format!(
            "users {settled}/{} ({} failed) | pages {} | requests {} | retries {}",
            self.users_total, self.users_failed, self.pages, self.requests, self.retries
        )
    }
}

/// Keeps progress shown; dropping it stops drawing, clears the bar or writes a last plain line.
pub struct ProgressLine {
    kind: Kind,
}

enum Kind {
    Bar {
        task: tokio::task::JoinHandle<()>,
        bar: ProgressBar,
    },
    Plain {
        task: tokio::task::JoinHandle<()>,
        out: Box<dyn Fn(&str) + Send>,
        progress: Progress,
        started: Instant,
    },
}

impl std::fmt::Debug for ProgressLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Bar { .. } => "bar",
            Kind::Plain { .. } => "plain lines",
        };
        f.debug_struct("ProgressLine").field("kind", &kind).finish()
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Bar { task, bar } => {
                task.abort();
                ACTIVE_BAR.lock().take();
                bar.finish_and_clear();
            }
            Kind::Plain {
                task,
                out,
                progress,
                started,
            } => {
                task.abort();
                out(&progress.plain_line(started.elapsed()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_counters_read_as_a_line() {
        let progress = Progress::new();
        progress.set_users(4);
        progress.user_done();
        progress.user_failed();
        progress.page();
        progress.request();
        progress.request();
        let line = progress.snapshot().counters();
        assert_eq!(
            line,
            "users 2/4 (1 failed) | pages 1 | requests 2 | retries 0"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn plain_lines_come_when_something_changed_and_at_the_end() {
        let progress = Progress::new();
        progress.set_users(2);
        let out = Shared::default();
        let line = progress.plain_lines(out.clone(), Duration::from_secs(1));
        let lines = || String::from_utf8(out.0.lock().clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(lines().lines().count(), 1, "{}", lines());
        // Nothing changed: no new line.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(lines().lines().count(), 1, "{}", lines());
        progress.page();
        progress.note("waiting 60 s (429, capped by --max-wait)");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(lines().lines().count(), 2, "{}", lines());
        progress.user_done();
        drop(line);
        let text = lines();
        let all: Vec<&str> = text.lines().collect();
        assert_eq!(all.len(), 3, "{text}");
        assert!(all[1].contains("pages 1 |"), "{text}");
        assert!(
            all[1].ends_with("| waiting 60 s (429, capped by --max-wait)"),
            "{text}"
        );
        assert!(
            all[2].starts_with("pipeline: users 1/2 (0 failed) | pages 1"),
            "{text}"
        );
        assert!(
            all.iter().all(|l| !l.contains('\r') && !l.contains('\x1b')),
            "{text}"
        );
    }
}
