//! Deep check of a VHDX file: every BAT entry's state and placement, overlaps between blocks,
//! regions, the log and the header section, the log state, and space no structure uses.
//! Problems found while opening (a damaged header or region-table copy) are already in the
//! image's findings; this adds what only a full scan can see.

use super::Vhdx;
use crate::format::vhdx::bat as fb;
use crate::format::vhdx::MIB;
use crate::report::{Report, Severity};

/// A used range of the file, for overlap detection.
struct Extent {
    start: u64,
    end: u64,
    what: String,
    at: u64,
}

/// Checks every structure of `v`, appending findings to `report`.
pub fn check(v: &Vhdx, report: &mut Report) {
    let storage = &*v.storage;
    let file_len = v.file_len();
    let bs = u64::from(v.meta.block_size);
    let cr = v.chunk_ratio;
    let blocks = v.payload_blocks();
    let diff = v.meta.has_parent;
    let bat_off = v.bat.offset();

    let mut used: Vec<Extent> = vec![Extent {
        start: 0,
        end: MIB,
        what: "header section".into(),
        at: 0,
    }];
    for r in [&v.regions.bat, &v.regions.metadata]
        .into_iter()
        .chain(v.regions.others.iter())
    {
        used.push(Extent {
            start: r.offset,
            end: r.offset + r.length,
            what: format!("region {}", r.guid),
            at: r.offset,
        });
    }
    let (lo, ll) = (
        v.headers.current.log_offset.get(),
        u64::from(v.headers.current.log_length.get()),
    );
    if ll > 0 {
        used.push(Extent {
            start: lo,
            end: lo.saturating_add(ll),
            what: "log".into(),
            at: lo,
        });
    }

    let mut partial_chunks: Vec<u64> = Vec::new();
    let mut reserved_bits = 0u64;
    let mut max_findings = 200usize;
    let mut add = |report: &mut Report, sev: Severity, at: u64, msg: String| {
        if max_findings > 0 {
            report.add(sev, "VHDX BAT entry", Some(at), msg);
            max_findings -= 1;
            if max_findings == 0 {
                report.add(
                    sev,
                    "VHDX BAT",
                    Some(bat_off),
                    "further BAT findings omitted",
                );
            }
        }
    };
    let scan = v.bat.for_each(storage, u64::MAX, |idx, e| {
        let at = bat_off + idx * 8;
        let state = fb::entry_state(e);
        let off = fb::entry_offset(e);
        if e & fb::RESERVED_MASK != 0 {
            reserved_bits += 1;
        }
        if idx % (cr + 1) == cr {
            // Sector-bitmap entry of chunk idx / (cr + 1).
            let chunk = idx / (cr + 1);
            match state {
                fb::SB_NOT_PRESENT => {}
                fb::SB_PRESENT if diff => {
                    if off < MIB || off.checked_add(MIB).is_none_or(|x| x > file_len) {
                        add(report, Severity::Corrupt, at, format!("sector bitmap of chunk {chunk} at {off:#x} lies outside the file or in the header section"));
                    } else {
                        used.push(Extent { start: off, end: off + MIB, what: format!("sector bitmap of chunk {chunk}"), at });
                    }
                }
                s => add(report, Severity::Corrupt, at, format!("sector bitmap entry of chunk {chunk} has invalid state {s}{}", if diff { "" } else { " for a disk without a parent (only 0 is allowed)" })),
            }
            return Ok(());
        }
        let block = idx - idx / (cr + 1);
        if block >= blocks {
            return Ok(());
        }
        match state {
            fb::PAYLOAD_FULLY_PRESENT | fb::PAYLOAD_PARTIALLY_PRESENT => {
                if state == fb::PAYLOAD_PARTIALLY_PRESENT {
                    if !diff {
                        add(report, Severity::Corrupt, at, format!("payload block {block} is partially present in a disk without a parent"));
                        return Ok(());
                    }
                    partial_chunks.push(block / cr);
                }
                if off < MIB {
                    add(report, Severity::Corrupt, at, format!("payload block {block} points into the header section ({off:#x})"));
                } else if off >= file_len {
                    add(report, Severity::Corrupt, at, format!("payload block {block} at {off:#x} lies past the end of the file ({file_len:#x})"));
                } else {
                    if off + bs > file_len {
                        add(report, Severity::Warning, at, format!("payload block {block} at {off:#x} is cut short by the end of the file; the missing part reads as zeros"));
                    }
                    used.push(Extent { start: off, end: (off + bs).min(file_len), what: format!("payload block {block}"), at });
                }
            }
            fb::PAYLOAD_NOT_PRESENT | fb::PAYLOAD_ZERO => {
                if off != 0 {
                    add(report, Severity::Warning, at, format!("payload block {block} in state {state} carries a file offset ({off:#x}) that should be zero"));
                }
            }
            fb::PAYLOAD_UNDEFINED | fb::PAYLOAD_UNMAPPED => {}
            fb::PAYLOAD_UNMAPPED_V095 => add(report, Severity::Warning, at, format!("payload block {block} uses state 5 (unmapped in the v0.95 draft); read as unmapped")),
            s => add(report, Severity::Corrupt, at, format!("payload block {block} has reserved state {s}")),
        }
        Ok(())
    });
    if let Err(e) = scan {
        report.push(crate::report::Finding::from_error(Severity::Corrupt, &e));
        return;
    }
    if reserved_bits > 0 {
        report.add(
            Severity::Warning,
            "VHDX BAT",
            Some(bat_off),
            format!("{reserved_bits} entries have reserved bits 3-19 set"),
        );
    }
    partial_chunks.dedup();
    for chunk in partial_chunks {
        match v.bitmap_entry(chunk) {
            Ok(sb) if fb::entry_state(sb) == fb::SB_PRESENT => {}
            Ok(sb) => report.add(
                Severity::Corrupt,
                "VHDX BAT entry",
                Some(bat_off + fb::sector_bitmap_bat_index(chunk, cr) * 8),
                format!("chunk {chunk} has partially present blocks but its sector bitmap entry is in state {}", fb::entry_state(sb)),
            ),
            Err(e) => report.push(crate::report::Finding::from_error(Severity::Corrupt, &e)),
        }
    }

    // Overlaps between everything that occupies the file.
    used.sort_by_key(|e| (e.start, e.end));
    let mut overlaps = 0usize;
    for w in used.windows(2) {
        if w[1].start < w[0].end {
            overlaps += 1;
            if overlaps <= 50 {
                report.add(
                    Severity::Corrupt,
                    "VHDX file layout",
                    Some(w[1].at),
                    format!(
                        "{} ({:#x}..{:#x}) overlaps {} ({:#x}..{:#x})",
                        w[1].what, w[1].start, w[1].end, w[0].what, w[0].start, w[0].end
                    ),
                );
            }
        }
    }
    // Space no structure uses, counted from the first data block on: creators leave padding
    // between the metadata and the first block on purpose (QEMU reserves several MiB), but
    // holes among or after the blocks are space an interrupted writer or a deletion left.
    let first_block = used
        .iter()
        .filter(|e| e.what.starts_with("payload") || e.what.starts_with("sector bitmap"))
        .map(|e| e.start)
        .min()
        .unwrap_or_else(|| used.iter().map(|e| e.end).max().unwrap_or(0));
    let mut covered = 0u64;
    let mut reach = first_block;
    for e in &used {
        let s = e.start.max(reach);
        if e.end > s {
            covered += e.end - s;
            reach = e.end;
        }
    }
    let end = file_len.max(reach);
    let leaked = end.saturating_sub(first_block).saturating_sub(covered);
    // Leaked space is not damage: a write session that is interrupted before it commits
    // leaves its new blocks unreferenced (their data was never acknowledged), as QEMU and
    // Hyper-V do. It is reported for information, like qemu-img check's "leaks".
    if leaked >= MIB {
        report.add(
            Severity::Info,
            "VHDX file layout",
            Some(first_block),
            format!("{leaked} bytes after the first data block belong to no block or structure (leaked space, as an interrupted write session leaves; compaction reclaims it)"),
        );
    }
}
