//! Writing VHDX payload and committing metadata through the log (MS-VHDX §2.3, FORMATS.md
//! A.10, A.11).
//!
//! # Block transitions
//! | state before            | disk            | write                 | state after         |
//! |-------------------------|-----------------|-----------------------|---------------------|
//! | FULLY_PRESENT           | any             | any                   | unchanged (in place)|
//! | PARTIALLY_PRESENT       | differencing    | any                   | bits set; FULLY_PRESENT once every sector is |
//! | NOT_PRESENT             | differencing    | whole block of zeros  | ZERO (nothing allocated) |
//! | NOT_PRESENT             | differencing    | part of the block     | new block, PARTIALLY_PRESENT, bits of the written sectors |
//! | NOT_PRESENT             | differencing    | whole block           | new block, FULLY_PRESENT |
//! | ZERO/UNMAPPED/UNDEFINED | differencing    | zeros                 | unchanged           |
//! | ZERO/UNMAPPED/UNDEFINED | differencing    | data                  | new block, FULLY_PRESENT (the rest reads zeros, as before) |
//! | any but FULLY_PRESENT   | fixed / dynamic | zeros                 | unchanged           |
//! | any but FULLY_PRESENT   | fixed / dynamic | data                  | new block, FULLY_PRESENT |
//!
//! A new block is placed at the end of the file rounded up to 1 MiB and the file is extended
//! over it, so its unwritten rest reads as zeros (QEMU does the same). A partially present
//! block's chunk gets a sector-bitmap block (1 MiB, zeroed) the first time it needs one; the
//! block's bits are cleared before its first sectors are marked, so stale bits from an
//! earlier life of the bitmap never show through.
//!
//! # Commit
//! BAT and bitmap changes are staged as 4 KiB pages in the [`Journal`](crate::storage::Journal). A commit:
//! 1. flushes the file (new payload, and the previous commit's applied pages);
//! 2. writes one log entry with every staged page at the start of the log — its Tail is
//!    itself, because step 1 made every earlier entry's updates durable — and flushes;
//! 3. on the session's first commit, sets the LogGuid in both headers (the entry was written
//!    first, so a crash before this leaves a clean header and the old metadata);
//! 4. writes the pages to their places (flushed by the next commit or by close).
//!
//! Close sets the LogGuid back to nil after a final flush, so the file opens everywhere
//! without replay.

use super::{round_up, Payload, Target};
use crate::error::{Error, Result};
use crate::format::vhdx::bat as fb;
use crate::format::vhdx::log as fl;
use crate::format::vhdx::{Guid, MIB};
use crate::image::Image;
use crate::storage::Storage;
use crate::vhdx::header_write::HeaderWriter;
use crate::vhdx::log::{encode_entry, LogWrite};
use crate::vhdx::Vhdx;

/// The VHDX half of a writable disk: the session's header writer and log position.
#[derive(Debug)]
pub struct VhdxEngine {
    headers: Option<HeaderWriter>,
    data_renewed: bool,
    log_guid: Option<Guid>,
    log_in_header: bool,
    sequence: u64,
    max_pages: usize,
}

/// Data sectors one entry can carry in a log of `log_len` bytes.
fn entry_capacity(log_len: u64) -> usize {
    let sectors = log_len / fl::SECTOR as u64;
    let mut n = sectors.saturating_sub(1);
    while n > 0 && n + fl::descriptor_sectors(n as u32) > sectors {
        n -= 1;
    }
    n as usize
}

fn vhdx<'a>(t: &Target<'a>) -> &'a Vhdx {
    match t.disk.image() {
        Image::Vhdx(v) => v,
        _ => unreachable!("the VHDX engine runs on VHDX images only"),
    }
}

impl VhdxEngine {
    /// The engine for `v`; refuses files whose log cannot hold a single update.
    pub(crate) fn new(v: &Vhdx) -> Result<Self> {
        let h = v.header();
        let max_pages = entry_capacity(u64::from(h.log_length.get())).min(4096);
        if max_pages < 8 {
            return Err(Error::unsupported(
                "VHDX header",
                0x10000 + 68,
                "the log is too small to write through",
            )
            .expected("a log of at least 64 KiB")
            .found(format!("{} bytes", h.log_length.get())));
        }
        Ok(VhdxEngine {
            headers: None,
            data_renewed: false,
            log_guid: None,
            log_in_header: false,
            sequence: 0,
            max_pages,
        })
    }

