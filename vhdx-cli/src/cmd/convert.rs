//! `vhdx convert IN OUT`: copy a disk (with its chain, or a raw file) into a new dynamic or
//! fixed VHDX or VHD, a sparse raw file, or (`--azure`) an Azure-ready fixed VHD. The output
//! format comes from `--format`, `--azure` or, failing both, OUT's extension; an existing
//! OUT is refused unless `--force` is given.

use super::create::{parse_size, CreateType};
use super::{ChainArgs, CliError};
use crate::output::{emit, size};
use crate::progress::with_progress;
use crate::EXIT_OK;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use vhdx_core::ops::convert::{
    convert, format_from_extension, open_source, ConvertOptions, ConvertStats,
};
use vhdx_core::{Disk, DiskType, Format};

/// Formats `--format` and `--input-format` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// VHDX.
    Vhdx,
    /// VHD.
    Vhd,
    /// A raw image (written sparse).
    Raw,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Vhdx => Format::Vhdx,
            FormatArg::Vhd => Format::Vhd,
            FormatArg::Raw => Format::Raw,
        }
    }
}

/// Arguments of `vhdx convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// The image to read: VHDX or VHD (with its parents), or a raw file.
    #[arg(value_name = "IN")]
    pub input: PathBuf,

    /// The file to write; it appears only when complete.
    #[arg(value_name = "OUT")]
    pub output: PathBuf,

    /// Output format; by default taken from OUT's extension (.vhdx/.avhdx, .vhd/.avhd,
    /// .raw/.img/.bin).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,

    /// Format of IN; by default detected (a file with no VHDX or VHD signature and the
    /// extension .raw, .img or .bin is read as raw).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub input_format: Option<FormatArg>,

    /// Provisioning type of a VHDX or VHD output (default dynamic).
    #[arg(long = "type", value_enum)]
    pub disk_type: Option<CreateType>,

    /// Block size of a VHDX or VHD output, with an optional K/M suffix (VHDX default 32M,
    /// VHD 2M).
    #[arg(long, value_parser = parse_block_size)]
    pub block_size: Option<u32>,

    /// Logical sector size of a VHDX output, 512 or 4096 (default: the source's).
    #[arg(long, value_name = "N")]
    pub logical_sector_size: Option<u32>,

    /// Make an Azure-ready disk: a fixed VHD whose virtual size is a whole number of MiB (at
    /// least 20 MiB). Implies `--format vhd --type fixed`; contradicting options are refused,
    /// and so is a source of another size unless `--round-up` is given.
    #[arg(long)]
    pub azure: bool,

    /// With `--azure`: round a virtual size that is not a whole number of MiB up to the next
    /// MiB (and one under 20 MiB up to 20 MiB); the added tail reads as zeros.
    #[arg(long, requires = "azure")]
    pub round_up: bool,

    /// Replace OUT if it exists (atomically, once the new file is complete).
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub chain: ChainArgs,

    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A `--block-size` value: a size (see [`parse_size`]) that fits the formats' 32-bit field.
fn parse_block_size(s: &str) -> Result<u32, String> {
    u32::try_from(parse_size(s)?).map_err(|_| format!("`{s}` is too large for a block size"))
}

/// Opens IN: as `--input-format` says, else detected, else raw when its name says so.
fn open_input(args: &ConvertArgs) -> Result<Disk, CliError> {
    let mut opts = args.chain.open_options(true);
    opts.format = args.input_format.map(Format::from);
    Ok(open_source(&args.input, &opts)?)
}

/// The conversion the arguments ask for.
fn options(args: &ConvertArgs) -> Result<ConvertOptions, CliError> {
    let format = match args.format {
        Some(f) => Format::from(f),
        None if args.azure => Format::Vhd,
        None => format_from_extension(&args.output).ok_or_else(|| {
            CliError::unusable(format!(
                "cannot tell the output format of {} from its extension; pass --format \
                 vhdx, vhd or raw",
                args.output.display()
            ))
        })?,
    };
    let mut opts = ConvertOptions::new(format)
        .overwrite(args.force)
        .azure(args.azure)
        .round_up(args.round_up);
    if let Some(t) = args.disk_type {
        opts = opts.disk_type(match t {
            CreateType::Dynamic => DiskType::Dynamic,
            CreateType::Fixed => DiskType::Fixed,
        });
    }
    if let Some(b) = args.block_size {
        opts = opts.block_size(b);
    }
    if let Some(n) = args.logical_sector_size {
        opts = opts.logical_sector_size(n);
    }
    Ok(opts)
}

/// Runs `vhdx convert`.
pub fn run(args: &ConvertArgs) -> Result<u8, CliError> {
    let opts = options(args)?;
    if !args.force && args.output.symlink_metadata().is_ok() {
        return Err(CliError::unusable(format!(
            "{}: the output file already exists; pass --force to replace it",
            args.output.display()
        )));
    }
    let disk = open_input(args)?;
    let stats = with_progress("converting", |p| convert(&disk, &args.output, &opts, p));
    let stats = stats?;
    emit(args.json, &stats, |out| render(out, &args.output, &stats))?;
    Ok(EXIT_OK)
}

/// Writes the one-line human summary of a conversion.
pub fn render(out: &mut dyn Write, path: &Path, s: &ConvertStats) -> io::Result<()> {
    let mut kind = match s.disk_type {
        Some(t) => format!("{} {}", t.as_str(), s.format.as_str().to_uppercase()),
        None => "sparse raw".to_string(),
    };
    if let Some(b) = s.block_size {
        kind.push_str(&format!(" ({} blocks)", size(u64::from(b))));
    }
    let mut virtual_size = size(s.size);
    if s.size != s.source_size {
        virtual_size.push_str(&format!(" (rounded up from {})", size(s.source_size)));
    }
    writeln!(
        out,
        "wrote {}: {kind}, {virtual_size} virtual; {} of data written, {} skipped as zeros; \
         file {}",
        path.display(),
        size(s.bytes_written),
        size(s.bytes_skipped),
        size(s.file_length)
    )
}
