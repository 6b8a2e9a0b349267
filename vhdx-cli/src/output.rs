//! Output helpers shared by the subcommands: JSON to standard output, sizes with binary
//! suffixes, and aligned `label: value` blocks for the human form.
//!
//! Each command builds one serializable model; `--json` prints it as is and the human form
//! renders the same model, so both always carry the same facts.

use serde::Serialize;
use std::io::{self, Write};

/// Sizes with binary suffixes, the same the library writes in its messages.
pub use vhdx_core::bytes::{human_size as size, human_size_exact as size_exact};

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
