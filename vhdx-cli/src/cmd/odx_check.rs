//! `vhdx odx-check FILE`: would Hyper-V offload copies (ODX) for this disk? The model is
//! [`vhdx_core::guest::OdxReport`]: one finding per rule and subject (the image files on the
//! host, the controller, each guest volume, each named guest file). `--json` prints it;
//! the human form is a verdict line and a table of the findings.
//!
//! Exit status: 0 everything examined is eligible, 1 something is not, 2 the disk could not
//! be read (or the arguments name no such volume).

use super::{ChainArgs, CliError};
use crate::output::emit;
use crate::EXIT_OK;
use std::io::{self, Write};
use std::path::PathBuf;
use vhdx_core::guest::{odx_check_disk, Controller, OdxOptions, OdxReport, OdxStatus};

/// Exit status: something examined rules ODX out.
const EXIT_NOT_ELIGIBLE: u8 = 1;

/// `--controller`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ControllerArg {
    /// A virtual SCSI controller.
    #[default]
    Scsi,
    /// A virtual IDE controller (generation 1 boot disks).
    Ide,
}

/// Arguments of `vhdx odx-check`.
#[derive(Debug, clap::Args)]
pub struct OdxCheckArgs {
    /// The image (VHDX or VHD; a differencing disk is read through its chain).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Examine only partition N (1-based; 0 = a file system on the whole disk). Default:
    /// every volume.
    #[arg(long, value_name = "N")]
    pub volume: Option<u32>,

    /// A file inside the volume to examine (repeatable), e.g. `/VMs/data.bin` or
    /// `C:\VMs\data.bin`; looked up case-insensitively.
    #[arg(long = "file", value_name = "GUEST_PATH")]
    pub files: Vec<String>,

    /// The virtual controller the disk is attached to.
    #[arg(long, value_enum, default_value_t, value_name = "scsi|ide")]
    pub controller: ControllerArg,

    #[command(flatten)]
    pub chain: ChainArgs,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vhdx odx-check`.
pub fn run(args: &OdxCheckArgs) -> Result<u8, CliError> {
    let disk = args.chain.open(&args.file, true)?;
    let opts = OdxOptions {
        volume: args.volume,
        files: args.files.clone(),
        controller: match args.controller {
            ControllerArg::Scsi => Controller::Scsi,
            ControllerArg::Ide => Controller::Ide,
        },
    };
    let report = odx_check_disk(&disk, &opts)?;
    emit(args.json, &report, |out| render(out, &report))?;
    Ok(if report.eligible {
        EXIT_OK
    } else {
        EXIT_NOT_ELIGIBLE
    })
}

/// Writes the human form: the verdict, then one row per finding (status, rule, subject,
/// message) with the columns aligned.
pub fn render(out: &mut dyn Write, r: &OdxReport) -> io::Result<()> {
    let failed = r.failures().count();
    if r.eligible {
        writeln!(out, "{}: eligible for ODX (every check passed)", r.path)?;
    } else {
        writeln!(
            out,
            "{}: NOT eligible for ODX ({failed} check{} failed)",
            r.path,
            if failed == 1 { "" } else { "s" }
        )?;
    }
    let rows: Vec<[&str; 4]> = r
        .findings
        .iter()
        .map(|f| {
            let status = match f.status {
                OdxStatus::Pass => "pass",
                OdxStatus::Fail => "FAIL",
                OdxStatus::Info => "info",
            };
            [
                status,
                f.rule.as_str(),
                f.subject.as_str(),
                f.message.as_str(),
            ]
        })
        .collect();
    let w: Vec<usize> = (0..3)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for [status, rule, subject, message] in rows {
        writeln!(
            out,
            "  {status:<w0$}  {rule:<w1$}  {subject:<w2$}  {message}",
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        )?;
    }
    Ok(())
}
