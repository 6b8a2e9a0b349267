//! `vhdx trim FILE OFFSET LENGTH`: make a range of the virtual disk read as zeros and give
//! its space back where the format allows, as a guest's UNMAP/TRIM does (see
//! [`vhdx_core::WritableDisk::trim`]): whole blocks are freed, the rest is zeroed by punching
//! holes in the host file. The disk is opened for writing (locked against QEMU and other
//! writers), trimmed, and closed, so the change is durable when the command returns.
//!
//! `vhdx trim FILE --free-space`: trims, instead of one range, the free space of every guest
//! volume whose allocation map is understood (ext2/3/4, NTFS; see
//! [`vhdx_core::guest::freespace`]) where the file stores it, as `fstrim` in the guest would,
//! and reports each volume (bytes trimmed, or skipped and why).

use super::create::parse_size;
use super::{ChainArgs, CliError};
use crate::output::{emit, size};
use crate::EXIT_OK;
use serde::Serialize;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use vhdx_core::{Disk, VirtualDisk};

/// Arguments of `vhdx trim`.
#[derive(Debug, clap::Args)]
pub struct TrimArgs {
    /// The image (VHDX or VHD); it is changed.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Start of the range in the virtual disk, in bytes or with a K, M, G or T suffix.
    #[arg(value_name = "OFFSET", value_parser = parse_size, required_unless_present = "free_space", conflicts_with = "free_space")]
    pub offset: Option<u64>,

    /// Length of the range, in bytes or with a K, M, G or T suffix.
    #[arg(value_name = "LENGTH", value_parser = parse_size, required_unless_present = "free_space")]
    pub length: Option<u64>,

    /// Trim the free space of the guest's file systems (ext2/3/4, NTFS) instead of a range.
    #[arg(long)]
    pub free_space: bool,

    #[command(flatten)]
    pub chain: ChainArgs,

    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `vhdx trim` did (the `--json` output).
#[derive(Debug, Serialize)]
pub struct TrimReport {
    /// The image.
    pub path: String,
    /// Start of the trimmed range in the virtual disk.
    pub offset: u64,
    /// Length of the trimmed range.
    pub length: u64,
    /// Virtual size of the disk.
    pub virtual_size: u64,
    /// File length before.
    pub file_len_before: u64,
    /// File length after (trimming never moves blocks, so it does not shrink the file:
    /// `vhdx compact` does).
    pub file_len_after: u64,
    /// Bytes the file occupied on the host before, when known.
    pub host_bytes_before: Option<u64>,
    /// Bytes the file occupies on the host after, when known.
    pub host_bytes_after: Option<u64>,
}

/// The length of the file at `path` and the bytes it occupies on the host.
pub fn file_usage(path: &Path) -> Result<(u64, Option<u64>), CliError> {
    let m = std::fs::metadata(path).map_err(|e| {
        CliError::unusable(format!("{}: cannot read its length: {e}", path.display()))
    })?;
    #[cfg(unix)]
    let host = {
        use std::os::unix::fs::MetadataExt;
        Some(m.blocks() * 512)
    };
    #[cfg(not(unix))]
    let host = None;
    Ok((m.len(), host))
}

/// Runs `vhdx trim`.
pub fn run(args: &TrimArgs) -> Result<u8, CliError> {
    let (Some(offset), Some(length)) = (args.offset, args.length) else {
        return run_free_space(args);
    };
    let disk = Disk::open_rw(&args.file, &args.chain.open_options(true))?;
    let (file_len_before, host_bytes_before) = file_usage(&args.file)?;
    let virtual_size = disk.disk().size();
    let trimmed = disk.trim(offset, length);
    // Closed even after a failed trim, so the earlier commits are made durable and the lock
    // is released; the trim's error is the one reported.
    let closed = disk.close();
    trimmed?;
    closed?;
    let (file_len_after, host_bytes_after) = file_usage(&args.file)?;
    let report = TrimReport {
        path: args.file.display().to_string(),
        offset,
        length,
        virtual_size,
        file_len_before,
        file_len_after,
        host_bytes_before,
        host_bytes_after,
    };
    emit(args.json, &report, |out| render(out, &report))?;
    Ok(EXIT_OK)
}

/// What `vhdx trim --free-space` did (the `--json` output).
#[derive(Debug, Serialize)]
pub struct FreeSpaceTrimReport {
    /// The image.
    pub path: String,
    /// Virtual size of the disk.
    pub virtual_size: u64,
    /// Free bytes trimmed, over all volumes.
    pub bytes_trimmed: u64,
    /// File length before.
    pub file_len_before: u64,
    /// File length after (unchanged: `vhdx compact` shrinks the file).
    pub file_len_after: u64,
    /// Bytes the file occupied on the host before, when known.
    pub host_bytes_before: Option<u64>,
    /// Bytes the file occupies on the host after, when known.
    pub host_bytes_after: Option<u64>,
    /// Per guest volume: `volume`, `offset`, `length`, `file_system`, `free_bytes`,
    /// `bytes_reclaimed` (the free bytes trimmed), `skipped` and `reason`.
    pub volumes: Vec<vhdx_core::guest::freespace::VolumeFreeSpace>,
}

/// Runs `vhdx trim FILE --free-space`.
fn run_free_space(args: &TrimArgs) -> Result<u8, CliError> {
    let disk = Disk::open_rw(&args.file, &args.chain.open_options(true))?;
    let (file_len_before, host_bytes_before) = file_usage(&args.file)?;
    let virtual_size = disk.disk().size();
    let trimmed = crate::progress::with_progress("trimming free space", |progress| {
        vhdx_core::guest::freespace::trim_free_space(&disk, progress)
    });
    let closed = disk.close();
    let volumes = trimmed?;
    closed?;
    let (file_len_after, host_bytes_after) = file_usage(&args.file)?;
    let report = FreeSpaceTrimReport {
        path: args.file.display().to_string(),
        virtual_size,
        bytes_trimmed: volumes.iter().map(|v| v.bytes_reclaimed).sum(),
        file_len_before,
        file_len_after,
        host_bytes_before,
        host_bytes_after,
        volumes,
    };
    crate::output::emit(args.json, &report, |out| {
        let host = host_change(report.host_bytes_before, report.host_bytes_after)
            .map(|h| format!("; host allocation {h}"))
            .unwrap_or_default();
        writeln!(
            out,
            "trimmed the free space of {}: {} now reads as zeros{host}",
            report.path,
            size(report.bytes_trimmed)
        )?;
        if report.volumes.is_empty() {
            writeln!(out, "  no volume found")?;
        }
        super::compact::render_volumes(out, &report.volumes, false)
    })?;
    Ok(EXIT_OK)
}

/// `a → b` for two optional host sizes, or nothing when either is unknown.
pub fn host_change(before: Option<u64>, after: Option<u64>) -> Option<String> {
    Some(format!("{} → {}", size(before?), size(after?)))
}

/// Writes the one-line human summary of a trim.
pub fn render(out: &mut dyn Write, r: &TrimReport) -> io::Result<()> {
    let host = host_change(r.host_bytes_before, r.host_bytes_after)
        .map(|h| format!("; host allocation {h}"))
        .unwrap_or_default();
    writeln!(
        out,
        "trimmed {}: {} at offset {} ({:#x}+{:#x}) now reads as zeros; file length {}{host}",
        r.path,
        size(r.length),
        size(r.offset),
        r.offset,
        r.length,
        size(r.file_len_after),
    )
}
