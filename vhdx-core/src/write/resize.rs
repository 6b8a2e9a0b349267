//! Changing a disk's virtual size ([`resize`], [`resize_to_minimum`]; `vhdx resize`, like
//! Hyper-V's `Resize-VHD`).
//!
//! Every type grows. A disk shrinks only when no data lies at or past the new end: no
//! non-zero byte in the blocks the file holds (dynamic and differencing disks: in their
//! allocated blocks; fixed disks: anywhere); the error names where the data ends.
//! [`resize_to_minimum`] shrinks to that end, rounded up to a whole block (fixed disks: to a
//! whole MiB). Allocated blocks past the new end hold only zeros then; they leave the block
//! table (their space is cut off with the end of the file, or reclaimed by `vhdx compact`). The bytes below the smaller of the two sizes never
//! change; grown space reads as zeros (a differencing disk reads its parent there, or zeros
//! where its last partial block held data of its own).
//!
//! A differencing disk must have its parent's size, so it is resized only to the size its
//! parent has (after the parent was resized). Resizing a VHDX changes its data identity
//! (DataWriteGuid, as the spec requires for a size change), so its differencing children
//! must be relinked with `vhdx set-parent --ignore-id-mismatch` first; a VHD keeps its
//! UniqueId.
//!
//! # VHDX
//! The BAT region must hold the new entry count (payload and sector-bitmap entries,
//! FORMATS.md A.7). When it must grow, the space after it is cleared: the payload and
//! sector-bitmap blocks there are copied to the end of the file and their new BAT entries
//! committed through the log, the metadata region (placed right after the BAT by QEMU and by
//! `vhdx create`) is copied to the end and its region-table entries committed through the
//! log; then the space is zeroed. When the log or another region lies there instead, the BAT
//! region moves to the end of the file as a whole. Entries that become part of the BAT are
//! zeroed in the file before they count (they are outside the table until then); a fixed
//! disk gets new blocks, preallocated and FULLY_PRESENT, the same way. The size change itself
//! — both region tables and the virtual-size item — is one log entry, the commit point. A
//! shrunk file is cut after its last block once the log is clean.
//!
//! # VHD
//! Dynamic and differencing disks: MaxTableEntries must cover the new size. When the BAT
//! must grow into the space after it, the blocks and parent-locator data there move to the
//! end of the file first (the footer moves ahead of them; the BAT entries are committed, then
//! the locators' new places in the dynamic header). New BAT entries are written as
//! unallocated before the dynamic header counts them; growing writes the header before the
//! footers (CurrentSize, the CHS geometry as `vhdx create` computes it, and the copy at
//! offset 0), shrinking the footers first. OriginalSize is set to the new size too: the spec
//! calls it informational, but libvhdi reads the virtual size from it. Fixed disks: the footer is written at its new
//! place first, then the old one is zeroed (a crash in between leaves the old footer's 512
//! bytes in the grown space) or the file is cut.
//!
//! # Crash safety
//! A crash leaves the disk with its old or its new size and the content below the old size
//! unchanged; what an interrupted resize moved or allocated is at worst unreferenced space
//! (`vhdx check` reports it, `vhdx compact` reclaims it). Running the resize again finishes.

use super::layout::{self, Layout, Unit};
use super::vhd::VhdEngine;
use super::vhdx::VhdxEngine;
use super::{round_up, Engine, Target, WritableDisk};
use crate::chain::{Disk, OpenOptions};
use crate::disk::{Status, VirtualDisk};
use crate::error::{Error, Result};
use crate::format::vhd::{chs_geometry, MAX_DYNAMIC_SIZE, SECTOR};
use crate::format::vhdx::bat as fb;
use crate::format::vhdx::metadata as md;
use crate::format::vhdx::region;
use crate::format::vhdx::{crc32c_with_zeroed_field, MIB};
use crate::image::{Image, ImageFile};
use crate::ops::info::{DiskType, Format};
use crate::storage::{Storage, StorageMut};
use crate::vhd::Vhd;
use crate::vhdx::Vhdx;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Largest VHDX virtual size, 64 TiB (FORMATS.md A.13).
pub const MAX_VHDX_SIZE: u64 = 64 << 40;

/// What a resize did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResizeStats {
    /// The image.
    pub path: String,
    /// Its format.
    pub format: Format,
    /// Its type.
    pub disk_type: DiskType,
    /// Virtual size before.
    pub size_before: u64,
    /// Virtual size after.
    pub size_after: u64,
    /// The smallest size the disk could shrink to (the end of its last used data, rounded
    /// up to a whole block, or for fixed disks a whole MiB); not measured (`None`) when a
    /// fixed disk grows, which needs no scan of its content.
    pub minimum_size: Option<u64>,
    /// File length before.
    pub file_len_before: u64,
    /// File length after.
    pub file_len_after: u64,
    /// Whether the block table had to grow into the space after it.
    pub block_table_grown: bool,
    /// Blocks (and metadata or locator areas) moved out of the block table's way.
    pub blocks_moved: u64,
    /// Bytes moved.
    pub bytes_moved: u64,
    /// Seconds the resize took.
    pub seconds: f64,
    /// Whether the disk holds a GPT whose backup copy was moved to the new end (the
    /// primary header and the protective MBR updated to match).
    pub gpt_relocated: bool,
    /// A remark (nothing to do; what QEMU will report for an old VHD creator).
    pub note: Option<String>,
}

