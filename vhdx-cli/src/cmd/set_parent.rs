//! `vhdx set-parent CHILD PARENT`: point a differencing disk at its parent again after the
//! parent moved, or at a copy of it (see [`vhdx_core::write::relink`]; like Hyper-V's
//! `Set-VHD -ParentPath`). The child's parent locators are rewritten (a path relative to the
//! child's folder and an absolute one); a PARENT whose identity differs from the one the
//! child recorded is refused unless `--ignore-id-mismatch` (which records PARENT's identity).
//! The child's content and data identity do not change.

use super::CliError;
use crate::output::emit;
use crate::EXIT_OK;
use std::io::{self, Write};
use std::path::PathBuf;
use vhdx_core::write::{set_parent, SetParentStats};

/// Arguments of `vhdx set-parent`.
#[derive(Debug, clap::Args)]
pub struct SetParentArgs {
    /// The differencing disk (VHDX or VHD); its parent locators are rewritten.
    #[arg(value_name = "CHILD")]
    pub child: PathBuf,

    /// The parent the child is to use (same format).
    #[arg(value_name = "PARENT")]
    pub parent: PathBuf,

    /// Accept a PARENT whose identity differs from the one the child recorded, and record
    /// PARENT's identity: only for a parent that holds the data the child was made on (a
    /// copy of it); any other parent corrupts what the child reads.
    #[arg(long)]
    pub ignore_id_mismatch: bool,

    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vhdx set-parent`.
pub fn run(args: &SetParentArgs) -> Result<u8, CliError> {
    let stats = set_parent(&args.child, &args.parent, args.ignore_id_mismatch)?;
    emit(args.json, &stats, |out| render(out, &stats))?;
    Ok(EXIT_OK)
}

/// Writes the human summary: what the child now records, and the note if any.
pub fn render(out: &mut dyn Write, s: &SetParentStats) -> io::Result<()> {
    writeln!(out, "{}: parent set to {}", s.path, s.parent)?;
    writeln!(out, "  relative path: {}", s.relative_path)?;
    writeln!(out, "  absolute path: {}", s.absolute_path)?;
    let how = if s.id_mismatch_ignored {
        format!("recorded anew, was {}", s.previous_ids.join(" or "))
    } else {
        "as recorded".into()
    };
    writeln!(out, "  parent id:     {} ({how})", s.parent_id)?;
    if let Some(note) = &s.note {
        writeln!(out, "  note: {note}")?;
    }
    Ok(())
}
