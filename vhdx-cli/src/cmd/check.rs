//! `vhdx check FILE`: every structure of an image checked, findings listed by severity.
//! Exit 0 when nothing is corrupt (warnings are listed but keep 0), 1 when corruption is
//! found (including an image too damaged to open), 2 when the file cannot be used at all
//! (missing, unreadable, not a disk).

use super::{ChainArgs, CliError};
use crate::output::print_json;
use crate::{EXIT_CORRUPT, EXIT_OK};
use serde::Serialize;
use std::io::{self, Write};
use std::path::PathBuf;
use vhdx_core::{ErrorKind, Finding, Report, Severity};

/// Arguments of `vhdx check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The image (VHDX or VHD).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub chain: ChainArgs,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The outcome of a check, printed as JSON or rendered for people.
#[derive(Debug, Serialize)]
pub struct CheckOutput {
    /// The image checked.
    pub path: String,
    /// `"ok"`, `"warnings"` or `"corrupt"`.
    pub status: &'static str,
    /// Whether corruption was found (exit status 1).
    pub corrupt: bool,
    /// Every finding, most serious first.
    pub findings: Vec<Finding>,
}

impl CheckOutput {
    fn new(path: String, report: Report) -> Self {
        let mut findings = report.findings;
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        let worst = findings.iter().map(|f| f.severity).max();
        CheckOutput {
            path,
            status: match worst {
                Some(Severity::Corrupt) => "corrupt",
                Some(Severity::Warning) => "warnings",
                _ => "ok",
            },
            corrupt: worst == Some(Severity::Corrupt),
            findings,
        }
    }
}

/// Runs `vhdx check`.
pub fn run(args: &CheckArgs) -> Result<u8, CliError> {
    let opened = vhdx_core::Disk::open_with(&args.file, &args.chain.open_options(false));
    let report = match opened {
        Ok(disk) => disk.check(),
        // An image too damaged to open is a finding of corruption, not an unusable input.
        Err(e) if e.kind() == ErrorKind::Corrupt => {
            let mut r = Report::default();
            r.push(Finding::from_error(Severity::Corrupt, &e));
            r.add(
                Severity::Info,
                "image",
                None,
                "the image cannot be opened, so no further structure was checked",
            );
            r
        }
        Err(e) => return Err(e.into()),
    };
    let output = CheckOutput::new(args.file.display().to_string(), report);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if args.json {
        print_json(&mut out, &output)?;
    } else {
        render(&mut out, &output)?;
    }
    out.flush()?;
    Ok(if output.corrupt {
        EXIT_CORRUPT
    } else {
        EXIT_OK
    })
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Corrupt => "CORRUPT",
    }
}

/// Writes the human form of a check.
pub fn render(out: &mut dyn Write, c: &CheckOutput) -> io::Result<()> {
    let count = |s: Severity| c.findings.iter().filter(|f| f.severity == s).count();
    if c.findings.is_empty() {
        return writeln!(out, "{}: ok, no problems found", c.path);
    }
    writeln!(
        out,
        "{}: {} ({} corrupt, {} warning, {} info)",
        c.path,
        c.status,
        count(Severity::Corrupt),
        count(Severity::Warning),
        count(Severity::Info)
    )?;
    for f in &c.findings {
        let at = f.offset.map(|o| format!(" at {o:#x}")).unwrap_or_default();
        writeln!(
            out,
            "  {:<8} {}{at}: {}",
            severity_name(f.severity),
            f.structure,
            f.message
        )?;
    }
    Ok(())
}
