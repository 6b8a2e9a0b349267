//! A one-line progress bar on standard error for long operations (convert, compact,
//! merge, flatten, resize, compare): percentage, bar, bytes done of total, rate and time left,
//! redrawn in place with `\r` at most ten times a second; for a batch of files worked on at
//! once ([`BatchProgress`]), one line for all of them. It is drawn only when standard error is a
//! terminal (and `--quiet` was not given), so scripts and logs never see it.

use crate::output::{quiet, size};
use std::cell::Cell;
use std::io::{self, IsTerminal, Write};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Least time between two redraws.
const REDRAW: Duration = Duration::from_millis(100);
/// Width of the bar in characters.
const WIDTH: u64 = 24;

/// A progress line for one operation.
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    start: Instant,
    last: Cell<Option<Instant>>,
}

impl Progress {
    /// A progress line labelled `label` (`"converting"`), or `None` when standard error is
    /// not a terminal or `--quiet` was given.
    pub fn on_terminal(label: &'static str) -> Option<Progress> {
        (io::stderr().is_terminal() && !quiet()).then(|| Progress {
            label,
            start: Instant::now(),
            last: Cell::new(None),
        })
    }

    /// Records that `done` of `total` bytes are done; redraws when enough time has passed
    /// since the last redraw, and always at the end.
    pub fn update(&self, done: u64, total: u64) {
        let now = Instant::now();
        if done < total && self.last.get().is_some_and(|t| now - t < REDRAW) {
            return;
        }
        self.last.set(Some(now));
        let line = render(self.label, done, total, now - self.start);
        let mut err = io::stderr().lock();
        // Erase to the end of the line so a shorter line leaves no remains.
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }

    /// Ends the line (the last state stays visible), so what follows starts on its own line.
    pub fn finish(&self) {
        if self.last.get().is_some() {
            eprintln!();
        }
    }
}

/// Runs `work` with a progress line labelled `label` when standard error is a terminal:
/// `work` gets the callback to report `(done, total)` through (`None` otherwise), and the
/// line is ended when it returns.
pub fn with_progress<T>(
    label: &'static str,
    work: impl FnOnce(Option<&dyn Fn(u64, u64)>) -> T,
) -> T {
    let bar = Progress::on_terminal(label);
    let update = |done, total| {
        if let Some(b) = &bar {
            b.update(done, total);
        }
    };
    let result = work(bar.is_some().then_some(&update as &dyn Fn(u64, u64)));
    if let Some(b) = &bar {
        b.finish();
    }
    result
}

/// One progress line for files worked on at once (`--jobs`): the work done over all files
/// against their total (a file not started yet counts as the average of those started) and
/// how many files are complete. Updated from the worker threads.
#[derive(Debug)]
pub struct BatchProgress {
    label: &'static str,
    start: Instant,
    state: Mutex<BatchState>,
}

/// What [`BatchProgress`] knows.
#[derive(Debug)]
struct BatchState {
    /// `(done, total)` of each file, once it reported.
    files: Vec<Option<(u64, u64)>>,
    complete: usize,
    last: Option<Instant>,
    drawn: bool,
}

impl BatchProgress {
    /// A line labelled `label` for `files` files, or `None` when standard error is not a
    /// terminal or `--quiet` was given.
    pub fn on_terminal(label: &'static str, files: usize) -> Option<BatchProgress> {
        (io::stderr().is_terminal() && !quiet()).then(|| BatchProgress {
            label,
            start: Instant::now(),
            state: Mutex::new(BatchState {
                files: vec![None; files],
                complete: 0,
                last: None,
                drawn: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that file `file` has done `done` of `total`; redraws when enough time passed.
    pub fn update(&self, file: usize, done: u64, total: u64) {
        let mut s = self.lock();
        if let Some(slot) = s.files.get_mut(file) {
            *slot = Some((done, total));
        }
        let now = Instant::now();
        if s.last.is_some_and(|t| now - t < REDRAW) {
            return;
        }
        s.last = Some(now);
        let (done, total) = batch_totals(&s.files);
        let label = format!("{} ({}/{} files)", self.label, s.complete, s.files.len());
        let line = render(&label, done, total, now - self.start);
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
        s.drawn = true;
    }

    /// Records that file `file` is finished (whether it succeeded or not).
    pub fn file_done(&self, file: usize) {
        let mut s = self.lock();
        if let Some(slot) = s.files.get_mut(file) {
            let total = slot.map_or(0, |(_, t)| t);
            *slot = Some((total, total));
        }
        s.complete += 1;
    }

    /// Runs `print` with the line erased, so what it writes to the terminal starts on a clean
    /// line; the next update draws the line again.
    pub fn suspend<T>(&self, print: impl FnOnce() -> T) -> T {
        let mut s = self.lock();
        if s.drawn {
            eprint!("\r\x1b[K");
            s.drawn = false;
        }
        print()
    }
}

/// Work done and the estimated total over the files of a batch.
fn batch_totals(files: &[Option<(u64, u64)>]) -> (u64, u64) {
    let known: Vec<(u64, u64)> = files.iter().flatten().copied().collect();
    let done = known.iter().map(|k| k.0).sum();
    let total: u64 = known.iter().map(|k| k.1).sum();
    let average = total.checked_div(known.len() as u64).unwrap_or(0);
    (done, total + average * (files.len() - known.len()) as u64)
}

/// The text of the line.
fn render(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let frac = if total == 0 {
        1.0
    } else {
        done.min(total) as f64 / total as f64
    };
    let filled = (frac * WIDTH as f64) as u64;
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    let secs = elapsed.as_secs_f64();
    let mut s = format!(
        "{label} {:>3}% [{bar}] {} of {}",
        (frac * 100.0) as u32,
        size(done),
        size(total)
    );
    if secs >= 0.5 && done > 0 {
        let rate = done as f64 / secs;
        s.push_str(&format!(", {}/s", size(rate as u64)));
        if done < total {
            let left = (total - done) as f64 / rate;
            s.push_str(&format!(", {} left", clock(left as u64)));
        }
    }
    s
}

/// `m:ss` or `h:mm:ss`.
fn clock(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_share_rate_and_time_left() {
        let l = render("converting", 1 << 30, 4 << 30, Duration::from_secs(2));
        assert_eq!(
            l,
            "converting  25% [######------------------] 1 GiB of 4 GiB, 512 MiB/s, 0:06 left"
        );
        // No rate before half a second; no time left at the end.
        assert_eq!(
            render("x", 0, 10, Duration::ZERO),
            "x   0% [------------------------] 0 B of 10 B"
        );
        assert!(render("x", 10, 10, Duration::from_secs(3)).ends_with("10 B of 10 B, 3 B/s"));
        assert_eq!(clock(3725), "1:02:05");
    }

    #[test]
    fn a_batch_estimates_the_files_not_started() {
        assert_eq!(
            batch_totals(&[Some((5, 10)), None, Some((30, 30)), None]),
            (35, 80)
        );
        assert_eq!(batch_totals(&[None, None]), (0, 0));
    }
}