    /// Staged pages that trigger a commit.
    pub(crate) fn max_pages(&self) -> usize {
        self.max_pages
    }

    /// Before the first change: a new FileWriteGuid in both headers, and before the first
    /// change of the content (`data`) a new DataWriteGuid. Changes that keep every byte the
    /// disk reads (compaction) keep the DataWriteGuid, so children stay linked.
    pub(crate) fn begin(&mut self, t: &Target<'_>, data: bool) -> Result<()> {
        let renew = data && !self.data_renewed;
        if self.headers.is_some() && !renew {
            return Ok(());
        }
        let hw = self
            .headers
            .get_or_insert_with(|| HeaderWriter::new(vhdx(t).headers()));
        let guid = Guid::from_uuid(uuid::Uuid::new_v4());
        hw.update_both(t.file, |h| {
            if renew {
                h.data_write_guid = guid;
            }
        })?;
        self.data_renewed |= renew;
        Ok(())
    }

    /// Writes `buf` (whole logical sectors) at virtual `offset`.
    pub(crate) fn write(&mut self, t: &Target<'_>, buf: Payload<'_>, offset: u64) -> Result<()> {
        let v = vhdx(t);
        let m = v.metadata();
        let bs = u64::from(m.block_size);
        let size = m.virtual_size;
        let end = offset + buf.len();
        // Every block the write touches is validated before anything is written, so a write
        // into a damaged block fails with the file untouched (headers included).
        let blocks = offset / bs..end.div_ceil(bs);
        for block in blocks.clone() {
            self.validate(v, block, bs.min(size - block * bs))?;
        }
        for block in blocks {
            let start = (block * bs).max(offset);
            let stop = ((block + 1) * bs).min(end);
            let piece = buf.slice(start - offset, stop - offset);
            self.write_piece(
                t,
                v,
                block,
                start - block * bs,
                piece,
                bs.min(size - block * bs),
            )?;
        }
        Ok(())
    }

