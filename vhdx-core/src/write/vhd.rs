//! Writing VHD payload (FORMATS.md part B). The format has no log, so writes follow the
//! safest order it allows:
//!
//! 1. A new block goes where the footer was: the new footer is written first, at the new end
//!    of the file, then the block's sector bitmap (dynamic disks: every bit set, the block
//!    being zero-filled; differencing disks: no bit set) over the old footer, then the
//!    payload, packed after the previous block (sector aligned, as QEMU and Hyper-V do).
//! 2. Sector-bitmap changes of existing blocks (differencing disks) and BAT entries are
//!    staged in the [`Journal`](crate::storage::Journal). A commit flushes the payload first, then writes the staged
//!    bitmap sectors, then the BAT sectors, then flushes again.
//!
//! The window that remains: a crash while the staged sectors are being written may leave
//! some of them updated and others not. Each BAT entry only ever points at a block whose
//! payload, bitmap and footer are already durable, so any mix is a consistent disk: writes
//! since the last flush may be partly visible, and a block may be left allocated but
//! unreferenced (leaked space, which `vhdx compact` reclaims). A crash between writing the
//! new footer and the bitmap leaves a stale footer copy inside unreferenced space, which
//! readers never look at. Fixed disks and existing blocks of dynamic disks are written in
//! place, as every VHD writer does.

use super::{round_up, Payload, Target};
use crate::error::{Error, Result};
use crate::format::vhd::dynamic_header::{DynamicHeader, BAT_UNALLOCATED};
use crate::format::vhd::footer::{self as ft, Footer};
use crate::format::vhd::SECTOR;
use crate::image::{Image, ImageFile};
use crate::ops::info::DiskType;
use crate::storage::Storage;
use crate::vhd::open::{FooterCopy, Sparse};
use crate::vhd::Vhd;
use zerocopy::IntoBytes;

/// Staged 512-byte sectors that trigger a commit (4 MiB).
pub(crate) const MAX_STAGED_PAGES: usize = 8192;

/// The VHD half of a writable disk: where the footer is and what it holds.
#[derive(Debug)]
pub struct VhdEngine {
    footer: Footer,
    footer_offset: u64,
}

fn vhd<'a>(t: &Target<'a>) -> &'a Vhd {
    match t.disk.image() {
        Image::Vhd(v) => v,
        _ => unreachable!("the VHD engine runs on VHD images only"),
    }
}

impl VhdEngine {
    /// The engine for `v`. A file read through its footer copy at offset 0 gets a new end
    /// footer with its first new block.
    pub(crate) fn new(v: &Vhd) -> Result<Self> {
        let used = v.footers().used;
        let footer_offset = match (v.footer_copy(), v.footers().end) {
            (FooterCopy::End, Some(end)) if !end.legacy => end.offset,
            _ => round_up(v.file_len(), SECTOR)?,
        };
        let mut footer = used.footer;
        footer.checksum.set(0);
        let crc = Footer::compute_checksum(
            footer
                .as_bytes()
                .try_into()
                .map_err(|_| Error::invalid_argument("footer size"))?,
        );
        footer.checksum.set(crc);
        Ok(VhdEngine {
            footer,
            footer_offset,
        })
    }

    /// Writes `buf` (whole sectors) at virtual `offset`.
    pub(crate) fn write(&mut self, t: &Target<'_>, buf: Payload<'_>, offset: u64) -> Result<()> {
        let v = vhd(t);
        let Some(sp) = v.sparse() else {
            return buf
                .write_to(t.file, offset)
                .map_err(|e| Error::io(e, "writing VHD payload").offset(offset));
        };
        let diff = v.disk_type() == DiskType::Differencing;
        let bs = u64::from(sp.block_size);
        let mut pos = offset;
        let end = offset + buf.len();
        validate(t, v, sp, offset, end)?;
        while pos < end {
            let block = pos / bs;
            let in_block = pos % bs;
            let n = (bs - in_block).min(end - pos);
            let piece = buf.slice(pos - offset, pos - offset + n);
            let entry = sp.bat.entry(t.journal, block)?;
            let data_off = if entry == BAT_UNALLOCATED {
                if !diff && piece.is_zero() {
                    pos += n;
                    continue;
                }
                self.allocate(t, v, block, diff)?
            } else {
                v.block_data_offset(sp, block, entry)?
            };
            piece
                .write_to(t.file, data_off + in_block)
                .map_err(|e| Error::io(e, "writing VHD payload").offset(data_off + in_block))?;
            if diff {
                mark_present(t, data_off - sp.bitmap_bytes, in_block, n)?;
            }
            pos += n;
        }
        Ok(())
    }

