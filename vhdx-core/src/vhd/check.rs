//! Deep check of a VHD file (FORMATS.md D, VHD): the footer copies, the dynamic header, the
//! placement of the header and BAT, and every BAT entry. Problems tolerated on open are in
//! [`Vhd::findings`](crate::image::ImageFile::findings), which `Disk::check` reports before
//! calling this, so they are not repeated here.

use super::open::FooterCopy;
use super::Vhd;
use crate::format::vhd::dynamic_header::{self as dh, BAT_UNALLOCATED};
use crate::format::vhd::footer::{self as ft, Footer};
use crate::format::vhd::{MAX_CHS_SECTORS, SECTOR};
use crate::ops::info::DiskType;
use crate::report::{Finding, Report, Severity};
use crate::storage::read_struct;
use zerocopy::IntoBytes;

/// Checks every structure of `v`.
pub fn check(v: &Vhd, report: &mut Report) {
    check_footer(v, report);
    if v.sparse.is_some() {
        check_footer_copy(v, report);
        check_header(v, report);
        check_bat(v, report);
    }
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

fn check_footer(v: &Vhd, report: &mut Report) {
    let fr = &v.footers.used;
    let f = &fr.footer;
    let at = Some(fr.offset);
    let features = f.features.get();
    if features & ft::FEATURE_RESERVED == 0 {
        report.add(
            Severity::Info,
            "VHD footer",
            at,
            format!("Features {features:#010x}: the reserved bit 1 is not set"),
        );
    }
    if features & ft::FEATURE_TEMPORARY != 0 {
        report.add(
            Severity::Info,
            "VHD footer",
            at,
            "the disk is marked temporary (deleted on shutdown)",
        );
    }
    if f.file_format_version.get() != 0x0001_0000 {
        report.add(
            Severity::Info,
            "VHD footer",
            Some(fr.offset + 12),
            format!(
                "FileFormatVersion is {:#010x} (expected 0x00010000)",
                f.file_format_version.get()
            ),
        );
    }
    if f.saved_state != 0 {
        report.add(
            Severity::Info,
            "VHD footer",
            Some(fr.offset + 84),
            "the virtual machine is in a saved state",
        );
    }
    if f.unique_id == [0; 16] {
        report.add(
            Severity::Warning,
            "VHD footer",
            Some(fr.offset + 68),
            "UniqueId is zero: children cannot verify their link to this disk",
        );
    }
    // The size QEMU would use for CHS-sized creators (FORMATS.md B.3).
    let chs = f.chs();
    let chs_bytes = chs.sectors() * SECTOR;
    let chs_creator = matches!(&f.creator_application, b"vpc " | b"vs  " | b"qemu");
    if chs_creator && chs.sectors() != MAX_CHS_SECTORS && chs_bytes != v.size {
        report.add(
            Severity::Info,
            "VHD footer",
            Some(fr.offset + 56),
            format!(
                "CurrentSize is {} bytes but the geometry {}/{}/{} gives {chs_bytes}; this \
                 reader uses CurrentSize, QEMU uses the geometry for creator {}",
                v.size,
                chs.cylinders,
                chs.heads,
                chs.sectors_per_track,
                ft::code_text(f.creator_application)
            ),
        );
    }
    if v.disk_type == DiskType::Fixed {
        let d = f.data_offset.get();
        if d != ft::FIXED_DATA_OFFSET && d != 0xFFFF_FFFF {
            report.add(
                Severity::Warning,
                "VHD footer",
                Some(fr.offset + 16),
                format!("DataOffset of a fixed disk is {d:#x} (expected all ones)"),
            );
        }
        if fr.offset > v.size {
            report.add(
                Severity::Info,
                "VHD footer",
                Some(v.size),
                format!(
                    "{} bytes lie between the end of the disk data and the footer",
                    fr.offset - v.size
                ),
            );
        }
    }
}

fn check_footer_copy(v: &Vhd, report: &mut Report) {
    if v.footers.which == FooterCopy::Start {
        return; // The end footer's problem is already a finding; the copy is what we use.
    }
    let end = &v.footers.used.footer;
    match read_struct::<Footer>(&*v.storage, 0, "VHD footer copy") {
        Err(e) => report.push(Finding::from_error(Severity::Warning, &e)),
        Ok(c) if !c.cookie_ok() => report.add(
            Severity::Warning,
            "VHD footer copy",
            Some(0),
            "no footer copy (`conectix`) at offset 0 of a dynamic disk",
        ),
        Ok(c) => {
            if !c.checksum_ok() {
                report.add(
                    Severity::Warning,
                    "VHD footer copy",
                    Some(0),
                    "the footer copy at offset 0 has a bad checksum",
                );
            }
            if c.as_bytes() != end.as_bytes() {
                let first = c
                    .as_bytes()
                    .iter()
                    .zip(end.as_bytes())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                report.add(
                    Severity::Warning,
                    "VHD footer copy",
                    Some(first as u64),
                    format!(
                        "the footer copy at offset 0 differs from the end footer (first at \
                         byte {first})"
                    ),
                );
            }
        }
    }
}

fn check_header(v: &Vhd, report: &mut Report) {
    let Some(sp) = &v.sparse else { return };
    let h = &sp.header;
    let at = sp.header_offset;
    if h.data_offset.get() != u64::MAX && h.data_offset.get() != 0xFFFF_FFFF {
        report.add(
            Severity::Info,
            "VHD dynamic header",
            Some(at + 8),
            format!(
                "DataOffset is {:#x} (expected all ones)",
                h.data_offset.get()
            ),
        );
    }
    let mte = u64::from(h.max_table_entries.get());
    if mte > sp.blocks {
        let (sev, why) = if mte == sp.blocks + 1 {
            (
                Severity::Info,
                " (qemu-img before 2020 wrote one extra entry; Azure rejects it)",
            )
        } else {
            (Severity::Warning, "")
        };
        report.add(
            sev,
            "VHD dynamic header",
            Some(at + 28),
            format!(
                "MaxTableEntries is {mte} but the virtual size needs {}{why}",
                sp.blocks
            ),
        );
    }
    let hdr = (at, at + dh::SIZE as u64);
    let bat_len = (mte * 4).div_ceil(SECTOR) * SECTOR;
    let bat = (sp.bat.offset(), sp.bat.offset().saturating_add(bat_len));
    let copy = (0u64, ft::SIZE as u64);
    if overlaps(hdr, copy) {
        report.add(
            Severity::Corrupt,
            "VHD dynamic header",
            Some(at),
            "the dynamic header overlaps the footer copy at offset 0",
        );
    }
    if overlaps(bat, copy) || overlaps(bat, hdr) {
        report.add(
            Severity::Corrupt,
            "VHD BAT",
            Some(bat.0),
            "the BAT overlaps the footer copy or the dynamic header",
        );
    }
    if let Some(e) = v.footers.end {
        if overlaps(bat, (e.offset, v.file_len())) || overlaps(hdr, (e.offset, v.file_len())) {
            report.add(
                Severity::Corrupt,
                "VHD BAT",
                Some(bat.0),
                "the dynamic header or BAT overlaps the end footer",
            );
        }
    }
    if v.disk_type == DiskType::Differencing {
        if h.parent_unique_id == [0; 16] {
            report.add(
                Severity::Warning,
                "VHD dynamic header",
                Some(at + 40),
                "ParentUniqueId is zero: the parent link cannot be verified",
            );
        }
        if v.locators.is_empty() {
            report.add(
                Severity::Warning,
                "VHD parent locator",
                Some(at + 576),
                "no usable parent locator and no ParentUnicodeName",
            );
        }
    } else if h.parent_locators.iter().any(|l| l.is_used()) {
        report.add(
            Severity::Info,
            "VHD parent locator",
            Some(at + 576),
            "a dynamic (not differencing) disk has parent locator entries",
        );
    }
}

fn check_bat(v: &Vhd, report: &mut Report) {
    let Some(sp) = &v.sparse else { return };
    let bs = u64::from(sp.block_size);
    let mte = sp.bat.len();
    let hdr = (sp.header_offset, sp.header_offset + dh::SIZE as u64);
    let bat = (
        sp.bat.offset(),
        sp.bat.offset() + (mte * 4).div_ceil(SECTOR) * SECTOR,
    );
    let footer_start = v.footers.end.map_or(v.file_len(), |e| e.offset);
    let mut blocks: Vec<(u64, u64, u64)> = Vec::new();
    let mut past_eof = 0u64;
    let max_blocks = usize::try_from(v.file_len() / (sp.bitmap_bytes + bs))
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let mut too_many = 0u64;
    let r = sp.bat.for_each(&*v.storage, mte, |i, e| {
        if e == BAT_UNALLOCATED {
            return Ok(());
        }
        let at = Some(sp.bat.entry_offset(i));
        let start = u64::from(e) * SECTOR;
        let end = start + sp.bitmap_bytes + bs;
        if i >= sp.blocks {
            report.add(
                Severity::Warning,
                "VHD BAT entry",
                at,
                format!("entry {i} lies beyond the virtual size but is allocated (sector {e:#x})"),
            );
        }
        if overlaps((start, end), (0, ft::SIZE as u64))
            || overlaps((start, end), hdr)
            || overlaps((start, end), bat)
        {
            report.add(
                Severity::Corrupt,
                "VHD BAT entry",
                at,
                format!(
                    "block {i} at {start:#x} overlaps the footer copy, the dynamic header or \
                     the BAT"
                ),
            );
        }
        let used = bs.min(v.size.saturating_sub(i.saturating_mul(bs)));
        if start + sp.bitmap_bytes + used > v.file_len() {
            past_eof += 1;
            if past_eof <= 16 {
                report.add(
                    Severity::Corrupt,
                    "VHD BAT entry",
                    at,
                    format!(
                        "block {i} at {start:#x} lies past the end of the file ({:#x}); reads \
                         of it fail",
                        v.file_len()
                    ),
                );
            }
            return Ok(());
        } else if end > footer_start {
            report.add(
                Severity::Warning,
                "VHD BAT entry",
                at,
                format!(
                    "block {i} at {start:#x}+{:#x} runs into the end footer at \
                     {footer_start:#x}",
                    end - start
                ),
            );
        }
        // Blocks that fit in the file without overlapping number at most file length /
        // block length; past that many, some must overlap, and collecting more would let a
        // crafted BAT make this check allocate several times the file size.
        if blocks.len() < max_blocks {
            blocks.push((start, end, i));
        } else {
            too_many += 1;
        }
        Ok(())
    });
    if let Err(e) = r {
        report.push(Finding::from_error(Severity::Corrupt, &e));
        return;
    }
    if past_eof > 16 {
        report.add(
            Severity::Corrupt,
            "VHD BAT",
            Some(sp.bat.offset()),
            format!("{past_eof} blocks in all lie past the end of the file"),
        );
    }
    if too_many > 0 {
        report.add(
            Severity::Corrupt,
            "VHD BAT",
            Some(sp.bat.offset()),
            format!(
                "{} allocated entries for a file that holds at most {max_blocks} blocks: blocks \
                 overlap ({too_many} entries not compared)",
                blocks.len() as u64 + too_many
            ),
        );
    }
    blocks.sort_unstable();
    let mut overlapping = 0u64;
    for w in blocks.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.0 < a.1 {
            overlapping += 1;
            if overlapping <= 16 {
                report.add(
                    Severity::Corrupt,
                    "VHD BAT entry",
                    Some(sp.bat.entry_offset(b.2)),
                    format!(
                        "block {} at {:#x} overlaps block {} at {:#x}",
                        b.2, b.0, a.2, a.0
                    ),
                );
            }
        }
    }
    if overlapping > 16 {
        report.add(
            Severity::Corrupt,
            "VHD BAT",
            Some(sp.bat.offset()),
            format!("{overlapping} overlapping block pairs in all"),
        );
    }
}
