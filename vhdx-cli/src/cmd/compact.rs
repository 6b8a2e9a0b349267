//! `vhdx compact FILE...`: give back the space of blocks that hold no live data (see
//! [`vhdx_core::write::compact`]): `quick` packs blocks into the holes and truncates, `full`
//! (the default) first releases all-zero blocks and the blocks that hold only free space of
//! the guest's ext2/3/4 and NTFS volumes (each volume is reported: reclaimed, or skipped and
//! why; `--no-free-space` keeps to all-zero blocks), `retrim` punches holes for the free
//! space and moves nothing. In place, or with `-o OUT` into a compacted copy (the input is left as
//! it was). `--dry-run` reports what would be reclaimed, changing nothing; without `--mode`
//! it reports all three modes.
//!
//! Files are compacted `--jobs N` at a time (see [`crate::batch`]), each by [`compact_one`],
//! which shares nothing with the others; results are printed in the order of the arguments.
//! A failure is reported on standard error, naming the file, and the others still run (exit
//! 2 at the end). On a terminal a progress line shows the file worked on, or for a batch run
//! at once one line for all of them (work done, files complete, time left).
//!
//! `--json` prints one array, always (even for one file), with one object per file and mode
//! in the order of the arguments: `path`, `output` (OUT or null) and the fields of
//! [`CompactStats`] (`mode`, `dry_run`, `file_len_before`, `file_len_after`,
//! `host_bytes_before`, `host_bytes_after`, `bytes_reclaimed`, `blocks_moved`,
//! `bytes_moved`, `zero_blocks_released`, `free_space_pass`, `free_space_blocks_released`,
//! `volumes` (per guest volume: `volume`, `offset`, `length`, `file_system`, `free_bytes`,
//! `blocks_released`, `bytes_reclaimed`, `skipped`, `reason`), `seconds`,
//! `parent_data_bytes`, `note`). Files
//! that failed are not in it.

use super::{ChainArgs, CliError};
use crate::batch::{run_ordered, JobsArg};
use crate::output::{emit, size};
use crate::progress::{with_progress, BatchProgress};
use crate::{EXIT_OK, EXIT_UNUSABLE};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use serde::Serialize;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use vhdx_core::write::compact::{compact_copy, CompactMode, CompactOptions, CompactStats};
use vhdx_core::{Disk, OpenOptions};

/// Arguments of `vhdx compact`.
#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    /// The images (VHDX or VHD); several are compacted --jobs at a time.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// quick: move blocks into the holes and truncate; full: release all-zero blocks first,
    /// then as quick; retrim: punch holes for the free space, moving nothing (default full;
    /// a dry run without --mode reports all three).
    #[arg(long, value_name = "MODE", value_parser = mode_parser())]
    pub mode: Option<CompactMode>,

    /// Write a compacted copy to OUT and leave FILE as it was (one FILE only); OUT appears
    /// only when complete.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,

    /// Report what would be reclaimed and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Full mode: do not read the guest's file systems; release only all-zero blocks
    /// (by default the blocks holding only free space of ext2/3/4 and NTFS volumes go too).
    #[arg(long)]
    pub no_free_space: bool,

    /// Replace OUT if it exists (atomically, once the copy is complete).
    #[arg(long, requires = "output")]
    pub force: bool,

    #[command(flatten)]
    pub chain: ChainArgs,

    #[command(flatten)]
    pub jobs: JobsArg,

    /// Print the results as JSON: an array with one object per file and mode.
    #[arg(long)]
    pub json: bool,
}

/// `--mode`: the names the core parses, listed in the help.
fn mode_parser() -> impl TypedValueParser<Value = CompactMode> {
    PossibleValuesParser::new(["quick", "full", "retrim"]).try_map(|s| s.parse::<CompactMode>())
}

/// One result of `vhdx compact` (an element of the `--json` array).
#[derive(Debug, Serialize)]
pub struct CompactReport {
    /// The image compacted (or, with `-o`, copied).
    pub path: String,
    /// The compacted copy, with `-o`.
    pub output: Option<String>,
    /// What was done, or would be done.
    #[serde(flatten)]
    pub stats: CompactStats,
}

