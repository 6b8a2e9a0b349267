//! `vhdx check FILE...`: every structure of an image checked, findings listed by severity.
//! Exit 0 when nothing is corrupt (warnings are listed but keep 0), 1 when corruption is
//! found (including an image too damaged to open), 2 when the file cannot be used at all
//! (missing, unreadable, not a disk).
//!
//! Several FILEs are checked `--jobs N` at a time (see [`crate::batch`]) and reported in the
//! order of the arguments; one that cannot be used is reported on standard error and the
//! others are still checked; the exit status is the worst of them. `--json` prints the
//! report object for one FILE, and an array of them for several (files that could not be
//! used are not in it).
//!
//! `--repair` first replays a dirty VHDX log onto the file (the spec's recovery after a
//! crash; safe to interrupt, since the log stays valid until the headers are rewritten at the
//! end, so running it again finishes the job), then checks the result.

use super::{ChainArgs, CliError};
use crate::batch::{run_ordered, JobsArg};
use crate::output::emit;
use crate::{EXIT_CORRUPT, EXIT_OK};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use vhdx_core::{CheckSummary, ErrorKind, Finding, Report, Severity};

/// Arguments of `vhdx check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The images (VHDX or VHD); several are checked --jobs at a time.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    #[command(flatten)]
    pub chain: ChainArgs,

    /// Replay a dirty VHDX log onto the file before checking (the file is modified; refused
    /// while a virtual machine, QEMU or another writer has the disk open).
    #[arg(long)]
    pub repair: bool,

    #[command(flatten)]
    pub jobs: JobsArg,

    /// Print the report as JSON (an array of reports for several FILEs).
    #[arg(long)]
    pub json: bool,
}

/// Runs `vhdx check`.
pub fn run(args: &CheckArgs) -> Result<u8, CliError> {
    if let [file] = args.files.as_slice() {
        let output = check_one(file, args)?;
        emit(args.json, &output, |out| render(out, &output))?;
        return Ok(status(&output));
    }
    let mut worst = EXIT_OK;
    let mut reports = Vec::new();
    let mut written: io::Result<()> = Ok(());
    run_ordered(
        &args.files,
        args.jobs.jobs,
        |_, file| check_one(file, args),
        |_, result| match result {
            Ok(output) => {
                worst = worst.max(status(&output));
                if args.json {
                    reports.push(output);
                } else if written.is_ok() {
                    written = emit(false, &output, |out| render(out, &output));
                }
            }
            Err(e) => {
                worst = worst.max(e.code);
                eprintln!("vhdx: error: {e}");
            }
        },
    );
    written?;
    if args.json {
        emit(true, &reports, |_| Ok(()))?;
    }
    Ok(worst)
}

/// The exit status of one report.
fn status(output: &CheckSummary) -> u8 {
    if output.corrupt {
        EXIT_CORRUPT
    } else {
        EXIT_OK
    }
}

/// Checks one file (after the repair `--repair` asks for).
fn check_one(file: &Path, args: &CheckArgs) -> Result<CheckSummary, CliError> {
    let repairs = if args.repair {
        repair(file)?
    } else {
        Vec::new()
    };
    let opened = vhdx_core::Disk::open_with(file, &args.chain.open_options(false));
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
    let mut output = CheckSummary::new(Some(file.display().to_string()), report);
    output.repairs = repairs;
    Ok(output)
}

/// Replays a dirty VHDX log onto the file; returns what was done.
fn repair(path: &Path) -> Result<Vec<String>, CliError> {
    let storage = vhdx_core::storage::FileStorage::open(path)
        .map_err(|e| vhdx_core::Error::io(e, "cannot open the file").in_file(path))?;
    if vhdx_core::chain::detect_format(&storage)? != Some(vhdx_core::Format::Vhdx) {
        return Ok(Vec::new());
    }
    drop(storage);
    let o = vhdx_core::vhdx::replay_log_in_place(path)?;
    let plural = |n: u64| if n == 1 { "entry" } else { "entries" };
    Ok(match o.state.as_str() {
        "dirty" => vec![format!(
            "replayed {} log {} onto the file and cleared the log (file length {} -> {} bytes)",
            o.entries,
            plural(o.entries),
            o.file_len_before,
            o.file_len_after
        )],
        "invalid" => vec![
            "the header named a log without a valid entry sequence: nothing to replay; the log was cleared"
                .to_string(),
        ],
        _ => Vec::new(),
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
pub fn render(out: &mut dyn Write, c: &CheckSummary) -> io::Result<()> {
    let count = |s: Severity| c.findings.iter().filter(|f| f.severity == s).count();
    let path = c.path.as_deref().unwrap_or("<memory>");
    for r in &c.repairs {
        writeln!(out, "{path}: repaired: {r}")?;
    }
    if c.findings.is_empty() {
        return writeln!(out, "{path}: ok, no problems found");
    }
    writeln!(
        out,
        "{}: {} ({} corrupt, {} warning, {} info)",
        path,
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