    /// Makes `[offset, offset + len)` (whole logical sectors) read as zeros and frees what it
    /// can (see [`super::WritableDisk::trim`]):
    /// - a whole block of a dynamic disk becomes NOT_PRESENT (reads zeros; no parent);
    /// - a whole block of a differencing disk becomes ZERO: NOT_PRESENT or UNMAPPED would let
    ///   the parent's data (or, for UNMAPPED, anything) show through, ZERO must read zeros;
    /// - a block of a fixed disk (LeaveBlockAllocated) stays allocated and is zeroed;
    /// - part of a present block is zeroed in the file (a hole where the host can punch one);
    ///   in a differencing disk its sectors are also marked present, hiding the parent;
    /// - part of a not-present block of a differencing disk gets a new block (reading zeros,
    ///   costing no space: the file is extended over it) with those sectors marked present.
    ///
    /// The space of a freed block is punched at once: until the BAT change is committed the
    /// old entry still points at it and reads zeros, which is what a trim asks for.
    pub(crate) fn trim(&mut self, t: &Target<'_>, offset: u64, len: u64) -> Result<()> {
        let v = vhdx(t);
        let m = v.metadata();
        let bs = u64::from(m.block_size);
        let size = m.virtual_size;
        let diff = m.has_parent;
        let end = offset + len;
        let blocks = offset / bs..end.div_ceil(bs);
        for block in blocks.clone() {
            self.validate(v, block, bs.min(size - block * bs))?;
        }
        // The identity is renewed before the first block that really changes.
        for block in blocks {
            let block_len = bs.min(size - block * bs);
            let start = (block * bs).max(offset) - block * bs;
            let stop = ((block + 1) * bs).min(end) - block * bs;
            let whole = start == 0 && stop == block_len;
            let entry = v.payload_entry(block)?;
            let state = fb::entry_state(entry);
            let present = matches!(
                state,
                fb::PAYLOAD_FULLY_PRESENT | fb::PAYLOAD_PARTIALLY_PRESENT
            );
            if present && (!whole || m.leave_block_allocated) {
                let off = v.data_offset(block, entry)?;
                self.begin(t, true)?;
                if m.leave_block_allocated {
                    // A fixed disk keeps its space: zeros are written, no hole is punched.
                    t.file
                        .write_zeroes_at(off + start, stop - start)
                        .map_err(|e| Error::io(e, "zeroing trimmed VHDX payload").offset(off))?;
                } else {
                    discard(t, off + start, stop - start)?;
                }
                if state == fb::PAYLOAD_PARTIALLY_PRESENT {
                    self.mark_present(t, v, block, start, stop - start, false)?;
                    if self.block_complete(t, v, block, block_len)? {
                        self.set_entry(
                            t,
                            v,
                            block,
                            fb::make_entry(fb::PAYLOAD_FULLY_PRESENT, off),
                        )?;
                    }
                }
            } else if whole
                || matches!(
                    state,
                    fb::PAYLOAD_UNDEFINED | fb::PAYLOAD_UNMAPPED | fb::PAYLOAD_UNMAPPED_V095
                )
            {
                // (A block whose content is undefined may read anything: making the whole of
                // it read zeros is a valid trim of any part of it.)
                let target = if diff {
                    fb::PAYLOAD_ZERO
                } else {
                    fb::PAYLOAD_NOT_PRESENT
                };
                let reads_zero = !present
                    && (state == fb::PAYLOAD_ZERO || (!diff && state == fb::PAYLOAD_NOT_PRESENT));
                if !reads_zero {
                    self.begin(t, true)?;
                    self.set_entry(t, v, block, fb::make_entry(target, 0))?;
                }
                if present {
                    discard(t, v.data_offset(block, entry)?, bs)?;
                }
            } else if diff && state == fb::PAYLOAD_NOT_PRESENT {
                self.begin(t, true)?;
                let off = allocate(t, v, bs)?;
                self.mark_present(t, v, block, start, stop - start, true)?;
                self.set_entry(
                    t,
                    v,
                    block,
                    fb::make_entry(fb::PAYLOAD_PARTIALLY_PRESENT, off),
                )?;
            }
        }
        Ok(())
    }

    /// Checks that `block`'s entry can be written through: a valid state and, for a present
    /// block, a place in the file outside every structure.
    fn validate(&self, v: &Vhdx, block: u64, block_len: u64) -> Result<()> {
        if v.metadata().has_parent {
            // The chunk's sector bitmap, which the write may update.
            let sb = v.bitmap_entry(block / v.chunk_ratio())?;
            if fb::entry_state(sb) == fb::SB_PRESENT {
                guard(v, fb::entry_offset(sb), MIB, "sector bitmap block")?;
            }
        }
        let entry = v.payload_entry(block)?;
        match fb::entry_state(entry) {
            fb::PAYLOAD_FULLY_PRESENT => {}
            fb::PAYLOAD_PARTIALLY_PRESENT if v.metadata().has_parent => {}
            fb::PAYLOAD_NOT_PRESENT
            | fb::PAYLOAD_ZERO
            | fb::PAYLOAD_UNDEFINED
            | fb::PAYLOAD_UNMAPPED
            | fb::PAYLOAD_UNMAPPED_V095 => return Ok(()),
            fb::PAYLOAD_PARTIALLY_PRESENT => {
                return Err(v
                    .bat_error(block, "partially present block in a disk without a parent")
                    .expected("a state valid for fixed/dynamic disks")
                    .found("PAYLOAD_BLOCK_PARTIALLY_PRESENT (7)"))
            }
            s => {
                return Err(v
                    .bat_error(block, "reserved block state")
                    .expected("0, 1, 2, 3, 6 or 7")
                    .found(s))
            }
        }
        let off = v.data_offset(block, entry)?;
        guard(v, off, block_len, "payload block")
    }

