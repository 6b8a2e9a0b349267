//! `vhdx create FILE --size SIZE`: make a new VHDX or VHD disk — fixed, dynamic, or
//! differencing when `--parent` is given — and print what was made (the `vhdx info` facts).
//! The format comes from `--format` or FILE's extension (.vhdx/.avhdx, .vhd/.avhd).

use super::CliError;
use crate::output::emit;
use crate::EXIT_OK;
use std::path::PathBuf;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::{Disk, DiskType, Format, OpenOptions};

/// Formats `--format` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CreateFormat {
    /// VHDX.
    Vhdx,
    /// VHD.
    Vhd,
}

/// Types `--type` names (differencing comes from `--parent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CreateType {
    /// Blocks allocated on first write.
    Dynamic,
    /// Every block preallocated.
    Fixed,
}

/// Arguments of `vhdx create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The disk to create; an existing file is never overwritten.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Virtual size, in bytes or with a K, M, G or T suffix (powers of 1024); by default the
    /// parent's size.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,

    /// Provisioning type (default dynamic; differencing when --parent is given).
    #[arg(long = "type", value_enum)]
    pub disk_type: Option<CreateType>,

    /// Container format; by default taken from FILE's extension.
    #[arg(long, value_enum)]
    pub format: Option<CreateFormat>,

    /// Make a differencing disk over this parent (same format).
    #[arg(long, value_name = "PARENT")]
    pub parent: Option<PathBuf>,

    /// Block size with an optional K/M suffix (VHDX default 32M, 2M for differencing; VHD 2M).
    #[arg(long, value_parser = parse_size)]
    pub block_size: Option<u64>,

    /// Logical sector size, 512 or 4096 (VHD: 512).
    #[arg(long, value_name = "N")]
    pub logical_sector_size: Option<u32>,

    /// Physical sector size, 512 or 4096 (VHDX; default 4096).
    #[arg(long, value_name = "N")]
    pub physical_sector_size: Option<u32>,

    /// Print what was made as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parses `123`, `64K`, `10M`, `2G`, `1T` (also `KiB`/`MiB`/… and `KB`/…, all powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (a number with an optional K/M/G/T suffix)"))?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("`{s}`: unknown size suffix `{suffix}`")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Runs `vhdx create`.
pub fn run(args: &CreateArgs) -> Result<u8, CliError> {
    let mut opts = CreateOptions::new();
    if let Some(f) = args.format {
        opts = opts.format(match f {
            CreateFormat::Vhdx => Format::Vhdx,
            CreateFormat::Vhd => Format::Vhd,
        });
    }
    if let Some(t) = args.disk_type {
        opts = opts.disk_type(match t {
            CreateType::Dynamic => DiskType::Dynamic,
            CreateType::Fixed => DiskType::Fixed,
        });
    }
    if let Some(s) = args.size {
        opts = opts.size(s);
    }
    if let Some(b) = args.block_size {
        let b = u32::try_from(b)
            .map_err(|_| CliError::unusable(format!("the block size {b} is too large")))?;
        opts = opts.block_size(b);
    }
    if let Some(n) = args.logical_sector_size {
        opts = opts.logical_sector_size(n);
    }
    if let Some(n) = args.physical_sector_size {
        opts = opts.physical_sector_size(n);
    }
    if let Some(p) = &args.parent {
        opts = opts.parent(p);
    }
    create(&args.file, &opts)?;
    let open = OpenOptions {
        require_parent: false,
        ..OpenOptions::default()
    };
    let info = Disk::open_with(&args.file, &open)?.info(false)?;
    emit(args.json, &info, |out| {
        writeln!(out, "created {}", args.file.display())?;
        super::info::render(out, &info)
    })?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("10m"), Ok(10 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