    /// Makes `[offset, offset + len)` (whole sectors) read as zeros (see
    /// [`super::WritableDisk::trim`]): a whole block of a dynamic disk is freed (its BAT entry
    /// unallocated, its data punched); any other part of an allocated block is zeroed in the
    /// file (a hole where the host can punch one); in a differencing disk the sectors are
    /// marked present so the parent no longer shows through, which for a not-allocated block
    /// means a new block (zeros, costing no space: the file is extended over it). A fixed
    /// disk is zeroed in place and keeps its space.
    pub(crate) fn trim(&mut self, t: &Target<'_>, offset: u64, len: u64) -> Result<()> {
        let v = vhd(t);
        let Some(sp) = v.sparse() else {
            return t
                .file
                .write_zeroes_at(offset, len)
                .map_err(|e| Error::io(e, "zeroing a trimmed range").offset(offset));
        };
        let diff = v.disk_type() == DiskType::Differencing;
        let bs = u64::from(sp.block_size);
        let end = offset + len;
        validate(t, v, sp, offset, end)?;
        for block in offset / bs..end.div_ceil(bs) {
            let block_len = bs.min(v.footer().current_size.get() - block * bs);
            let start = (block * bs).max(offset) - block * bs;
            let stop = ((block + 1) * bs).min(end) - block * bs;
            let entry = sp.bat.entry(t.journal, block)?;
            let data_off = if entry == BAT_UNALLOCATED {
                if !diff {
                    continue;
                }
                self.allocate(t, v, block, true)?
            } else {
                let data_off = v.block_data_offset(sp, block, entry)?;
                if !diff && start == 0 && stop == block_len {
                    self.release(t, block)?;
                    discard(t, data_off, bs)?;
                    continue;
                }
                discard(t, data_off + start, stop - start)?;
                data_off
            };
            if diff {
                mark_present(t, data_off - sp.bitmap_bytes, start, stop - start)?;
            }
        }
        Ok(())
    }

    /// Places a new block where the footer is; returns its data offset.
    fn allocate(&mut self, t: &Target<'_>, v: &Vhd, block: u64, diff: bool) -> Result<u64> {
        let sp = v.sparse().expect("dynamic or differencing");
        let bmb = sp.bitmap_bytes;
        // Packed right after the previous block, sector aligned (as QEMU and Hyper-V lay VHDs
        // out): aligning the data to 4 KiB would cost 3.5 KiB per 2 MiB block.
        let bitmap_off = self.reserve(t, v, 0, bmb + u64::from(sp.block_size), SECTOR, 0)?;
        let data_off = bitmap_off + bmb;
        let sector = u32::try_from(bitmap_off / SECTOR).map_err(|_| {
            Error::unsupported(
                "VHD BAT",
                sp.bat.entry_offset(block),
                "the file would grow past the 2 TiB a VHD BAT entry can address",
            )
        })?;
        if !diff {
            t.file
                .write_all_at(&vec![0xFF; bmb as usize], bitmap_off)
                .map_err(|e| Error::io(e, "writing a VHD sector bitmap").offset(bitmap_off))?;
        }
        self.stage_entry(t, block, sector)?;
        Ok(data_off)
    }

    /// Reserves `len` bytes where the footer is (at `at_least` or later), placed so that
    /// the offset plus `skew` is a multiple of `align` (a power of two, at least 512):
    /// the footer is written at the new end of the file first, then the old footer and the
    /// gap before the space are zeroed (the rest lies past the old end of the file and reads
    /// as zeros). Returns the offset; nothing refers to the space yet. Not flushed.
    pub(crate) fn reserve(
        &mut self,
        t: &Target<'_>,
        v: &Vhd,
        at_least: u64,
        len: u64,
        align: u64,
        skew: u64,
    ) -> Result<u64> {
        let from = self.footer_offset.max(at_least);
        let off = round_up(from + skew, align)? - skew;
        let new_footer = off
            .checked_add(len)
            .ok_or_else(|| Error::invalid_argument("file offset overflows"))?;
        t.file
            .write_all_at(self.footer.as_bytes(), new_footer)
            .map_err(|e| Error::io(e, "writing the VHD footer").offset(new_footer))?;
        let stale_end = (self.footer_offset + ft::SIZE as u64)
            .max(off)
            .min(new_footer);
        t.file
            .write_zeroes_at(self.footer_offset, stale_end - self.footer_offset)
            .map_err(|e| Error::io(e, "zeroing the old VHD footer").offset(self.footer_offset))?;
        self.footer_offset = new_footer;
        v.note_file_len(new_footer + ft::SIZE as u64);
        Ok(off)
    }