    fn write_piece(
        &mut self,
        t: &Target<'_>,
        v: &Vhdx,
        block: u64,
        in_block: u64,
        piece: Payload<'_>,
        block_len: u64,
    ) -> Result<()> {
        let diff = v.metadata().has_parent;
        let entry = v.payload_entry(block)?;
        let state = fb::entry_state(entry);
        let n = piece.len();
        let whole = in_block == 0 && n == block_len;
        match state {
            fb::PAYLOAD_FULLY_PRESENT => {
                let off = v.data_offset(block, entry)?;
                self.begin(t, true)?;
                write_payload(t, piece, off + in_block)
            }
            fb::PAYLOAD_PARTIALLY_PRESENT if diff => {
                let off = v.data_offset(block, entry)?;
                self.begin(t, true)?;
                write_payload(t, piece, off + in_block)?;
                self.mark_present(t, v, block, in_block, n, false)?;
                if self.block_complete(t, v, block, block_len)? {
                    self.set_entry(t, v, block, fb::make_entry(fb::PAYLOAD_FULLY_PRESENT, off))?;
                }
                Ok(())
            }
            fb::PAYLOAD_NOT_PRESENT
            | fb::PAYLOAD_ZERO
            | fb::PAYLOAD_UNDEFINED
            | fb::PAYLOAD_UNMAPPED
            | fb::PAYLOAD_UNMAPPED_V095 => {
                // Only NOT_PRESENT (without a parent) and ZERO are sure to read zeros:
                // UNDEFINED and UNMAPPED may read anything, so zeros written there are made
                // explicit. In a differencing disk, NOT_PRESENT shows the parent.
                let parent_shows = diff && state == fb::PAYLOAD_NOT_PRESENT;
                let reads_zero =
                    state == fb::PAYLOAD_ZERO || (!diff && state == fb::PAYLOAD_NOT_PRESENT);
                let zero = piece.is_zero();
                if zero && reads_zero {
                    // Nothing changes: no new identity either (children stay linked).
                    return Ok(());
                }
                self.begin(t, true)?;
                if zero && whole {
                    return self.set_entry(t, v, block, fb::make_entry(fb::PAYLOAD_ZERO, 0));
                }
                let off = allocate(t, v, u64::from(v.metadata().block_size))?;
                write_payload(t, piece, off + in_block)?;
                if !parent_shows || whole {
                    self.set_entry(t, v, block, fb::make_entry(fb::PAYLOAD_FULLY_PRESENT, off))
                } else {
                    self.mark_present(t, v, block, in_block, n, true)?;
                    self.set_entry(
                        t,
                        v,
                        block,
                        fb::make_entry(fb::PAYLOAD_PARTIALLY_PRESENT, off),
                    )
                }
            }
            s => Err(v
                .bat_error(block, "block state changed during a write")
                .found(s)),
        }
    }

    /// Stages BAT entry `idx` (payload or sector bitmap).
    pub(crate) fn stage_index(&mut self, t: &Target<'_>, idx: u64, entry: u64) -> Result<()> {
        stage_bat(t, vhdx(t), idx, entry)
    }

    /// Stages BAT entry of payload `block`.
    fn set_entry(&mut self, t: &Target<'_>, v: &Vhdx, block: u64, entry: u64) -> Result<()> {
        let idx = fb::payload_bat_index(block, v.chunk_ratio());
        stage_bat(t, v, idx, entry)
    }

    /// File offset of the sector bitmap of `chunk`, allocating one when it has none.
    fn bitmap(&mut self, t: &Target<'_>, v: &Vhdx, chunk: u64) -> Result<u64> {
        let e = v.bitmap_entry(chunk)?;
        if fb::entry_state(e) == fb::SB_PRESENT {
            let off = fb::entry_offset(e);
            if off >= MIB && off.checked_add(MIB).is_some_and(|x| x <= v.file_len()) {
                guard(v, off, MIB, "sector bitmap block")?;
                return Ok(off);
            }
        }
        let off = allocate(t, v, MIB)?;
        let idx = fb::sector_bitmap_bat_index(chunk, v.chunk_ratio());
        stage_bat(t, v, idx, fb::make_entry(fb::SB_PRESENT, off))?;
        Ok(off)
    }

