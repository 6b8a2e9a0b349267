//! Output helpers shared by the subcommands: JSON to standard output, sizes with binary
//! suffixes, and aligned `label: value` blocks for the human form.
//!
//! Each command builds one serializable model; `--json` prints it as is and the human form
//! renders the same model, so both always carry the same facts.

use serde::Serialize;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Sizes with binary suffixes, the same the library writes in its messages.
pub use vhdx_core::bytes::{human_size as size, human_size_exact as size_exact};

/// Whether `--quiet` was given: no human report on standard output and no progress line
/// (errors, and JSON asked for with `--json`, are still printed).
static QUIET: AtomicBool = AtomicBool::new(false);

/// Records `--quiet` (called once, by `main`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Prints a command's report on standard output: `value` as JSON with `--json`, else the
/// human form `human` writes, which `--quiet` leaves out.
pub fn emit<T: Serialize + ?Sized>(
    json: bool,
    value: &T,
    human: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if json {
        print_json(&mut out, value)?;
    } else if !quiet() {
        human(&mut out)?;
    }
    out.flush()
}

/// Prints `value` as pretty JSON followed by a newline.
pub fn print_json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
    writeln!(out)
}

/// A block of `label: value` lines with the values aligned.
#[derive(Debug, Default)]
pub struct Fields {
    rows: Vec<(String, String)>,
}

impl Fields {
    /// Adds one line.
    pub fn add(&mut self, label: impl Into<String>, value: impl Into<String>) {
        self.rows.push((label.into(), value.into()));
    }

    /// Writes the block.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
        for (label, value) in &self.rows {
            writeln!(out, "{:<width$} {value}", format!("{label}:"))?;
        }
        Ok(())
    }
}
