//! Batch mode: one operation over many files (`vhdx compact A B C... --jobs N`, `vhdx check
//! A B C... --jobs N`), on up to N threads, each file on its own (a failure stops nothing
//! else), results handed back in the order of the arguments.
//!
//! [`DEFAULT_JOBS`] comes from `scripts/bench-batch.sh` (README, "Batch compaction"): on the
//! 2-core machine measured, 16 disks compacted 1.1-1.3 × faster two at a time than one by
//! one and 1.3-1.7 × faster four at a time (a compaction waits for its flushes, so more files
//! than cores overlap those waits); eight were a little slower than four on the quiet runs
//! and a little faster on loaded ones, within the noise, for twice the open files and
//! buffers.

use clap::builder::TypedValueParser;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::channel;

/// Files handled at once when `--jobs` is not given (see the module documentation).
pub const DEFAULT_JOBS: usize = 4;

/// The `--jobs` argument every batch command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct JobsArg {
    /// How many files to work on at once (default 4, measured: see the README's batch
    /// figures); results are printed in the order of the arguments.
    #[arg(short = 'j', long, value_name = "N", default_value_t = DEFAULT_JOBS,
          value_parser = clap::value_parser!(u16).range(1..=256).map(usize::from))]
    pub jobs: usize,
}

/// Runs `work(index, item)` on every item, up to `jobs` at a time, and calls `done(item,
/// result)` in the order of `items`, each as soon as it and every item before it have
/// finished (so a long batch reports as it goes). With one job (or one item) everything runs
/// on the calling thread.
pub fn run_ordered<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    work: impl Fn(usize, &T) -> R + Sync,
    mut done: impl FnMut(&T, R),
) {
    let jobs = jobs.clamp(1, items.len().max(1));
    if jobs == 1 {
        for (i, item) in items.iter().enumerate() {
            done(item, work(i, item));
        }
        return;
    }
    let next = AtomicUsize::new(0);
    let (tx, rx) = channel();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let (next, work) = (&next, &work);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                if tx.send((i, work(i, item))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut waiting = BTreeMap::new();
        let mut first = 0;
        for (i, r) in rx {
            waiting.insert(i, r);
            while let Some(r) = waiting.remove(&first) {
                done(&items[first], r);
                first += 1;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::run_ordered;
    use std::time::Duration;

    #[test]
    fn results_come_in_order_whatever_finishes_first() {
        let items: Vec<u64> = (0..12).collect();
        for jobs in [1, 3, 8, 50] {
            let mut seen = Vec::new();
            run_ordered(
                &items,
                jobs,
                |k, &i| {
                    assert_eq!(k as u64, i);
                    std::thread::sleep(Duration::from_millis((12 - i) * 2));
                    i * 10
                },
                |&i, r| seen.push((i, r)),
            );
            let want: Vec<_> = items.iter().map(|&i| (i, i * 10)).collect();
            assert_eq!(seen, want, "jobs {jobs}");
        }
    }
}
