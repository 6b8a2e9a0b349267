//! `vhdx convert IN OUT`: export a disk (with its chain) to another format. Today the output
//! can be raw only; VHDX and VHD outputs arrive with the write path. The output format comes
//! from `--format` or, failing that, from OUT's extension.

use super::{ChainArgs, CliError};
use crate::output::{print_json, size, size_exact};
use crate::EXIT_OK;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use vhdx_core::ops::convert::{to_raw, ConvertStats};

/// Output formats `--format` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    /// VHDX (not yet supported as an output).
    Vhdx,
    /// VHD (not yet supported as an output).
    Vhd,
    /// A raw image, written sparse.
    Raw,
}

/// Arguments of `vhdx convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// The image to read (VHDX or VHD, with its parents).
    #[arg(value_name = "IN")]
    pub input: PathBuf,

    /// The file to write; replaced atomically when the export completes.
    #[arg(value_name = "OUT")]
    pub output: PathBuf,

    /// Output format; by default taken from OUT's extension (.raw/.img/.bin, .vhdx, .vhd).
    #[arg(long, value_enum)]
    pub format: Option<OutFormat>,

    #[command(flatten)]
    pub chain: ChainArgs,

    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The output format named by a path's extension.
fn format_from_extension(path: &Path) -> Option<OutFormat> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "raw" | "img" | "bin" => Some(OutFormat::Raw),
        "vhdx" | "avhdx" => Some(OutFormat::Vhdx),
        "vhd" | "avhd" => Some(OutFormat::Vhd),
        _ => None,
    }
}

/// Runs `vhdx convert`.
pub fn run(args: &ConvertArgs) -> Result<u8, CliError> {
    let format = match args.format.or_else(|| format_from_extension(&args.output)) {
        Some(f) => f,
        None => {
            return Err(CliError::unusable(format!(
                "cannot tell the output format of {} from its extension; pass --format raw",
                args.output.display()
            )))
        }
    };
    let name = match format {
        OutFormat::Raw => "",
        OutFormat::Vhdx => "VHDX",
        OutFormat::Vhd => "VHD",
    };
    if format != OutFormat::Raw {
        return Err(CliError::unusable(format!(
            "converting to {name} is not yet supported (it arrives with the write path); \
             use --format raw"
        )));
    }
    let disk = args.chain.open(&args.input, true)?;
    let show_progress = io::stderr().is_terminal();
    // Redrawn only when the percentage changes: the callback runs for every piece copied.
    let shown = std::cell::Cell::new(u64::MAX);
    let progress = |done: u64, total: u64| {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if shown.replace(pct) != pct {
            eprint!(
                "\rconverting: {pct:>3}% ({} of {})",
                size(done),
                size(total)
            );
        }
    };
    let stats = to_raw(
        &disk,
        &args.output,
        show_progress.then_some(&progress as &dyn Fn(u64, u64)),
    );
    if show_progress {
        eprintln!();
    }
    let stats = stats?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if args.json {
        print_json(&mut out, &stats)?;
    } else {
        render(&mut out, &args.output, &stats)?;
    }
    out.flush()?;
    Ok(EXIT_OK)
}

/// Writes the human summary of an export.
pub fn render(out: &mut dyn Write, path: &Path, s: &ConvertStats) -> io::Result<()> {
    writeln!(out, "wrote {}: raw, {}", path.display(), size_exact(s.size))?;
    writeln!(
        out,
        "  {} of data written, {} left as holes",
        size(s.bytes_written),
        size(s.bytes_skipped)
    )
}
