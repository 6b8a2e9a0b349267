//! `vhdx resize FILE SIZE` and `vhdx resize FILE --to-minimum`: change a disk's virtual size
//! (see [`vhdx_core::write::resize`]; like Hyper-V's `Resize-VHD`). Every type grows; a disk
//! shrinks only when no data lies past the new end (otherwise the error names where the data
//! ends), and `--to-minimum` shrinks to that end rounded up to a whole block (fixed disks: a
//! whole MiB). A differencing disk keeps its parent's size. Crash-safe: an interrupted
//! resize leaves the old or the new size, and running it again finishes.

use super::create::parse_size;
use super::{ChainArgs, CliError};
use crate::output::{emit, size};
use crate::progress::with_progress;
use crate::EXIT_OK;
use std::io::{self, Write};
use std::path::PathBuf;
use vhdx_core::write::resize::{resize, resize_to_minimum, ResizeStats};

/// Arguments of `vhdx resize`.
#[derive(Debug, clap::Args)]
pub struct ResizeArgs {
    /// The image (VHDX or VHD); it is changed.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The new virtual size, in bytes or with a K, M, G or T suffix (a multiple of the
    /// logical sector size; VHD at most 2040 GiB, VHDX 64 TiB).
    #[arg(
        value_name = "SIZE",
        value_parser = parse_size,
        required_unless_present = "to_minimum",
        conflicts_with = "to_minimum"
    )]
    pub size: Option<u64>,

    /// Shrink to the end of the last data, rounded up to a whole block (fixed disks: MiB).
    #[arg(long)]
    pub to_minimum: bool,

    #[command(flatten)]
    pub chain: ChainArgs,

    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vhdx resize`.
pub fn run(args: &ResizeArgs) -> Result<u8, CliError> {
    let opts = args.chain.open_options(true);
    let stats = with_progress("resizing", |progress| match args.size {
        Some(n) => resize(&args.file, n, &opts, progress),
        None => resize_to_minimum(&args.file, &opts, progress),
    });
    let stats = stats?;
    emit(args.json, &stats, |out| render(out, &stats))?;
    Ok(EXIT_OK)
}

/// Writes the one-line human summary of a resize, and its note on a second line.
pub fn render(out: &mut dyn Write, s: &ResizeStats) -> io::Result<()> {
    let mut line = format!(
        "resized {}: {} → {} ({} → {} bytes); file length {} → {}",
        s.path,
        size(s.size_before),
        size(s.size_after),
        s.size_before,
        s.size_after,
        size(s.file_len_before),
        size(s.file_len_after),
    );
    if s.block_table_grown {
        line.push_str(&format!(
            "; block table grown, {} moved out of its way ({})",
            match s.blocks_moved {
                1 => "1 block".to_string(),
                n => format!("{n} blocks"),
            },
            size(s.bytes_moved)
        ));
    }
    if s.gpt_relocated {
        line.push_str("; backup GPT moved to the new end");
    }
    writeln!(out, "{line}")?;
    if let Some(note) = &s.note {
        writeln!(out, "  note: {note}")?;
    }
    Ok(())
}
