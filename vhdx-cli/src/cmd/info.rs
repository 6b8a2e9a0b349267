//! `vhdx info FILE`: what an image is. The model is [`vhdx_core::Info`]; `--json` prints it
//! and the human form renders it. The disk opens without requiring its parent, so a
//! differencing disk whose parent is missing still shows everything it can, plus where the
//! parent was looked for.

use super::{ChainArgs, CliError};
use crate::output::{emit, size, size_exact, Fields};
use crate::EXIT_OK;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use vhdx_core::guest::GuestLayout;
use vhdx_core::ops::info::{ChainUsage, ParentInfo};
use vhdx_core::{Format, Info};

/// Arguments of `vhdx info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// The image (VHDX or VHD).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub chain: ChainArgs,

    /// Count allocated blocks even when the block table is large.
    #[arg(long)]
    pub scan: bool,

    /// Print the facts as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vhdx info`.
pub fn run(args: &InfoArgs) -> Result<u8, CliError> {
    let disk = args.chain.open(&args.file, false)?;
    let info = disk.info(args.scan)?;
    emit(args.json, &info, |out| render(out, &info))?;
    Ok(EXIT_OK)
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Vhdx => "VHDX",
        Format::Vhd => "VHD",
        Format::Raw => "raw",
    }
}

/// Writes the human form of `info`.
pub fn render(out: &mut dyn Write, info: &Info) -> io::Result<()> {
    let mut f = Fields::default();
    if let Some(p) = &info.path {
        f.add("file", p.clone());
    }
    f.add("format", format_name(info.format));
    f.add("type", info.disk_type.as_str());
    f.add("virtual size", size_exact(info.virtual_size));
    if let Some(b) = info.block_size {
        f.add("block size", size(u64::from(b)));
    }
    f.add(
        "sector size",
        format!(
            "{} logical, {} physical",
            info.logical_sector_size, info.physical_sector_size
        ),
    );
    f.add("file size", size_exact(info.file_size));
    if let Some(h) = info.host_allocated_bytes {
        f.add("host allocated", size_exact(h));
    }
    match (&info.block_stats, &info.block_stats_note) {
        (Some(s), _) => {
            f.add(
                "allocated blocks",
                format!(
                    "{} of {} ({})",
                    s.allocated_blocks,
                    s.total_blocks,
                    size(s.allocated_bytes)
                ),
            );
            if s.zero_blocks > 0 {
                f.add("zero blocks", s.zero_blocks.to_string());
            }
            f.add("fragmentation", format!("{}%", s.fragmentation_percent));
        }
        (None, Some(note)) => f.add("allocated blocks", note.clone()),
        (None, None) => {}
    }
    if let Some(id) = &info.disk_id {
        f.add("disk id", id.clone());
    }
    if let Some(v) = &info.vhdx {
        f.add(
            "header",
            format!(
                "sequence {}, current header {}",
                v.header_sequence, v.current_header
            ),
        );
        let log = match v.log.state.as_str() {
            "clean" => "clean".to_string(),
            state => {
                let mut s = format!(
                    "{state} ({} entr{}",
                    v.log.entries,
                    if v.log.entries == 1 { "y" } else { "ies" }
                );
                if v.log.replayed_in_memory {
                    s.push_str(", replayed in memory; the file was not changed");
                }
                s.push(')');
                s
            }
        };
        f.add("log", log);
        f.add("data write guid", v.data_write_guid.clone());
        f.add("chunk ratio", v.chunk_ratio.to_string());
        if let Some(c) = &v.creator {
            f.add("creator", c.clone());
        }
    }
    if let Some(v) = &info.vhd {
        f.add(
            "creator",
            format!(
                "{:?} {} on {:?}",
                v.creator_application.trim_end(),
                v.creator_version,
                v.creator_host_os.trim_end()
            ),
        );
        f.add(
            "geometry",
            format!(
                "{} cylinders, {} heads, {} sectors per track",
                v.geometry.cylinders, v.geometry.heads, v.geometry.sectors_per_track
            ),
        );
        f.add(
            "footer",
            format!(
                "{} copy used, checksum {}",
                v.footer_used,
                if v.footer_checksum_ok { "ok" } else { "BAD" }
            ),
        );
        if v.saved_state {
            f.add("saved state", "yes");
        }
    }
    f.write(out)?;
    if let Some(p) = &info.parent {
        render_parent(out, info.path.as_deref().unwrap_or("CHILD"), p)?;
    }
    if info.chain.len() > 1 || info.parent.is_some() {
        writeln!(out, "chain:")?;
        for (depth, c) in info.chain.iter().enumerate() {
            writeln!(
                out,
                "  {depth}: {} ({} {})",
                c.path,
                format_name(c.format),
                c.disk_type.as_str()
            )?;
        }
    }
    match (&info.chain_usage, &info.chain_usage_note) {
        (Some(u), _) => render_chain_usage(out, u)?,
        (None, Some(note)) => writeln!(out, "chain usage: {note}")?,
        (None, None) => {}
    }
    match (&info.guest, &info.guest_note) {
        (Some(g), _) => render_guest(out, g)?,
        (None, Some(note)) => writeln!(out, "guest: {note}")?,
        (None, None) => {}
    }
    if !info.warnings.is_empty() {
        writeln!(out, "warnings:")?;
        for w in &info.warnings {
            match w.offset {
                Some(o) => writeln!(out, "  {} at {o:#x}: {}", w.structure, w.message)?,
                None => writeln!(out, "  {}: {}", w.structure, w.message)?,
            }
        }
    }
    Ok(())
}