    /// Stages block `block` as unallocated (its space becomes free once committed).
    pub(crate) fn release(&mut self, t: &Target<'_>, block: u64) -> Result<()> {
        self.stage_entry(t, block, BAT_UNALLOCATED)
    }

    /// Stages block `block` at file offset `at` (its bitmap's first byte).
    pub(crate) fn point(&mut self, t: &Target<'_>, block: u64, at: u64) -> Result<()> {
        let sector = u32::try_from(at / SECTOR)
            .map_err(|_| Error::invalid_argument("block offset past what a VHD BAT entry holds"))?;
        self.stage_entry(t, block, sector)
    }

    fn stage_entry(&mut self, t: &Target<'_>, block: u64, entry: u32) -> Result<()> {
        let sp = vhd(t).sparse().expect("dynamic or differencing");
        let at = sp.bat.entry_offset(block);
        t.journal
            .stage(at, &entry.to_be_bytes())
            .map_err(|e| Error::io(e, "staging a VHD BAT entry").offset(at))?;
        sp.bat.forget(block);
        Ok(())
    }

    /// The offset of the footer at the end of the file.
    pub(crate) fn footer_offset(&self) -> u64 {
        self.footer_offset
    }

    /// Changes the footer this engine writes (`change` edits it; the checksum is computed
    /// here). Nothing is written: [`VhdEngine::write_footers`] or
    /// [`VhdEngine::move_footer`] do that.
    pub(crate) fn set_footer(&mut self, change: impl FnOnce(&mut Footer)) -> Result<()> {
        change(&mut self.footer);
        self.footer.checksum.set(0);
        let crc = Footer::compute_checksum(
            self.footer
                .as_bytes()
                .try_into()
                .map_err(|_| Error::invalid_argument("footer size"))?,
        );
        self.footer.checksum.set(crc);
        Ok(())
    }

    /// Writes the footer at its place at the end of the file and, for dynamic and
    /// differencing disks, over the copy at offset 0; then flushes.
    pub(crate) fn write_footers(&mut self, t: &Target<'_>) -> Result<()> {
        let mut places = vec![self.footer_offset];
        if vhd(t).sparse().is_some() {
            places.push(0);
        }
        for at in places {
            t.file
                .write_all_at(self.footer.as_bytes(), at)
                .map_err(|e| Error::io(e, "writing the VHD footer").offset(at))?;
        }
        t.file
            .sync()
            .map_err(|e| Error::io(e, "flushing the VHD footer"))
    }

    /// Rewrites both footers when the copy at offset 0 differs from the footer at the end
    /// (what a resize killed between its two footer writes leaves behind); whether it did.
    pub(crate) fn repair_footer_copy(&mut self, t: &Target<'_>) -> Result<bool> {
        if vhd(t).sparse().is_none() {
            return Ok(false);
        }
        let (mut copy, mut end) = ([0u8; ft::SIZE], [0u8; ft::SIZE]);
        for (buf, at) in [(&mut copy, 0), (&mut end, self.footer_offset)] {
            t.file
                .read_exact_at(buf, at)
                .map_err(|e| Error::read_failed("VHD footer", at, e))?;
        }
        if copy == end {
            return Ok(false);
        }
        self.write_footers(t)?;
        Ok(true)
    }

    /// Writes the dynamic header `h` (its checksum computed here) over the current one and
    /// flushes. The header is 1024 bytes in one host page.
    pub(crate) fn write_header(&mut self, t: &Target<'_>, mut h: DynamicHeader) -> Result<()> {
        let at = vhd(t)
            .sparse()
            .map(|sp| sp.header_offset)
            .ok_or_else(|| Error::invalid_argument("a fixed VHD has no dynamic header"))?;
        h.checksum.set(0);
        let crc = DynamicHeader::compute_checksum(
            h.as_bytes()
                .try_into()
                .map_err(|_| Error::invalid_argument("dynamic header size"))?,
        );
        h.checksum.set(crc);
        t.file
            .write_all_at(h.as_bytes(), at)
            .map_err(|e| Error::io(e, "writing the VHD dynamic header").offset(at))?;
        t.file
            .sync()
            .map_err(|e| Error::io(e, "flushing the VHD dynamic header").offset(at))
    }

