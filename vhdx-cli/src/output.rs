//! Output helpers shared by the subcommands: JSON to standard output, sizes with binary
//! suffixes, and aligned `label: value` blocks for the human form.
//!
//! Each command builds one serializable model; `--json` prints it as is and the human form
//! renders the same model, so both always carry the same facts.

use serde::Serialize;
use std::io::{self, Write};

/// Prints `value` as pretty JSON followed by a newline.
pub fn print_json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
    writeln!(out)
}

/// `n` with a binary suffix: `512 B`, `4 KiB`, `1.5 GiB` (at most two decimals).
pub fn size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {}", UNITS[unit])
}

/// `n` with a binary suffix and the exact byte count: `64 MiB (67108864 bytes)`.
pub fn size_exact(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else {
        format!("{} ({n} bytes)", size(n))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_suffixes() {
        for (n, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (1536, "1.5 KiB"),
            (64 << 20, "64 MiB"),
            ((3 << 30) + (1 << 29), "3.5 GiB"),
            (1 << 40, "1 TiB"),
            (u64::MAX, "16 EiB"),
        ] {
            assert_eq!(size(n), want, "{n}");
        }
        assert_eq!(size_exact(100), "100 bytes");
        assert_eq!(size_exact(2048), "2 KiB (2048 bytes)");
    }
}
