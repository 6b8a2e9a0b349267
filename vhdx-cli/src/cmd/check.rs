//! `vhdx check FILE`: every structure of an image checked, findings listed by severity.
//! Exit 0 when nothing is corrupt (warnings are listed but keep 0), 1 when corruption is
//! found (including an image too damaged to open), 2 when the file cannot be used at all
//! (missing, unreadable, not a disk).
//!
//! `--repair` first replays a dirty VHDX log onto the file (the spec's recovery after a
//! crash; safe to interrupt, since the log stays valid until the headers are rewritten at the
//! end, so running it again finishes the job), then checks the result.

use super::{ChainArgs, CliError};
use crate::output::print_json;
use crate::{EXIT_CORRUPT, EXIT_OK};
use std::io::{self, Write};
use std::path::PathBuf;
use vhdx_core::{CheckSummary, ErrorKind, Finding, Report, Severity};

/// Arguments of `vhdx check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The image (VHDX or VHD).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub chain: ChainArgs,

    /// Replay a dirty VHDX log onto the file before checking (the file is modified; refused
    /// while a virtual machine, QEMU or another writer has the disk open).
    #[arg(long)]
    pub repair: bool,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vhdx check`.
pub fn run(args: &CheckArgs) -> Result<u8, CliError> {
    let repairs = if args.repair {
        repair(&args.file)?
    } else {
        Vec::new()
    };
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
    let mut output = CheckSummary::new(Some(args.file.display().to_string()), report);
    output.repairs = repairs;
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

/// Replays a dirty VHDX log onto the file; returns what was done.
fn repair(path: &std::path::Path) -> Result<Vec<String>, CliError> {
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
