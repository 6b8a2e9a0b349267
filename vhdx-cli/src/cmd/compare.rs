//! `vhdx compare A B`: whether two disks read the same (see [`vhdx_core::ops::compare`]),
//! with the exit statuses of `qemu-img compare`: 0 identical, 1 different (the first
//! differing sector is printed), 2 a disk could not be used. Any pair of VHDX, VHD, raw files
//! and differencing chains compares; disks of different sizes are identical when the extra
//! part of the larger one reads as zeros, unless `--strict`.
//!
//! `--json` prints one object: `a`, `b` and the fields of [`Comparison`] (`identical`,
//! `first_difference`, `size_a`, `size_b`, `size_mismatch`, `bytes_compared`,
//! `bytes_skipped`, `seconds`).

use super::convert::FormatArg;
use super::{ChainArgs, CliError};
use crate::output::{emit, size};
use crate::progress::with_progress;
use crate::{EXIT_DIFFERENT, EXIT_OK};
use serde::Serialize;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use vhdx_core::ops::compare::{compare, CompareOptions, Comparison};
use vhdx_core::ops::convert::open_source;
use vhdx_core::{Disk, ErrorKind, Format};

/// Arguments of `vhdx compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The first disk: VHDX or VHD (with its parents), or a raw file.
    #[arg(value_name = "A")]
    pub a: PathBuf,

    /// The second disk.
    #[arg(value_name = "B")]
    pub b: PathBuf,

    /// Disks of different sizes are different, whatever the extra part holds.
    #[arg(long)]
    pub strict: bool,

    /// Format of both inputs; by default detected (a file with no VHDX or VHD signature and
    /// the extension .raw, .img or .bin is read as raw).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub input_format: Option<FormatArg>,

    /// Parent image for the next level of B's chain (repeatable, nearest first); --parent
    /// names A's.
    #[arg(long = "parent-b", value_name = "PATH")]
    pub parents_b: Vec<PathBuf>,

    #[command(flatten)]
    pub chain: ChainArgs,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The result of `vhdx compare` (its `--json` object).
#[derive(Debug, Serialize)]
pub struct CompareReport {
    /// The first disk.
    pub a: String,
    /// The second disk.
    pub b: String,
    /// What the comparison found.
    #[serde(flatten)]
    pub result: Comparison,
}

/// Runs `vhdx compare`.
pub fn run(args: &CompareArgs) -> Result<u8, CliError> {
    let mut opts = args.chain.open_options(true);
    opts.format = args.input_format.map(Format::from);
    let a = open(&args.a, &opts, "")?;
    opts.parents = args.parents_b.clone();
    let b = open(&args.b, &opts, " (B's parents: --parent-b)")?;
    let copts = CompareOptions {
        strict: args.strict,
    };
    let result = with_progress("comparing", |p| compare(&a, &b, &copts, p))?;
    let report = CompareReport {
        a: args.a.display().to_string(),
        b: args.b.display().to_string(),
        result,
    };
    emit(args.json, &report, |out| render(out, &report))?;
    Ok(if result.identical {
        EXIT_OK
    } else {
        EXIT_DIFFERENT
    })
}

/// Opens one side, naming the file in the error when the core did not; `hint` follows the
/// message of a parent that was not found or was refused (B's are given with --parent-b).
fn open(path: &Path, opts: &vhdx_core::OpenOptions, hint: &str) -> Result<Disk, CliError> {
    open_source(path, opts).map_err(|e| {
        let hint = match e.kind() {
            ErrorKind::ParentNotFound | ErrorKind::PolicyRefused => hint,
            _ => "",
        };
        match e.path() {
            Some(_) => CliError::unusable(format!("{e}{hint}")),
            None => CliError::unusable(format!("{}: {e}{hint}", path.display())),
        }
    })
}

/// Writes the human form: a size warning when the sizes differ, then the verdict.
pub fn render(out: &mut dyn Write, r: &CompareReport) -> io::Result<()> {
    let c = &r.result;
    if c.size_mismatch {
        writeln!(
            out,
            "sizes differ: {} is {}, {} is {}{}",
            r.a,
            size(c.size_a),
            r.b,
            size(c.size_b),
            if c.identical {
                "; the extra part reads as zeros"
            } else {
                ""
            }
        )?;
    }
    match (c.identical, c.first_difference) {
        (true, _) => writeln!(
            out,
            "identical: {} compared, {} skipped (zeros on both sides); {:.2} s",
            size(c.bytes_compared),
            size(c.bytes_skipped),
            c.seconds
        ),
        (false, Some(at)) => writeln!(
            out,
            "content mismatch at offset {at} ({at:#x}, {}): the first sector that differs",
            size(at)
        ),
        (false, None) => writeln!(out, "different: --strict and the sizes differ"),
    }
}