/// Runs `vhdx compact`.
pub fn run(args: &CompactArgs) -> Result<u8, CliError> {
    validate(args)?;
    let modes = modes(args);
    let opts = args.chain.open_options(true);
    // Files run one by one draw their own line; a batch run at once shares one.
    let batch = (args.jobs.jobs > 1 && args.files.len() > 1)
        .then(|| BatchProgress::on_terminal("compacting", args.files.len()))
        .flatten();
    let shown = |print: &mut dyn FnMut()| match &batch {
        Some(b) => b.suspend(print),
        None => print(),
    };
    let mut reports = Vec::new();
    let mut failed = false;
    let mut written: io::Result<()> = Ok(());
    let mut finished = 0;
    run_ordered(
        &args.files,
        args.jobs.jobs,
        |i, file| {
            let on = batch.as_ref().map(|b| (b, i));
            compact_one(file, args.output.as_deref(), &modes, args, &opts, on)
        },
        |file, result| {
            if let Some(b) = &batch {
                b.file_done(finished);
            }
            finished += 1;
            match result {
                Ok(rs) if args.json => reports.extend(rs),
                Ok(rs) if written.is_ok() => shown(&mut || {
                    written = emit(false, &rs, |out| rs.iter().try_for_each(|r| render(out, r)));
                }),
                Ok(_) => {}
                Err(e) => {
                    failed = true;
                    let message = named(file, e);
                    shown(&mut || eprintln!("vhdx: error: {message}"));
                }
            }
        },
    );
    if let Some(b) = &batch {
        b.suspend(|| ());
    }
    written?;
    if args.json {
        emit(true, &reports, |_| Ok(()))?;
    }
    Ok(if failed { EXIT_UNUSABLE } else { EXIT_OK })
}

/// Refuses argument combinations that cannot work, before anything is touched.
fn validate(args: &CompactArgs) -> Result<(), CliError> {
    let Some(out) = &args.output else {
        return Ok(());
    };
    if args.files.len() > 1 {
        return Err(CliError::unusable(format!(
            "-o OUT takes one FILE ({} were given); compact several files in place, or one \
             at a time",
            args.files.len()
        )));
    }
    if out.symlink_metadata().is_err() || args.dry_run {
        return Ok(());
    }
    if same_file(&args.files[0], out) {
        return Err(CliError::unusable(format!(
            "{}: OUT is FILE itself; leave out -o to compact in place",
            out.display()
        )));
    }
    if !args.force {
        return Err(CliError::unusable(format!(
            "{}: the output file already exists; pass --force to replace it",
            out.display()
        )));
    }
    Ok(())
}

/// Whether `a` and `b` name the same file (through links too).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (x.dev(), x.ino()) == (y.dev(), y.ino());
        }
    }
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// The modes to run: `--mode`, else all three for a dry run, else full.
fn modes(args: &CompactArgs) -> Vec<CompactMode> {
    match (args.mode, args.dry_run) {
        (Some(m), _) => vec![m],
        (None, true) => vec![CompactMode::Quick, CompactMode::Full, CompactMode::Retrim],
        (None, false) => vec![CompactMode::Full],
    }
}

/// Compacts (or, for a dry run, measures) one file in every mode of `modes` (a real run
/// takes exactly one), in place or into `output`. Progress goes to file `batch.1` of the
/// batch line `batch.0`, or without a batch to a line of its own (on a terminal).
/// Independent of every other file.
pub fn compact_one(
    file: &Path,
    output: Option<&Path>,
    modes: &[CompactMode],
    args: &CompactArgs,
    opts: &OpenOptions,
    batch: Option<(&BatchProgress, usize)>,
) -> Result<Vec<CompactReport>, vhdx_core::Error> {
    let report = |stats| CompactReport {
        path: file.display().to_string(),
        output: output.map(|o| o.display().to_string()),
        stats,
    };
    let how = |mode| CompactOptions {
        mode,
        free_space: !args.no_free_space,
    };
    if args.dry_run {
        // A compacted copy starts as a byte copy of FILE, so FILE's figures are the copy's.
        let disk = Disk::open_rw(file, opts)?;
        let stats: Result<Vec<_>, _> = modes
            .iter()
            .map(|&m| disk.compact_dry_run(how(m)))
            .collect();
        let closed = disk.close();
        let stats = stats?;
        closed?;
        return Ok(stats.into_iter().map(report).collect());
    }
    let mode = how(modes[0]);
    let work = |progress: Option<&dyn Fn(u64, u64)>| match output {
        Some(out) => compact_copy(file, out, mode, args.force, opts, progress),
        None => Disk::open_rw(file, opts).and_then(|disk| {
            let stats = disk.compact(mode, progress);
            let closed = disk.close();
            let stats = stats?;
            closed.map(|()| stats)
        }),
    };
    let stats = match batch {
        Some((b, i)) => work(Some(&|done, total| b.update(i, done, total))),
        None => with_progress("compacting", work),
    };
    Ok(vec![report(stats?)])
}

