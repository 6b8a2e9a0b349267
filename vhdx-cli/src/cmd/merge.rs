//! `vhdx merge CHILD [--into ANCESTOR] [--delete]`: write the content of a differencing disk
//! and of the disks between it and an ancestor into that ancestor (see
//! [`vhdx_core::ops::merge`]), which then reads exactly as CHILD did. Other differencing
//! disks made from the ancestor or from a merged disk no longer read what they were made
//! over: each is named in a warning on standard error (and in `invalidated` with `--json`).

use super::{ChainArgs, CliError};
use crate::output::{emit, size};
use crate::progress::with_progress;
use crate::EXIT_OK;
use std::io::{self, Write};
use std::path::PathBuf;
use vhdx_core::ops::merge::{merge, MergeOptions, MergeStats};

/// Arguments of `vhdx merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The differencing disk whose content is merged; it is only read.
    #[arg(value_name = "CHILD")]
    pub child: PathBuf,

    /// The ancestor to merge into (default: CHILD's parent); the disks between them are
    /// merged too.
    #[arg(long, value_name = "ANCESTOR")]
    pub into: Option<PathBuf>,

    /// Remove CHILD and the disks between it and the ancestor once the merge is complete.
    #[arg(long)]
    pub delete: bool,

    #[command(flatten)]
    pub chain: ChainArgs,

    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vhdx merge`.
pub fn run(args: &MergeArgs) -> Result<u8, CliError> {
    let opts = MergeOptions {
        into: args.into.clone(),
        delete: args.delete,
        open: args.chain.open_options(true),
    };
    let stats = with_progress("merging", |p| merge(&args.child, &opts, p));
    let stats = stats?;
    for w in warnings(&stats) {
        eprintln!("vhdx: warning: {w}");
    }
    emit(args.json, &stats, |out| render(out, &stats))?;
    Ok(EXIT_OK)
}

/// One line per differencing disk the merge invalidated.
fn warnings(s: &MergeStats) -> Vec<String> {
    s.invalidated
        .iter()
        .map(|i| {
            let what = if s.deleted.contains(&i.parent) {
                "removed"
            } else if s.merged.contains(&i.parent) {
                "whose parent changed"
            } else {
                "changed"
            };
            format!(
                "{} is a differencing disk of {} (which this merge {what}): it no longer reads \
                 what it was made over",
                i.path, i.parent
            )
        })
        .collect()
}

/// Writes the human summary of a merge.
pub fn render(out: &mut dyn Write, s: &MergeStats) -> io::Result<()> {
    let n = s.merged.len();
    writeln!(
        out,
        "merged {} into {} ({n} disk{}{}): {} written, {} zeroed, {} already zero; {:.2} s",
        s.child,
        s.ancestor,
        if n == 1 { "" } else { "s" },
        if s.resumed {
            ", completing an interrupted merge"
        } else {
            ""
        },
        size(s.bytes_written),
        size(s.bytes_zeroed),
        size(s.bytes_skipped),
        s.seconds
    )?;
    if s.linkage_id_after == s.linkage_id_before {
        writeln!(
            out,
            "{}: {} {} (unchanged)",
            s.ancestor, s.linkage_id_name, s.linkage_id_after
        )?;
    } else {
        writeln!(
            out,
            "{}: new {} {} (was {})",
            s.ancestor, s.linkage_id_name, s.linkage_id_after, s.linkage_id_before
        )?;
    }
    if !s.deleted.is_empty() {
        writeln!(out, "removed: {}", s.deleted.join(", "))?;
    }
    Ok(())
}
