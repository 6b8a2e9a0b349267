//! `vhdx flatten CHILD OUT`: write the content of a differencing disk and its whole chain
//! into a new standalone disk (see [`vhdx_core::ops::merge::flatten`]), of CHILD's format
//! unless `--format` names another. The chain is only read; OUT appears only when complete.

use super::convert::{render, FormatArg};
use super::create::CreateType;
use super::{ChainArgs, CliError};
use crate::output::emit;
use crate::progress::with_progress;
use crate::EXIT_OK;
use std::path::PathBuf;
use vhdx_core::ops::merge::{flatten, FlattenOptions};
use vhdx_core::DiskType;

/// Arguments of `vhdx flatten`.
#[derive(Debug, clap::Args)]
pub struct FlattenArgs {
    /// The disk to flatten (a differencing disk, with its parents).
    #[arg(value_name = "CHILD")]
    pub child: PathBuf,

    /// The standalone disk to write.
    #[arg(value_name = "OUT")]
    pub output: PathBuf,

    /// Provisioning type of OUT (default dynamic).
    #[arg(long = "type", value_enum, default_value = "dynamic")]
    pub disk_type: CreateType,

    /// Format of OUT (default: CHILD's).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,

    /// Replace OUT if it exists (atomically, once the new file is complete).
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub chain: ChainArgs,

    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vhdx flatten`.
pub fn run(args: &FlattenArgs) -> Result<u8, CliError> {
    if !args.force && args.output.symlink_metadata().is_ok() {
        return Err(CliError::unusable(format!(
            "{}: the output file already exists; pass --force to replace it",
            args.output.display()
        )));
    }
    let disk = args.chain.open(&args.child, true)?;
    let opts = FlattenOptions {
        format: args.format.map(Into::into),
        disk_type: match args.disk_type {
            CreateType::Dynamic => DiskType::Dynamic,
            CreateType::Fixed => DiskType::Fixed,
        },
        overwrite: args.force,
    };
    let stats = with_progress("flattening", |p| flatten(&disk, &args.output, &opts, p));
    let stats = stats?;
    emit(args.json, &stats, |out| render(out, &args.output, &stats))?;
    Ok(EXIT_OK)
}