    /// Sets the bitmap bits of `[in_block, in_block + len)` of `block` (whole sectors);
    /// `fresh` first clears every bit of the block (it was not present before).
    fn mark_present(
        &mut self,
        t: &Target<'_>,
        v: &Vhdx,
        block: u64,
        in_block: u64,
        len: u64,
        fresh: bool,
    ) -> Result<()> {
        let (lo, hi) = block_bits(v, block, 0, u64::from(v.metadata().block_size));
        let (a, b) = block_bits(v, block, in_block, len);
        let sb = self.bitmap(t, v, block / v.chunk_ratio())?;
        let (byte0, byte1) = if fresh {
            (lo / 8, hi.div_ceil(8))
        } else {
            (a / 8, b.div_ceil(8))
        };
        let mut bits = vec![0u8; (byte1 - byte0) as usize];
        t.journal
            .read_exact_at(&mut bits, sb + byte0)
            .map_err(|e| Error::read_failed("VHDX sector bitmap", sb + byte0, e))?;
        if fresh {
            for i in lo..hi {
                let k = i - byte0 * 8;
                bits[(k / 8) as usize] &= !(1 << (k % 8));
            }
        }
        for i in a..b {
            let k = i - byte0 * 8;
            bits[(k / 8) as usize] |= 1 << (k % 8);
        }
        t.journal
            .stage(sb + byte0, &bits)
            .map_err(|e| Error::io(e, "staging a VHDX sector bitmap").offset(sb + byte0))
    }

    /// Whether every sector of `block` inside the disk is marked present.
    fn block_complete(
        &mut self,
        t: &Target<'_>,
        v: &Vhdx,
        block: u64,
        block_len: u64,
    ) -> Result<bool> {
        let (a, b) = block_bits(v, block, 0, block_len);
        let sb = fb::entry_offset(v.bitmap_entry(block / v.chunk_ratio())?);
        let byte0 = a / 8;
        let mut bits = vec![0u8; (b.div_ceil(8) - byte0) as usize];
        t.journal
            .read_exact_at(&mut bits, sb + byte0)
            .map_err(|e| Error::read_failed("VHDX sector bitmap", sb + byte0, e))?;
        Ok((a..b).all(|i| {
            let k = i - byte0 * 8;
            bits[(k / 8) as usize] >> (k % 8) & 1 == 1
        }))
    }

    /// Commits the staged pages through the log (see the module documentation).
    pub(crate) fn commit(&mut self, t: &Target<'_>) -> Result<()> {
        if t.journal.staged() == 0 {
            return Ok(());
        }
        let v = vhdx(t);
        let h = *v.header();
        let log_off = h.log_offset.get();
        let log_guid = *self
            .log_guid
            .get_or_insert_with(|| Guid::from_uuid(uuid::Uuid::new_v4()));
        let pages = t.journal.pages();
        let groups: Vec<_> = pages.chunks(self.max_pages).collect();
        for (i, group) in groups.iter().enumerate() {
            t.file
                .sync()
                .map_err(|e| Error::io(e, "flushing payload before a log entry"))?;
            let len = t
                .file
                .len()
                .map_err(|e| Error::io(e, "reading the file length"))?;
            let mut writes = Vec::with_capacity(group.len());
            for (off, page) in group.iter() {
                let sector: &[u8; fl::SECTOR] = (&page[..])
                    .try_into()
                    .map_err(|_| Error::invalid_argument("journal page is not 4 KiB"))?;
                writes.push(LogWrite::Data {
                    file_offset: *off,
                    sector,
                });
            }
            self.sequence += 1;
            let entry = encode_entry(log_guid, self.sequence, 0, len, len, &writes)?;
            t.file
                .write_all_at(&entry, log_off)
                .map_err(|e| Error::io(e, "writing a VHDX log entry").offset(log_off))?;
            t.file
                .sync()
                .map_err(|e| Error::io(e, "flushing a VHDX log entry").offset(log_off))?;
            if !self.log_in_header {
                let hw = self
                    .headers
                    .as_mut()
                    .ok_or_else(|| Error::invalid_argument("a commit before the first write"))?;
                hw.update_both(t.file, |h| h.log_guid = log_guid)?;
                self.log_in_header = true;
            }
            for (off, page) in group.iter() {
                t.file
                    .write_all_at(page, *off)
                    .map_err(|e| Error::io(e, "applying a VHDX log entry").offset(*off))?;
            }
            if i + 1 < groups.len() {
                // The next entry overwrites this one: its updates must be durable first.
                t.file
                    .sync()
                    .map_err(|e| Error::io(e, "flushing applied metadata"))?;
            }
        }
        t.journal.clear();
        Ok(())
    }

