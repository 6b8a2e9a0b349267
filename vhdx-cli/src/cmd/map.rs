//! `vhdx map FILE`: where every range of the virtual disk comes from, following the whole
//! chain. `--json` prints the entries in the shape of `qemu-img map --output=json`; the human
//! table lists every range with its status, like `qemu-img map`'s table but without hiding
//! the holes.

use super::{ChainArgs, CliError};
use crate::output::emit;
use crate::EXIT_OK;
use std::io::{self, Write};
use std::path::PathBuf;
use vhdx_core::ops::map::{map, MapEntry};

/// Arguments of `vhdx map`.
#[derive(Debug, clap::Args)]
pub struct MapArgs {
    /// The image (VHDX or VHD).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub chain: ChainArgs,

    /// Print the map as JSON (a list like `qemu-img map --output=json`).
    #[arg(long)]
    pub json: bool,
}

/// Runs `vhdx map`.
pub fn run(args: &MapArgs) -> Result<u8, CliError> {
    let disk = args.chain.open(&args.file, true)?;
    let entries = map(&disk)?;
    let files: Vec<String> = disk
        .chain()
        .iter()
        .map(|d| {
            d.path()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        })
        .collect();
    emit(args.json, &entries, |out| render(out, &entries, &files))?;
    Ok(EXIT_OK)
}

/// Writes the human table: one line per range; `files[depth]` names the image at `depth`.
pub fn render(out: &mut dyn Write, entries: &[MapEntry], files: &[String]) -> io::Result<()> {
    writeln!(
        out,
        "{:<18} {:<18} {:<12} {:>5} {:<18} File",
        "Offset", "Length", "Status", "Depth", "Mapped to"
    )?;
    for e in entries {
        let status = match (e.data, e.present) {
            (true, _) => "data",
            (false, true) => "zero",
            (false, false) => "unallocated",
        };
        let mapped = e.offset.map(|o| format!("{o:#x}")).unwrap_or_default();
        let file = if e.present {
            files
                .get(e.depth as usize)
                .map(String::as_str)
                .unwrap_or("")
        } else {
            ""
        };
        writeln!(
            out,
            "{:<18} {:<18} {:<12} {:>5} {:<18} {file}",
            format!("{:#x}", e.start),
            format!("{:#x}", e.length),
            status,
            e.depth,
            mapped
        )?;
    }
    Ok(())
}