/// What the guest sees: the partition table, then one line per volume (number, offset,
/// size, partition type, file system, GPT name), then what the table reading tolerated.
fn render_guest(out: &mut dyn Write, g: &GuestLayout) -> io::Result<()> {
    writeln!(out, "partition table: {}", g.table)?;
    if g.volumes.is_empty() {
        writeln!(out, "volumes: none")?;
    } else {
        let mut rows = vec![[
            "#".to_string(),
            "offset (bytes)".to_string(),
            "size".to_string(),
            "type".to_string(),
            "file system".to_string(),
            "name".to_string(),
        ]];
        for v in &g.volumes {
            let (ty, name) = match &v.partition {
                Some(p) => {
                    let code = match (p.mbr_type, p.type_guid) {
                        (Some(t), _) => format!("{t:#04x}"),
                        (None, Some(g)) => g.to_string(),
                        (None, None) => String::new(),
                    };
                    let ty = match p.type_name {
                        Some(n) if p.mbr_type.is_some() => format!("{code} {n}"),
                        Some(n) => n.to_string(),
                        None => code,
                    };
                    (ty, p.name.clone().unwrap_or_default())
                }
                None => ("(whole disk)".to_string(), String::new()),
            };
            rows.push([
                v.number.to_string(),
                v.offset.to_string(),
                size(v.length),
                ty,
                v.kind.to_string(),
                name,
            ]);
        }
        writeln!(out, "volumes:")?;
        let widths: Vec<usize> = (0..6)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            let mut line = String::from(" ");
            for (c, cell) in r.iter().enumerate() {
                line.push_str(&format!(" {cell:<w$}", w = widths[c]));
            }
            writeln!(out, "{}", line.trim_end())?;
        }
    }
    for w in &g.warnings {
        writeln!(out, "  warning: {w}")?;
    }
    Ok(())
}

/// Where the bytes are read from: one line per level with its file name, then the bytes no
/// file holds and the note on reclaiming the parents' share.
fn render_chain_usage(out: &mut dyn Write, u: &ChainUsage) -> io::Result<()> {
    writeln!(
        out,
        "chain usage (where the virtual disk's bytes are read from):"
    )?;
    for l in &u.levels {
        let name = Path::new(&l.path)
            .file_name()
            .map_or_else(|| l.path.clone(), |n| n.to_string_lossy().into_owned());
        let mut line = format!("  {}: {name}: {} data", l.depth, size(l.data_bytes));
        if l.zero_bytes > 0 {
            line.push_str(&format!(", {} marked zero", size(l.zero_bytes)));
        }
        writeln!(out, "{line}")?;
    }
    writeln!(
        out,
        "  in no file (reads as zeros): {}",
        size(u.unallocated_bytes)
    )?;
    writeln!(out, "  {}", u.note)
}

/// The parent link: locators, identities, and what became of the link. A broken link
/// (parent missing, or another disk's identity) comes with the command that repairs it.
fn render_parent(out: &mut dyn Write, child: &str, p: &ParentInfo) -> io::Result<()> {
    writeln!(out, "parent locators:")?;
    if p.locators.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for l in &p.locators {
        writeln!(out, "  {}: {}", l.key, l.value)?;
    }
    if !p.expected_ids.is_empty() {
        writeln!(out, "parent id expected: {}", p.expected_ids.join(" or "))?;
    }
    match p.status.as_str() {
        "ok" | "ignored_mismatch" => {
            let path = p.resolved_path.as_deref().unwrap_or("?");
            writeln!(out, "parent: {path}")?;
            let linkage = if p.status == "ok" {
                "ok (identity matches)".to_string()
            } else {
                format!(
                    "MISMATCH ignored (found {})",
                    p.actual_id.as_deref().unwrap_or("?")
                )
            };
            writeln!(out, "parent linkage: {linkage}")?;
            if p.status == "ignored_mismatch" {
                writeln!(
                    out,
                    "  if {path} holds the data the child was made on, record its identity: \
                     vhdx set-parent {child} {path} --ignore-id-mismatch"
                )?;
            }
        }
        status => {
            writeln!(out, "parent: {}", status.replace('_', " "))?;
            if !p.tried.is_empty() {
                writeln!(out, "  tried:")?;
                for t in &p.tried {
                    writeln!(out, "    {t}")?;
                }
            }
            if let Some(e) = &p.error {
                writeln!(out, "  error: {e}")?;
            }
            writeln!(out, "  pass --parent PATH to name the parent image")?;
            match (status, p.resolved_path.as_deref()) {
                ("linkage_mismatch", Some(found)) => writeln!(
                    out,
                    "  if {found} holds the data the child was made on, relink to it: vhdx \
                     set-parent {child} {found} --ignore-id-mismatch"
                )?,
                ("not_found" | "linkage_mismatch" | "refused" | "error" | "not_opened", _) => {
                    writeln!(
                        out,
                        "  fix the link once the parent is found: vhdx set-parent {child} PARENT"
                    )?
                }
                _ => {}
            }
        }
    }
    Ok(())
}