/// What to resize to.
#[derive(Debug, Clone, Copy)]
enum Goal {
    Size(u64),
    Minimum,
}

/// Resizes the disk at `path` to `new_size` bytes (see the module documentation). `opts`
/// opens the parents of a differencing disk; `progress(done, total)` is called as data is
/// moved or scanned.
///
/// ```
/// # use vhdx_core::create::{create, CreateOptions};
/// use vhdx_core::write::resize::{resize, resize_to_minimum};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("disk.vhdx");
/// # create(&path, &CreateOptions::new().size(64 << 20).block_size(1 << 20))?;
/// let grown = resize(&path, 1 << 30, &Default::default(), None)?;
/// assert_eq!((grown.size_before, grown.size_after), (64 << 20, 1 << 30));
/// let shrunk = resize_to_minimum(&path, &Default::default(), None)?; // nothing written yet
/// assert!(shrunk.size_after < 1 << 30);
/// # Ok::<(), vhdx_core::Error>(())
/// ```
pub fn resize(
    path: &Path,
    new_size: u64,
    opts: &OpenOptions,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<ResizeStats> {
    run(path, Goal::Size(new_size), opts, progress)
}

/// Shrinks the disk at `path` to the end of its last used data, rounded up to a whole block
/// (fixed disks: a whole MiB); see [`ResizeStats::minimum_size`].
pub fn resize_to_minimum(
    path: &Path,
    opts: &OpenOptions,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<ResizeStats> {
    run(path, Goal::Minimum, opts, progress)
}

fn run(
    path: &Path,
    goal: Goal,
    opts: &OpenOptions,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<ResizeStats> {
    let t0 = Instant::now();
    let disk = WritableDisk::open(path, opts)?;
    let r = disk
        .resize_inner(goal, progress)
        .map_err(|e| e.in_file(path));
    let closed = disk.close();
    let mut stats = r?;
    closed?;
    if stats.size_after >= stats.size_before {
        // A grown GPT disk gets its backup copy at the new end now that the end is there
        // (and an interrupted resize of either kind gets it finished).
        let disk = WritableDisk::open(path, opts)?;
        let r = disk.fit_gpt(stats.size_after);
        let closed = disk.close();
        stats.gpt_relocated |= r.map_err(|e| e.in_file(path))?;
        closed?;
    }
    stats.file_len_after = std::fs::metadata(path)
        .map_err(|e| Error::io(e, "reading the file length").in_file(path))?
        .len();
    stats.seconds = t0.elapsed().as_secs_f64();
    Ok(stats)
}

/// Counts work for the progress callback.
struct Work<'a> {
    done: u64,
    total: u64,
    progress: Option<&'a dyn Fn(u64, u64)>,
}

impl Work<'_> {
    fn add(&mut self, n: u64) {
        self.done += n;
        if let Some(p) = self.progress {
            p(self.done.min(self.total), self.total);
        }
    }
}

/// Where the used data of `disk`'s own file ends (a virtual offset: the end of the last
/// logical sector holding a non-zero byte) and the granule a minimum size is rounded to (the
/// block size; 1 MiB for fixed disks). Dynamic and differencing disks: only their allocated
/// blocks are read, the last first; fixed disks: every range the file stores, from the end.
/// Bytes in the `ignore` ranges (virtual, `(start, end)`: the backup GPT copies, which are
/// table structures rather than data) count as zeros.
fn used_end(
    disk: &Disk,
    lay: Option<&Layout>,
    ignore: &[(u64, u64)],
    work: &mut Work<'_>,
) -> Result<(u64, u64)> {
    let size = disk.size();
    let lss = u64::from(disk.logical_sector_size());
    let mut buf = vec![0u8; 4 << 20];
    // VHDX BAT indexes interleave bitmap entries (chunk ratio); VHD units start with the
    // block's bitmap.
    let (bs, cr, skip) = match disk.image() {
        Image::Vhdx(v) => (u64::from(v.metadata().block_size), Some(v.chunk_ratio()), 0),
        Image::Vhd(v) => match v.sparse() {
            Some(sp) => (u64::from(sp.block_size), None, sp.bitmap_bytes),
            None => (0, None, 0),
        },
        Image::Raw(_) => return Err(Error::invalid_argument("a raw image cannot be resized")),
    };
    let Some(lay) = lay.filter(|_| disk.disk_type() != DiskType::Fixed) else {
        let mut data: Vec<(u64, u64)> = Vec::new();
        disk.visit_extents(0, size, &mut |x| {
            if matches!(x.status, Status::Data { .. }) {
                match data.last_mut() {
                    Some(l) if l.0 + l.1 == x.offset => l.1 += x.length,
                    _ => data.push((x.offset, x.length)),
                }
            }
            Ok(())
        })?;
        work.total += data.iter().map(|d| d.1).sum::<u64>();
        for &(start, len) in data.iter().rev() {
            let read = |b: &mut [u8], o: u64| {
                disk.read_at(b, start + o)?;
                blank(b, start + o, ignore);
                Ok(())
            };
            if let Some(end) = last_nonzero(len, lss, &mut buf, work, read)? {
                return Ok((start + end, MIB));
            }
        }
        return Ok((0, MIB));
    };
    let mut blocks: Vec<(u64, u64)> = lay
        .units
        .iter()
        .filter(|u| u.payload)
        .map(|u| {
            (
                cr.map_or(u.index, |cr| to_block(u.index, cr)),
                u.offset + skip,
            )
        })
        .filter(|&(block, _)| block * bs < size)
        .collect();
    blocks.sort_unstable_by_key(|&(block, _)| std::cmp::Reverse(block));
    let storage = crate::disk::Layer::storage(disk);
    for (block, data) in blocks {
        let start = block * bs;
        let len = bs.min(size - start);
        work.total += len;
        let read = |b: &mut [u8], o: u64| {
            storage
                .read_at_zero_tail(b, data + o)
                .map_err(|e| Error::read_failed("block payload", data + o, e))?;
            blank(b, start + o, ignore);
            Ok(())
        };
        if let Some(end) = last_nonzero(len, lss, &mut buf, work, read)? {
            return Ok((start + end, bs));
        }
    }
    Ok((0, bs))
}

/// Zeroes the bytes of `buf` (read at virtual offset `at`) that fall in the `ignore` ranges.
fn blank(buf: &mut [u8], at: u64, ignore: &[(u64, u64)]) {
    let end = at + buf.len() as u64;
    for &(a, b) in ignore {
        let (a, b) = (a.max(at), b.min(end));
        if a < b {
            buf[(a - at) as usize..(b - at) as usize].fill(0);
        }
    }
}

/// The end of the last `lss`-byte sector of the `len` bytes `read(buf, offset)` gives that
/// holds a non-zero byte, read backwards in pieces of `buf`'s size; `None` when all are zero.
fn last_nonzero(
    len: u64,
    lss: u64,
    buf: &mut [u8],
    work: &mut Work<'_>,
    read: impl Fn(&mut [u8], u64) -> Result<()>,
) -> Result<Option<u64>> {
    let mut end = len;
    while end > 0 {
        let from = end.saturating_sub(buf.len() as u64);
        let b = &mut buf[..(end - from) as usize];
        read(b, from)?;
        work.add(end - from);
        if let Some(i) = b.iter().rposition(|&x| x != 0) {
            return Ok(Some((from + i as u64 + 1).div_ceil(lss) * lss));
        }
        end = from;
    }
    Ok(None)
}

impl WritableDisk {
    fn resize_inner(&self, goal: Goal, progress: Option<&dyn Fn(u64, u64)>) -> Result<ResizeStats> {
        self.flush()?;
        let d = &self.disk;
        let old = d.size();
        let file_len = self
            .file
            .len()
            .map_err(|e| Error::io(e, "reading the file length"))?;
        let lay = self.layout()?;
        let mut work = Work {
            done: 0,
            total: 0,
            progress,
        };
        // Growing a fixed disk needs no scan of its content.
        let scan = match goal {
            Goal::Size(s) => s < old || d.disk_type() != DiskType::Fixed,
            Goal::Minimum => true,
        };
        // Partitions are never cut, and a GPT keeps room for its backup copy.
        let bounds = crate::guest::relocate::bounds(d)?;
        let (used, minimum) = if scan {
            let (used, granule) = used_end(d, lay.as_ref(), &bounds.gpt_backups, &mut work)?;
            let used = used.max(bounds.min_size());
            (used, Some(round_up(used.max(1), granule)?.min(old)))
        } else {
            (old, None)
        };
        let new = match (goal, minimum) {
            (Goal::Size(s), _) => s,
            (Goal::Minimum, m) => m.unwrap_or(old),
        };
        if new < old {
            bounds.check(new)?;
        }
        self.check_size(old, new, used, matches!(goal, Goal::Minimum))?;
        let mut stats = ResizeStats {
            path: self.path.display().to_string(),
            format: d.format(),
            disk_type: d.disk_type(),
            size_before: old,
            size_after: new,
            minimum_size: minimum,
            file_len_before: file_len,
            file_len_after: file_len,
            block_table_grown: false,
            blocks_moved: 0,
            bytes_moved: 0,
            seconds: 0.0,
            gpt_relocated: false,
            note: None,
        };
        if new == old {
            // A resize killed between its two footer writes is finished here.
            if let Engine::Vhd(e) = &mut self.state().engine {
                e.repair_footer_copy(&self.target())?;
            }
            stats.note = Some(format!("the disk already has {new} bytes: nothing to do"));
            work.add(work.total.saturating_sub(work.done));
            return Ok(stats);
        }
        let mut lay = lay;
        if new < old {
            // The backup GPT moves inside the disk before the end is cut off (which may
            // allocate a block: the layout is read again).
            stats.gpt_relocated = self.fit_gpt(new)?;
            if stats.gpt_relocated {
                lay = self.layout()?;
            }
        }
        let mut st = self.state();
        let engine = &mut st.engine;
        match d.image() {
            Image::Vhdx(v) => {
                let lay = lay.as_ref().expect("a VHDX has a layout");
                self.resize_vhdx(engine, v, lay, new, &mut stats, &mut work)?;
                stats.note = Some(format!(
                    "a new size is a new data identity (DataWriteGuid): differencing children \
                     of this disk must be relinked (`vhdx set-parent CHILD {} \
                     --ignore-id-mismatch`) and resized to match",
                    self.path.display()
                ));
            }
            Image::Vhd(v) => {
                self.resize_vhd(engine, v, lay.as_ref(), new, &mut stats, &mut work)?;
                let creator = v.footer().creator_application;
                if matches!(&creator, b"vpc " | b"vs  " | b"qemu") {
                    stats.note = Some(format!(
                        "the creator {:?} makes QEMU derive the size from the CHS geometry \
                         ({} bytes) rather than from CurrentSize",
                        String::from_utf8_lossy(&creator),
                        chs_geometry(new / SECTOR).sectors() * SECTOR
                    ));
                }
            }
            Image::Raw(_) => return Err(Error::invalid_argument("a raw image cannot be resized")),
        }
        work.add(work.total.saturating_sub(work.done));
        Ok(stats)
    }

    /// Where every block and structure of the file lies (checked: nothing overlaps).
    fn layout(&self) -> Result<Option<Layout>> {
        let lay = match self.disk.image() {
            Image::Vhdx(v) => Some(layout::vhdx_layout(v, &*self.journal)?),
            Image::Vhd(v) => layout::vhd_layout(v, &*self.journal)?,
            Image::Raw(_) => None,
        };
        if let Some(l) = &lay {
            l.validate("block layout")?;
        }
        Ok(lay)
    }

    /// Fits a GPT to a disk of `size` bytes ([`crate::guest::relocate::gpt_move`]): the new
    /// backup copy, flushed; then the primary header and protective MBR, flushed; then the
    /// old backup copy zeroed when it stays inside the disk. Every step leaves a valid GPT.
    /// Whether anything was written.
    fn fit_gpt(&self, size: u64) -> Result<bool> {
        let Some(m) = crate::guest::relocate::gpt_move(&self.disk, size)? else {
            return Ok(false);
        };
        for (at, bytes) in &m.backup {
            self.write_at(bytes, *at)?;
        }
        self.flush()?;
        for (at, bytes) in &m.primary {
            self.write_at(bytes, *at)?;
        }
        self.flush()?;
        if let Some((at, len)) = m.stale {
            self.write_at(&vec![0u8; len as usize], at)?;
            self.flush()?;
        }
        Ok(true)
    }

    /// Refuses sizes the format cannot hold, a differencing disk that would leave its
    /// parent's size, and a shrink past used data.
    fn check_size(&self, old: u64, new: u64, used: u64, minimum: bool) -> Result<()> {
        let d = &self.disk;
        let lss = u64::from(d.logical_sector_size());
        let (max, limit) = match d.format() {
            Format::Vhd => (MAX_DYNAMIC_SIZE, "2040 GiB (the VHD limit)"),
            _ => (MAX_VHDX_SIZE, "64 TiB (the VHDX limit)"),
        };
        if new == 0 || new % lss != 0 || new > max {
            return Err(Error::invalid_argument(format!(
                "the new size {new} must be a nonzero multiple of the logical sector size \
                 {lss} and at most {limit}"
            )));
        }
        if d.disk_type() == DiskType::Differencing {
            let parent = d.parent().map(|p| p.size()).ok_or_else(|| {
                Error::invalid_argument("the parent of the differencing disk is not open")
            })?;
            if minimum || new != parent {
                return Err(Error::invalid_argument(format!(
                    "a differencing disk must have its parent's virtual size ({parent} bytes), \
                     so it is not resized on its own: resize the parent first (a VHDX parent \
                     then needs `vhdx set-parent CHILD PARENT --ignore-id-mismatch`, as its data \
                     identity changes), then resize this disk to {parent} bytes"
                )));
            }
        }
        if new < old && new < used {
            return Err(Error::invalid_argument(format!(
                "cannot shrink to {new} bytes: the disk holds data up to offset {used} ({used:#x}); \
                 `--to-minimum` shrinks to the smallest size that keeps it"
            ))
            .offset(used));
        }
        Ok(())
    }

    fn resize_vhdx(
        &self,
        engine: &mut Engine,
        v: &Vhdx,
        lay: &Layout,
        new: u64,
        stats: &mut ResizeStats,
        work: &mut Work<'_>,
    ) -> Result<()> {
        let t = self.target();
        let m = v.metadata();
        let bs = u64::from(m.block_size);
        let cr = v.chunk_ratio();
        let diff = m.has_parent;
        let old = m.virtual_size;
        let old_total = fb::total_entries(old, m.block_size, cr, diff);
        let new_total = fb::total_entries(new, m.block_size, cr, diff);
        let (old_blocks, new_blocks) = (old.div_ceil(bs), new.div_ceil(bs));
        let regions = v.regions().clone();
        let old_bat = (regions.bat.offset, regions.bat.length);
        let meta = (regions.metadata.offset, regions.metadata.length);
        let mut meta_off = meta.0;
        let need = round_up(new_total * 8, MIB)?;
        // Where moved and new things go: past everything.
        let mut end = round_up(self.file_len()?.max(lay.needed_len()), MIB)?;
        let mut bat = old_bat;
        if need > old_bat.1 {
            stats.block_table_grown = true;
            let grow = (old_bat.0 + old_bat.1, need - old_bat.1);
            let blocked = lay
                .fixed
                .iter()
                .any(|&f| f != old_bat && f != meta && overlaps(f, grow));
            if blocked {
                // The log or another region follows the BAT: the BAT moves as a whole.
                bat = (end, need);
                end += need;
                self.set_len_at_least(v, end)?;
                self.file
                    .copy_within(old_bat.0, bat.0, old_total * 8)
                    .map_err(|err| Error::io(err, "copying the BAT").offset(old_bat.0))?;
            } else {
                end = end.max(grow.0 + grow.1);
                let movers: Vec<Unit> = lay
                    .units
                    .iter()
                    .copied()
                    .filter(|u| overlaps((u.offset, u.length), grow))
                    .collect();
                work.total += movers.iter().map(|u| u.length).sum::<u64>();
                for u in &movers {
                    self.move_unit(engine, *u, end)?;
                    end += u.length.div_ceil(MIB) * MIB;
                    // (A copy keeps the holes of its source, so a block ending in one does
                    // not extend the file over its whole length by itself.)
                    self.set_len_at_least(v, end)?;
                    stats.blocks_moved += 1;
                    stats.bytes_moved += u.length;
                    work.add(u.length);
                }
                vhdx_engine(engine).commit(&t)?;
                if overlaps(meta, grow) {
                    self.file
                        .copy_within(meta.0, end, meta.1)
                        .map_err(|err| Error::io(err, "copying the metadata region"))?;
                    meta_off = end;
                    end += meta.1;
                    self.set_len_at_least(v, end)?;
                    stats.blocks_moved += 1;
                    stats.bytes_moved += meta.1;
                    let e = vhdx_engine(engine);
                    e.begin(&t, false)?;
                    self.stage_regions(&t, v, old_bat, meta_off)?;
                    e.commit(&t)?;
                }
                // The old places are free once the commits are durable.
                self.sync()?;
                self.set_len_at_least(v, grow.0 + grow.1)?;
                self.file
                    .discard(grow.0, grow.1)
                    .map_err(|err| Error::io(err, "zeroing the grown BAT").offset(grow.0))?;
                bat.1 = need;
            }
        }
        if new > old {
            self.prepare_vhdx_growth(v, bat.0, &mut end, (old_total, new_total))?;
            if m.leave_block_allocated {
                // A fixed disk: preallocated blocks for the new part, in order, at the end.
                let first = end;
                end = first + (new_blocks - old_blocks) * bs;
                self.preallocate(end)?;
                v.note_file_len(end);
                let from = fb::payload_bat_index(old_blocks, cr);
                let mut entries = Vec::new();
                for idx in from..new_total {
                    let entry = if idx % (cr + 1) == cr {
                        0
                    } else {
                        let off = first + (to_block(idx, cr) - old_blocks) * bs;
                        fb::make_entry(fb::PAYLOAD_FULLY_PRESENT, off)
                    };
                    entries.extend_from_slice(&entry.to_le_bytes());
                }
                let at = bat.0 + from * 8;
                self.file
                    .write_all_at(&entries, at)
                    .map_err(|err| Error::io(err, "writing new BAT entries").offset(at))?;
            }
        }
        self.sync()?;
        // The commit point: both region tables and the virtual size, in one log entry.
        let e = vhdx_engine(engine);
        e.begin(&t, true)?;
        if bat != old_bat {
            self.stage_regions(&t, v, bat, meta_off)?;
        }
        let size_item = m
            .entries
            .iter()
            .find(|it| it.item_id == md::VIRTUAL_DISK_SIZE && it.flags & md::FLAG_IS_USER == 0)
            .ok_or_else(|| Error::corrupt("VHDX metadata table", meta_off, "no virtual size"))?;
        let at = meta_off + u64::from(size_item.offset);
        t.journal
            .stage(at, &new.to_le_bytes())
            .map_err(|err| Error::io(err, "staging the virtual size").offset(at))?;
        e.commit(&t)?;
        self.sync()?;
        if bat.0 != old_bat.0 {
            // The old BAT is unreferenced now; its space becomes a hole (compaction reuses it).
            self.file
                .discard(old_bat.0, old_bat.1)
                .map_err(|err| Error::io(err, "freeing the old BAT").offset(old_bat.0))?;
        }
        if new < old {
            // Entries past the new table are cleared, so that no later growth (by any tool)
            // finds stale blocks there; then a fixed disk's blocks past the new end are cut
            // off with the file, once the log is clean.
            let a = bat.0 + new_total * 8;
            self.file
                .write_zeroes_at(a, (old_total - new_total) * 8)
                .map_err(|err| Error::io(err, "clearing BAT entries").offset(a))?;
            self.sync()?;
            e.finish(&t)?;
            let kept = Layout {
                units: lay
                    .units
                    .iter()
                    .copied()
                    .filter(|u| u.index < new_total)
                    .collect(),
                ..lay.clone()
            };
            let len = kept.needed_len();
            if len < self.file_len()? {
                self.truncate(len)?;
            }
        }
        Ok(())
    }

    /// Before a VHDX grows: zeroes the BAT entries that become part of the table (payload
    /// entries from the old last block on, and bitmap entries the old table did not hold),
    /// and the part of the old last block past the old end (so the grown space reads zeros).
    /// All of it is invisible until the new size is committed.
    fn prepare_vhdx_growth(
        &self,
        v: &Vhdx,
        bat: u64,
        end: &mut u64,
        (old_total, new_total): (u64, u64),
    ) -> Result<()> {
        let m = v.metadata();
        let bs = u64::from(m.block_size);
        let cr = v.chunk_ratio();
        let old = m.virtual_size;
        let old_blocks = old.div_ceil(bs);
        let first = fb::payload_bat_index(old_blocks, cr);
        let zero = |a: u64, b: u64| -> Result<()> {
            if b > a {
                self.file
                    .write_zeroes_at(bat + a * 8, (b - a) * 8)
                    .map_err(|err| Error::io(err, "zeroing new BAT entries").offset(bat + a * 8))?;
            }
            Ok(())
        };
        if m.has_parent && first < old_total {
            // The bitmap entry of the old last chunk is live: keep it.
            zero(first, old_total - 1)?;
            zero(old_total, new_total)?;
        } else {
            zero(first.min(old_total), new_total)?;
        }
        if old % bs != 0 {
            let block = old / bs;
            let entry = v.payload_entry(block)?;
            let state = fb::entry_state(entry);
            if matches!(
                state,
                fb::PAYLOAD_FULLY_PRESENT | fb::PAYLOAD_PARTIALLY_PRESENT
            ) {
                let off = v.data_offset(block, entry)?;
                let tail = old % bs;
                self.file
                    .write_zeroes_at(off + tail, bs - tail)
                    .map_err(|err| Error::io(err, "zeroing a block's tail").offset(off + tail))?;
                *end = (*end).max(round_up(off + bs, MIB)?);
                v.note_file_len(off + bs);
                if state == fb::PAYLOAD_PARTIALLY_PRESENT {
                    // Sectors past the old end read the parent, as in a new block.
                    let lss = u64::from(m.logical_sector_size);
                    let spb = bs / lss;
                    let sb = fb::entry_offset(v.bitmap_entry(block / cr)?);
                    let base = (block % cr) * spb;
                    let (a, b) = (base + tail / lss, base + spb);
                    let byte0 = a / 8;
                    let mut bits = vec![0u8; (b.div_ceil(8) - byte0) as usize];
                    self.file
                        .read_exact_at(&mut bits, sb + byte0)
                        .map_err(|err| Error::read_failed("VHDX sector bitmap", sb + byte0, err))?;
                    for i in a..b {
                        let k = i - byte0 * 8;
                        bits[(k / 8) as usize] &= !(1 << (k % 8));
                    }
                    self.file
                        .write_all_at(&bits, sb + byte0)
                        .map_err(|err| Error::io(err, "clearing sector bits").offset(sb + byte0))?;
                }
            }
        }
        Ok(())
    }

    /// Stages both region tables with the BAT at `bat` (offset, length) and the metadata
    /// region at `meta_off`, built from the copy in use.
    fn stage_regions(
        &self,
        t: &Target<'_>,
        v: &Vhdx,
        bat: (u64, u64),
        meta_off: u64,
    ) -> Result<()> {
        let from = region::OFFSETS[v.regions().copy_used];
        let mut table = vec![0u8; region::SIZE];
        t.journal
            .read_exact_at(&mut table, from)
            .map_err(|err| Error::read_failed("VHDX region table", from, err))?;
        let count = u32::from_le_bytes([table[8], table[9], table[10], table[11]]) as usize;
        let len32 = u32::try_from(bat.1)
            .map_err(|_| Error::invalid_argument("the BAT region would exceed 4 GiB"))?;
        for i in 0..count.min(region::MAX_ENTRIES as usize) {
            let e = 16 + 32 * i;
            let guid = &table[e..e + 16];
            if guid == region::BAT_GUID.0 {
                table[e + 16..e + 24].copy_from_slice(&bat.0.to_le_bytes());
                table[e + 24..e + 28].copy_from_slice(&len32.to_le_bytes());
            } else if guid == region::METADATA_GUID.0 {
                table[e + 16..e + 24].copy_from_slice(&meta_off.to_le_bytes());
            }
        }
        table[4..8].fill(0);
        let crc = crc32c_with_zeroed_field(&table, region::CHECKSUM_FIELD);
        table[4..8].copy_from_slice(&crc.to_le_bytes());
        for off in region::OFFSETS {
            // Only the pages that change are logged.
            let mut cur = vec![0u8; region::SIZE];
            t.journal
                .read_exact_at(&mut cur, off)
                .map_err(|err| Error::read_failed("VHDX region table", off, err))?;
            for (p, (a, b)) in table.chunks(4096).zip(cur.chunks(4096)).enumerate() {
                if a != b {
                    let at = off + p as u64 * 4096;
                    t.journal
                        .stage(at, a)
                        .map_err(|err| Error::io(err, "staging a region table").offset(at))?;
                }
            }
        }
        Ok(())
    }

    fn resize_vhd(
        &self,
        engine: &mut Engine,
        v: &Vhd,
        lay: Option<&Layout>,
        new: u64,
        stats: &mut ResizeStats,
        work: &mut Work<'_>,
    ) -> Result<()> {
        let t = self.target();
        let old = v.footer().current_size.get();
        let set_size = |f: &mut crate::format::vhd::footer::Footer| {
            f.current_size.set(new);
            // Informational by the spec, but libvhdi takes the size from it (and DiscUtils
            // sets both when it resizes): every reader then agrees on the new size.
            f.original_size.set(new);
            let chs = chs_geometry(new / SECTOR);
            f.cylinders.set(chs.cylinders);
            f.heads = chs.heads;
            f.sectors_per_track = chs.sectors_per_track;
        };
        let Some(sp) = v.sparse() else {
            // Fixed: the data is the file up to the footer.
            let e = vhd_engine(engine);
            e.set_footer(set_size)?;
            if new > old {
                self.preallocate(new + SECTOR)?;
                e.move_footer(&t, new)?;
                self.file
                    .write_zeroes_at(old, SECTOR)
                    .map_err(|err| Error::io(err, "zeroing the old footer").offset(old))?;
                self.sync()?;
            } else {
                e.move_footer(&t, new)?;
                self.truncate(new + SECTOR)?;
            }
            return Ok(());
        };
        let lay = lay.expect("a dynamic VHD has a layout");
        let bs = u64::from(sp.block_size);
        let new_mte = new.div_ceil(bs);
        let new_mte32 = u32::try_from(new_mte)
            .map_err(|_| Error::invalid_argument("too many blocks for a VHD BAT"))?;
        let old_mte = u64::from(sp.header.max_table_entries.get());
        let bat = sp.bat.offset();
        let old_bat_end = bat + (old_mte * 4).next_multiple_of(SECTOR);
        let new_bat_end = bat + (new_mte * 4).next_multiple_of(SECTOR);
        let mut h = sp.header;
        if new < old {
            let e = vhd_engine(engine);
            e.set_footer(set_size)?;
            e.write_footers(&t)?;
            h.max_table_entries.set(new_mte32);
            e.write_header(&t, h)?;
            // Blocks past the new end (all zeros) are outside the table now: cleared, so that
            // no later growth finds them.
            let a = bat + new_mte * 4;
            let b = bat + old_mte * 4;
            if b > a {
                self.file
                    .write_all_at(&vec![0xFF; (b - a) as usize], a)
                    .map_err(|err| Error::io(err, "clearing VHD BAT entries").offset(a))?;
                self.sync()?;
            }
            return Ok(());
        }
        if new_bat_end > old_bat_end {
            stats.block_table_grown = true;
            let grow = (old_bat_end, new_bat_end - old_bat_end);
            let place = |l: &crate::format::vhd::parent_locator::ParentLocatorEntry| {
                (l.platform_data_offset.get(), l.data_space_bytes())
            };
            let diff = v.disk_type() == DiskType::Differencing;
            let locators: Vec<usize> = (0..h.parent_locators.len())
                .filter(|&i| {
                    let l = &h.parent_locators[i];
                    diff && l.is_used() && overlaps(place(l), grow)
                })
                .collect();
            let blocked = lay.fixed.iter().any(|&f| {
                overlaps(f, grow) && !locators.iter().any(|&i| place(&h.parent_locators[i]) == f)
            });
            if blocked {
                return Err(Error::unsupported(
                    "VHD dynamic header",
                    sp.header_offset + 16,
                    "the footer copy or the dynamic header lies right after the BAT, so the BAT \
                     cannot grow",
                ));
            }
            let movers: Vec<Unit> = lay
                .units
                .iter()
                .copied()
                .filter(|u| overlaps((u.offset, u.length), grow))
                .collect();
            work.total += movers.iter().map(|u| u.length).sum::<u64>();
            for u in &movers {
                let to = vhd_engine(engine).reserve(
                    &t,
                    v,
                    new_bat_end,
                    u.length,
                    4096,
                    sp.bitmap_bytes,
                )?;
                self.move_unit(engine, *u, to)?;
                stats.blocks_moved += 1;
                stats.bytes_moved += u.length;
                work.add(u.length);
            }
            let e = vhd_engine(engine);
            e.commit(&t)?;
            for &i in &locators {
                let (from, space) = place(&h.parent_locators[i]);
                let to = e.reserve(&t, v, new_bat_end, space, SECTOR, 0)?;
                self.file
                    .copy_within(from, to, space)
                    .map_err(|err| Error::io(err, "copying parent locator data").offset(from))?;
                h.parent_locators[i].platform_data_offset.set(to);
                stats.blocks_moved += 1;
                stats.bytes_moved += space;
            }
            if !locators.is_empty() {
                self.sync()?;
                e.write_header(&t, h)?;
            }
            if e.footer_offset() < new_bat_end {
                e.move_footer(&t, new_bat_end)?;
                v.note_file_len(new_bat_end + SECTOR);
            }
        }
        let e = vhd_engine(engine);
        // Entries from the old last block on are invisible until the header counts them.
        let old_blocks = old.div_ceil(bs);
        let a = bat + old_blocks * 4;
        let b = bat + (old_mte.max(new_mte) * 4).next_multiple_of(SECTOR);
        self.file
            .write_all_at(&vec![0xFF; (b - a) as usize], a)
            .map_err(|err| Error::io(err, "writing new VHD BAT entries").offset(a))?;
        if old % bs != 0 {
            self.clear_vhd_tail(e, v, old)?;
        }
        self.sync()?;
        h.max_table_entries.set(new_mte32);
        e.write_header(&t, h)?;
        e.set_footer(set_size)?;
        e.write_footers(&t)
    }

    /// Before a VHD grows: the part of its old last block past the old end is zeroed, and in
    /// a differencing disk its sectors marked absent (they read the parent, as in a new
    /// block). When the block reaches past the footer, the footer moves first.
    fn clear_vhd_tail(&self, e: &mut VhdEngine, v: &Vhd, old: u64) -> Result<()> {
        let t = self.target();
        let sp = v.sparse().expect("dynamic or differencing");
        let bs = u64::from(sp.block_size);
        let block = old / bs;
        let entry = sp.bat.entry(&*self.journal, block)?;
        if entry == crate::format::vhd::dynamic_header::BAT_UNALLOCATED {
            return Ok(());
        }
        let data = v.block_data_offset(sp, block, entry)?;
        if data + bs > e.footer_offset() {
            e.move_footer(&t, data + bs)?;
            v.note_file_len(data + bs + SECTOR);
        }
        let tail = old % bs;
        self.file
            .write_zeroes_at(data + tail, bs - tail)
            .map_err(|err| Error::io(err, "zeroing a block's tail").offset(data + tail))?;
        if v.disk_type() == DiskType::Differencing {
            let bitmap = data - sp.bitmap_bytes;
            let (a, b) = (tail / SECTOR, bs / SECTOR);
            let mut bits = vec![0u8; sp.bitmap_bytes as usize];
            self.file
                .read_exact_at(&mut bits, bitmap)
                .map_err(|err| Error::read_failed("VHD sector bitmap", bitmap, err))?;
            for s in a..b {
                bits[(s / 8) as usize] &= !(0x80 >> (s % 8));
            }
            self.file
                .write_all_at(&bits, bitmap)
                .map_err(|err| Error::io(err, "clearing sector bits").offset(bitmap))?;
        }
        Ok(())
    }

    fn file_len(&self) -> Result<u64> {
        self.file
            .len()
            .map_err(|e| Error::io(e, "reading the file length"))
    }

    fn sync(&self) -> Result<()> {
        self.file
            .sync()
            .map_err(|e| Error::io(e, "flushing the image file"))
    }

    /// Extends the file to at least `len` bytes (the new part reads as zeros).
    fn set_len_at_least(&self, v: &Vhdx, len: u64) -> Result<()> {
        if self.file_len()? < len {
            self.file
                .set_len(len)
                .map_err(|e| Error::io(e, "extending the file").offset(len))?;
        }
        v.note_file_len(len);
        Ok(())
    }

    /// Allocates the file on the host up to `len` bytes (a fixed disk's new part), or where
    /// the file system cannot, at least extends it.
    fn preallocate(&self, len: u64) -> Result<()> {
        #[cfg(target_os = "linux")]
        if crate::storage::sparse::allocate(self.file.file(), len)
            .map_err(|e| Error::io(e, "preallocating the grown disk"))?
        {
            return Ok(());
        }
        if self.file_len()? < len {
            self.file
                .set_len(len)
                .map_err(|e| Error::io(e, "extending the file"))?;
        }
        Ok(())
    }
}

/// The VHDX half of `engine` (a VHDX image has one).
fn vhdx_engine(engine: &mut Engine) -> &mut VhdxEngine {
    match engine {
        Engine::Vhdx(e) => e,
        _ => unreachable!("a VHDX image has a VHDX engine"),
    }
}

/// The VHD half of `engine` (a VHD image has one).
fn vhd_engine(engine: &mut Engine) -> &mut VhdEngine {
    match engine {
        Engine::Vhd(e) => e,
        _ => unreachable!("a VHD image has a VHD engine"),
    }
}

/// Whether the ranges `(offset, length)` overlap.
fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0 + b.1 && b.0 < a.0 + a.1
}

/// The payload block of VHDX BAT index `idx` (a payload index).
fn to_block(idx: u64, cr: u64) -> u64 {
    idx - idx / (cr + 1)
}