/// The error's text, with the file named when the error does not name one.
fn named(file: &Path, e: vhdx_core::Error) -> String {
    match e.path() {
        Some(_) => e.to_string(),
        None => format!("{}: {e}", file.display()),
    }
}

/// `part` as a percentage of `whole`, one decimal.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0%".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// `1 block`, `3 blocks`: `n` and `what`, plural unless `n` is 1.
fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Writes the human summary of one result: one line, and its note on a second line.
pub fn render(out: &mut dyn Write, r: &CompactReport) -> io::Result<()> {
    let s = &r.stats;
    let what = match &r.output {
        Some(o) => format!("{} → {}", r.path, o),
        None => r.path.clone(),
    };
    let mode = match s.mode {
        CompactMode::Quick => "quick",
        CompactMode::Full => "full",
        CompactMode::Retrim => "retrim",
    };
    let idle = s.bytes_reclaimed == 0 && s.blocks_moved == 0 && s.zero_blocks_released == 0;
    if let (true, Some(note)) = (idle, &s.note) {
        // A fixed disk, or a differencing disk whose space its parents hold.
        return writeln!(out, "{what}: {mode}: nothing to do: {note}");
    }
    let share = percent(s.bytes_reclaimed, s.file_len_before);
    let mut line = match (s.mode, s.dry_run) {
        (CompactMode::Retrim, true) => format!(
            "{what}: retrim would punch {} of holes ({share} of the file); the file length \
             stays {}",
            size(s.bytes_reclaimed),
            size(s.file_len_before)
        ),
        (CompactMode::Retrim, false) => format!(
            "{what}: retrim punched {} of holes ({share} of the file); the file length stays {}",
            size(s.bytes_reclaimed),
            size(s.file_len_after)
        ),
        (_, dry) => format!(
            "{what}: {mode}{}: {} → {}, {} {} ({share}); {} {} ({})",
            if dry { " (dry run)" } else { "" },
            size(s.file_len_before),
            size(s.file_len_after),
            if dry { "would reclaim" } else { "reclaimed" },
            size(s.bytes_reclaimed),
            count(s.blocks_moved, "block"),
            if dry { "to move" } else { "moved" },
            size(s.bytes_moved),
        ),
    };
    if s.mode == CompactMode::Full {
        line.push_str(&format!(
            ", {} {}",
            count(s.zero_blocks_released, "all-zero block"),
            if s.dry_run { "to release" } else { "released" },
        ));
        if !s.volumes.is_empty() {
            line.push_str(&format!(
                ", {} of free space {}",
                count(s.free_space_blocks_released, "block"),
                if s.dry_run { "to release" } else { "released" },
            ));
        }
    }
    if let Some(h) = super::trim::host_change(s.host_bytes_before, s.host_bytes_after) {
        line.push_str(&format!("; host allocation {h}"));
    }
    if !s.dry_run {
        line.push_str(&format!("; {:.2} s", s.seconds));
    }
    writeln!(out, "{line}")?;
    render_volumes(out, &s.volumes, s.dry_run)?;
    match &s.note {
        Some(note) => writeln!(out, "  note: {note}"),
        None => Ok(()),
    }
}

/// One line per guest volume of a free-space pass: what its free space gave back, or why
/// it was skipped (shared with `vhdx trim --free-space`).
pub fn render_volumes(
    out: &mut dyn Write,
    volumes: &[vhdx_core::guest::freespace::VolumeFreeSpace],
    dry_run: bool,
) -> io::Result<()> {
    for v in volumes {
        let name = match v.volume {
            0 => "whole disk".to_string(),
            n => format!("volume {n}"),
        };
        let at = format!(
            "{name} ({}, {} at {})",
            v.file_system,
            size(v.length),
            size(v.offset)
        );
        match (&v.skipped, &v.reason, v.free_bytes) {
            (Some(kind), reason, _) => writeln!(
                out,
                "  {at}: skipped ({kind}): {}",
                reason.as_deref().unwrap_or("")
            )?,
            (None, _, free) => writeln!(
                out,
                "  {at}: {} free, {} {}",
                size(free.unwrap_or(0)),
                size(v.bytes_reclaimed),
                if dry_run {
                    "would be reclaimed"
                } else {
                    "reclaimed"
                }
            )?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{count, percent};

    #[test]
    fn percentages_and_counts() {
        assert_eq!(count(1, "all-zero block"), "1 all-zero block");
        assert_eq!(count(0, "block"), "0 blocks");
        assert_eq!(percent(30, 40), "75.0%");
        assert_eq!(percent(1, 3), "33.3%");
        assert_eq!(percent(1, 0), "0%");
    }
}