    /// After the final commit and flush: a clean log in both headers.
    pub(crate) fn finish(&mut self, t: &Target<'_>) -> Result<()> {
        if self.log_in_header {
            if let Some(hw) = self.headers.as_mut() {
                hw.update_both(t.file, |h| h.log_guid = Guid::default())?;
            }
            self.log_in_header = false;
        }
        Ok(())
    }
}

/// Chunk-relative bit range of the sectors `[in_block, in_block + len)` of `block`.
fn block_bits(v: &Vhdx, block: u64, in_block: u64, len: u64) -> (u64, u64) {
    let m = v.metadata();
    let lss = u64::from(m.logical_sector_size);
    let spb = u64::from(m.block_size) / lss;
    let base = (block % v.chunk_ratio()) * spb;
    (base + in_block / lss, base + (in_block + len).div_ceil(lss))
}

/// Refuses to write into `[off, off + len)` when it overlaps the log or a region: a crafted
/// or damaged BAT could otherwise make a write overwrite the file's own metadata.
fn guard(v: &Vhdx, off: u64, len: u64, what: &str) -> Result<()> {
    let h = v.header();
    let r = v.regions();
    let log = (h.log_offset.get(), u64::from(h.log_length.get()));
    let all = [
        (r.bat.offset, r.bat.length),
        (r.metadata.offset, r.metadata.length),
        log,
    ]
    .into_iter()
    .chain(r.others.iter().map(|o| (o.offset, o.length)));
    for (s, l) in all {
        if off < s.saturating_add(l) && s < off.saturating_add(len) {
            return Err(Error::corrupt(
                "VHDX BAT",
                r.bat.offset,
                format!(
                    "{what} at {off:#x} overlaps the log or a region at {s:#x}; refusing to write"
                ),
            )
            .expected("blocks outside the log and every region")
            .found(format!("{off:#x}+{len:#x}")));
        }
    }
    Ok(())
}

fn stage_bat(t: &Target<'_>, v: &Vhdx, idx: u64, entry: u64) -> Result<()> {
    let at = v.bat().entry_offset(idx);
    t.journal
        .stage(at, &entry.to_le_bytes())
        .map_err(|e| Error::io(e, "staging a VHDX BAT entry").offset(at))?;
    v.bat().forget(idx);
    Ok(())
}

fn discard(t: &Target<'_>, at: u64, len: u64) -> Result<()> {
    t.file
        .discard(at, len)
        .map_err(|e| Error::io(e, "zeroing trimmed VHDX payload").offset(at))
}

fn write_payload(t: &Target<'_>, buf: Payload<'_>, at: u64) -> Result<()> {
    buf.write_to(t.file, at)
        .map_err(|e| Error::io(e, "writing VHDX payload").offset(at))
}

/// Appends `len` zeroed bytes at the end of the file rounded up to 1 MiB; returns the offset.
fn allocate(t: &Target<'_>, v: &Vhdx, len: u64) -> Result<u64> {
    let cur = t
        .file
        .len()
        .map_err(|e| Error::io(e, "reading the file length"))?;
    let off = round_up(cur.max(v.file_len()), MIB)?;
    let end = off
        .checked_add(len)
        .ok_or_else(|| Error::invalid_argument("file offset overflows"))?;
    t.file
        .set_len(end)
        .map_err(|e| Error::io(e, "extending the file for a new block").offset(off))?;
    v.note_file_len(end);
    Ok(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_fills_the_log_exactly() {
        // 1 MiB log = 256 sectors: 254 data sectors need 2 descriptor sectors (256 + 2
        // descriptor slots > 128 per sector), 255 would need 3.
        assert_eq!(entry_capacity(MIB), 254);
        for len in [MIB, 2 * MIB, 64 * 4096, 8 * MIB] {
            let n = entry_capacity(len) as u64;
            let sectors = len / 4096;
            assert!(n + fl::descriptor_sectors(n as u32) <= sectors, "{len}");
            assert!(
                n + 1 + fl::descriptor_sectors(n as u32 + 1) > sectors,
                "{len}"
            );
        }
    }
}
