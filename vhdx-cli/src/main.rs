//! `vhdx`: inspect, check, map, convert, create, trim, compact, merge, flatten, relink
//! (set-parent) and resize Microsoft VHDX and VHD virtual disks.
//!
//! `main` parses the arguments, runs one subcommand and turns its outcome into the exit
//! status the ROADMAP fixes: 0 success, 1 corruption found, 2 the input could not be used.
//! Every failure is reported as one line, `vhdx: error: ...`, on standard error.

mod batch;
mod cmd;
mod output;
mod progress;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit status: success (warnings included).
pub const EXIT_OK: u8 = 0;
/// Exit status: a check found corruption.
pub const EXIT_CORRUPT: u8 = 1;
/// Exit status: `compare` found the disks different (the same value as [`EXIT_CORRUPT`]).
pub const EXIT_DIFFERENT: u8 = 1;
/// Exit status: the input could not be used (unreadable, not a disk, bad arguments).
pub const EXIT_UNUSABLE: u8 = 2;

/// The exit statuses, at the end of `vhdx --help` and in the manual page.
const EXIT_HELP: &str = "Exit status: 0 success (warnings included; compare: identical); 1 check \
found corruption, compare found the disks different, odx-check found the disk not eligible; \
2 an input could not be used (missing, unreadable, not a disk, in use, bad arguments; in a \
batch, any of the files). JSON output (--json) is described in docs/json.md.";

/// Read, check, create, convert, compact, merge, resize and compare Microsoft VHDX and VHD
/// virtual disks.
#[derive(Debug, Parser)]
#[command(name = "vhdx", version, long_about = None, max_term_width = 100, after_help = EXIT_HELP)]
struct Cli {
    /// Print no human report and no progress line (errors, and --json output, still appear).
    #[arg(short, long, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what an image is: format, sizes, allocation, headers, log, parent link, chain.
    Info(cmd::info::InfoArgs),
    /// Check every structure of an image; exit 1 when corruption is found.
    Check(cmd::check::CheckArgs),
    /// Show where every range of the virtual disk comes from (like `qemu-img map`).
    Map(cmd::map::MapArgs),
    /// Convert an image (and its parent chain) to another format.
    Convert(cmd::convert::ConvertArgs),
    /// Create a new VHDX or VHD disk: fixed, dynamic, or differencing with --parent.
    Create(cmd::create::CreateArgs),
    /// Make a range of the virtual disk read as zeros and give its space back (UNMAP/TRIM).
    Trim(cmd::trim::TrimArgs),
    /// Give back the space of unused and all-zero blocks, in place or into a copy (-o).
    Compact(cmd::compact::CompactArgs),
    /// Merge a differencing disk (and the disks between) into its parent or an ancestor.
    Merge(cmd::merge::MergeArgs),
    /// Write a differencing disk and its chain into a new standalone disk.
    Flatten(cmd::flatten::FlattenArgs),
    /// Point a differencing disk at its parent (after a move, or at a copy of it).
    SetParent(cmd::set_parent::SetParentArgs),
    /// Change the virtual size: grow any disk, shrink when no data lies past the new end.
    Resize(cmd::resize::ResizeArgs),
    /// Whether two disks read the same; exit 1 and the first differing offset when not.
    Compare(cmd::compare::CompareArgs),
    /// Whether Hyper-V can offload copies (ODX) for the disk; exit 1 when it cannot.
    OdxCheck(cmd::odx_check::OdxCheckArgs),
    /// Print the shell completion script for SHELL (for packagers).
    #[command(hide = true)]
    Completions(cmd::completions::CompletionsArgs),
    /// Print the manual page, or write one per subcommand with --dir (for packagers).
    #[command(hide = true)]
    Man(cmd::man::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::set_quiet(cli.quiet);
    let result = match &cli.command {
        Command::Info(a) => cmd::info::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Map(a) => cmd::map::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Create(a) => cmd::create::run(a),
        Command::Trim(a) => cmd::trim::run(a),
        Command::Compact(a) => cmd::compact::run(a),
        Command::Merge(a) => cmd::merge::run(a),
        Command::Flatten(a) => cmd::flatten::run(a),
        Command::SetParent(a) => cmd::set_parent::run(a),
        Command::Resize(a) => cmd::resize::run(a),
        Command::Compare(a) => cmd::compare::run(a),
        Command::OdxCheck(a) => cmd::odx_check::run(a),
        Command::Completions(a) => cmd::completions::run(a),
        Command::Man(a) => cmd::man::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.is_broken_pipe() => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("vhdx: error: {e}");
            ExitCode::from(e.code)
        }
    }
}