    /// Writes the footer at `at` (before the file is cut there) and flushes.
    pub(crate) fn move_footer(&mut self, t: &Target<'_>, at: u64) -> Result<()> {
        t.file
            .write_all_at(self.footer.as_bytes(), at)
            .map_err(|e| Error::io(e, "writing the VHD footer").offset(at))?;
        t.file
            .sync()
            .map_err(|e| Error::io(e, "flushing the VHD footer"))?;
        self.footer_offset = at;
        Ok(())
    }

    /// Commits the staged sectors: flush, bitmaps, BAT, flush.
    pub(crate) fn commit(&mut self, t: &Target<'_>) -> Result<()> {
        if t.journal.staged() == 0 {
            return Ok(());
        }
        let v = vhd(t);
        let (bat_start, bat_end) = match v.sparse() {
            Some(sp) => (sp.bat.offset(), sp.bat.entry_offset(sp.bat.len())),
            None => (0, 0),
        };
        t.file
            .sync()
            .map_err(|e| Error::io(e, "flushing VHD payload"))?;
        let mut pages = t.journal.pages();
        // Bitmaps first, the BAT last: an entry is written only after what it points at.
        pages.sort_by_key(|(off, _)| (*off >= bat_start && *off < bat_end, *off));
        for (off, page) in &pages {
            t.file
                .write_all_at(page, *off)
                .map_err(|e| Error::io(e, "writing VHD metadata").offset(*off))?;
        }
        t.file
            .sync()
            .map_err(|e| Error::io(e, "flushing VHD metadata"))?;
        t.journal.clear();
        Ok(())
    }
}

/// Validates every allocated block of `[offset, end)` before anything is written: a damaged
/// BAT must not turn a write into an overwrite of the file's own structures.
fn validate(t: &Target<'_>, v: &Vhd, sp: &Sparse, offset: u64, end: u64) -> Result<()> {
    let bs = u64::from(sp.block_size);
    for block in offset / bs..end.div_ceil(bs) {
        let entry = sp.bat.entry(t.journal, block)?;
        if entry != BAT_UNALLOCATED {
            let data = v.block_data_offset(sp, block, entry)?;
            guard(v, sp, block, data - sp.bitmap_bytes, sp.bitmap_bytes + bs)?;
        }
    }
    Ok(())
}

fn discard(t: &Target<'_>, at: u64, len: u64) -> Result<()> {
    t.file
        .discard(at, len)
        .map_err(|e| Error::io(e, "zeroing trimmed VHD payload").offset(at))
}

/// Refuses a block at `[off, off + len)` that overlaps the footer copy, the dynamic header,
/// the BAT or a parent locator's data.
fn guard(v: &Vhd, sp: &Sparse, block: u64, off: u64, len: u64) -> Result<()> {
    let h = &sp.header;
    let mut taken = vec![
        (0, ft::SIZE as u64),
        (sp.header_offset, 1024),
        (sp.bat.offset(), sp.bat.len() * 4),
    ];
    if v.disk_type() == DiskType::Differencing {
        for l in &h.parent_locators {
            if l.is_used() {
                taken.push((l.platform_data_offset.get(), l.data_space_bytes()));
            }
        }
    }
    for (s, l) in taken {
        if off < s.saturating_add(l) && s < off.saturating_add(len) {
            return Err(Error::corrupt(
                "VHD BAT entry",
                sp.bat.entry_offset(block),
                format!("block {block} at {off:#x} overlaps a structure at {s:#x}; refusing to write"),
            )
            .expected("blocks outside the footer copy, the dynamic header, the BAT and the parent locators")
            .found(format!("{off:#x}+{len:#x}")));
        }
    }
    Ok(())
}

/// Stages the bits (MSB first) of sectors `[in_block, in_block + len)` in the bitmap at
/// `bitmap_off`.
fn mark_present(t: &Target<'_>, bitmap_off: u64, in_block: u64, len: u64) -> Result<()> {
    let a = in_block / SECTOR;
    let b = (in_block + len).div_ceil(SECTOR);
    let byte0 = a / 8;
    let mut bits = vec![0u8; (b.div_ceil(8) - byte0) as usize];
    t.journal
        .read_exact_at(&mut bits, bitmap_off + byte0)
        .map_err(|e| Error::read_failed("VHD sector bitmap", bitmap_off + byte0, e))?;
    for s in a..b {
        let k = s - byte0 * 8;
        bits[(k / 8) as usize] |= 0x80 >> (k % 8);
    }
    t.journal
        .stage(bitmap_off + byte0, &bits)
        .map_err(|e| Error::io(e, "staging a VHD sector bitmap").offset(bitmap_off + byte0))
}
