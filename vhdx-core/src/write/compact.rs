//! Compaction in place ([`WritableDisk::compact`]): give back the space of blocks that hold
//! no live data.
//!
//! - `quick`: move blocks from the end of the file into the holes (see
//!   [`super::layout::plan`]), then truncate.
//! - `full`: first release every allocated block that reads as zeros — dynamic disks:
//!   unallocated; differencing disks: unallocated where the parent also reads zeros there,
//!   else (VHDX) the ZERO state — then do what `quick` does. Unless turned off
//!   ([`CompactOptions::free_space`]), full mode also reads the free-space maps of the
//!   guest's file systems ([`FreeMap`]) and releases every block whose bytes are each free
//!   in an understood volume or read as zeros.
//! - `retrim`: move nothing; punch holes in the host file wherever no block or structure
//!   lies, so the file becomes sparse and keeps its length.
//!
//! # Crash safety
//! Everything goes through the write path's commits: a block is copied into a hole that is
//! free in the durable state, the copy is flushed before the BAT entry that points at it is
//! committed (through the log for VHDX), the space a block leaves is never reused in the same
//! run, and the file is truncated only after every BAT change is durable and, for VHDX, the
//! log is clean (so a replay can never extend the file again). A killed compaction leaves a
//! disk with the same content, perhaps not fully compacted; running it again finishes.
//!
//! Compaction keeps every byte the disk reads, so the DataWriteGuid stays (children stay
//! linked); only the FileWriteGuid changes.

use super::layout::{self, Layout, Unit};
use super::{Engine, WritableDisk};
use crate::bytes::is_zero;
use crate::chain::Disk;
use crate::disk::Layer;
use crate::disk::VirtualDisk;
use crate::error::{Error, Result};
use crate::format::vhdx::bat as fb;
use crate::guest::freespace::{FreeMap, VolumeFreeSpace};
use crate::image::Image;
use crate::ops::info::DiskType;
use crate::storage::{Storage, StorageMut};
use serde::Serialize;
use std::time::Instant;

/// How much work a compaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompactMode {
    /// Move blocks into holes and truncate.
    Quick,
    /// Release all-zero blocks, then as quick.
    Full,
    /// Punch holes for the free space only; nothing moves.
    Retrim,
}

impl std::str::FromStr for CompactMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "quick" => Ok(CompactMode::Quick),
            "full" => Ok(CompactMode::Full),
            "retrim" => Ok(CompactMode::Retrim),
            _ => Err(Error::invalid_argument(format!(
                "unknown compaction mode {s:?} (expected quick, full or retrim)"
            ))),
        }
    }
}

/// How to compact: the mode, and whether full mode reads the guest's free-space maps.
/// A [`CompactMode`] converts into the default options for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactOptions {
    /// The mode.
    pub mode: CompactMode,
    /// Full mode: also release blocks that hold only free space of the guest's file systems
    /// (ext2/3/4, NTFS; see [`FreeMap`]). On by default; off keeps full mode to all-zero
    /// blocks. Ignored by the other modes.
    pub free_space: bool,
}

impl From<CompactMode> for CompactOptions {
    fn from(mode: CompactMode) -> Self {
        CompactOptions {
            mode,
            free_space: true,
        }
    }
}

/// What a compaction did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompactStats {
    /// The mode.
    pub mode: CompactMode,
    /// Whether nothing was changed (a dry run).
    pub dry_run: bool,
    /// File length before.
    pub file_len_before: u64,
    /// File length after (or after a real run, for a dry run).
    pub file_len_after: u64,
    /// Bytes the file occupies on the host before (allocated blocks), when known.
    pub host_bytes_before: Option<u64>,
    /// Bytes the file occupies on the host after, when known (not for a dry run).
    pub host_bytes_after: Option<u64>,
    /// `file_len_before - file_len_after`, or for `retrim` the bytes of holes punched.
    pub bytes_reclaimed: u64,
    /// Blocks moved.
    pub blocks_moved: u64,
    /// Bytes moved.
    pub bytes_moved: u64,
    /// All-zero blocks released (`full`).
    pub zero_blocks_released: u64,
    /// Whether the guest's free-space maps were read (`full`, unless turned off).
    pub free_space_pass: bool,
    /// Blocks released because they hold only free space of the guest's file systems
    /// (with zeros in the rest), not counted in `zero_blocks_released`.
    pub free_space_blocks_released: u64,
    /// The guest's volumes and what the free-space pass made of each (empty without it).
    pub volumes: Vec<VolumeFreeSpace>,
    /// Seconds the compaction took.
    pub seconds: f64,
    /// Differencing disks: bytes of the virtual disk read from parent files, which
    /// compacting this disk cannot give back (only a merge can).
    pub parent_data_bytes: Option<u64>,
    /// Why nothing could be done (fixed disks), or what a differencing disk's parents hold.
    pub note: Option<String>,
}

/// What the analysis of a disk found.
struct Analysis {
    /// The layout, with the released units removed.
    lay: Layout,
    /// Released blocks: (BAT index, new entry).
    releases: Vec<(u64, u64)>,
    /// How many of `releases` were released for holding free space.
    free_space_released: u64,
    /// The volumes of the free-space pass, with their counts.
    volumes: Vec<VolumeFreeSpace>,
    /// Whether the free-space pass ran.
    free_space_pass: bool,
    /// Free ranges of the file (retrim).
    free: Vec<(u64, u64)>,
    /// Packing moves over `lay.units`.
    moves: Vec<(usize, u64)>,
    /// File length after the moves.
    end: u64,
}

/// The stats every run starts from: sizes before, and for a differencing disk what its
/// parents hold.
fn base_stats(
    disk: &Disk,
    mode: CompactMode,
    dry_run: bool,
    file_len: u64,
) -> Result<CompactStats> {
    let mut stats = CompactStats {
        mode,
        dry_run,
        file_len_before: file_len,
        file_len_after: file_len,
        host_bytes_before: disk.path().and_then(host_bytes),
        host_bytes_after: None,
        bytes_reclaimed: 0,
        blocks_moved: 0,
        bytes_moved: 0,
        zero_blocks_released: 0,
        free_space_pass: false,
        free_space_blocks_released: 0,
        volumes: Vec::new(),
        seconds: 0.0,
        parent_data_bytes: None,
        note: None,
    };
    if disk.disk_type() == DiskType::Differencing {
        let paths = disk
            .chain()
            .iter()
            .map(|d| {
                d.path()
                    .map_or_else(String::new, |p| p.display().to_string())
            })
            .collect();
        let u = crate::ops::info::chain_usage(disk, paths)?;
        stats.parent_data_bytes = Some(u.parent_data_bytes);
        stats.note = Some(u.note);
    }
    Ok(stats)
}

const FIXED_NOTE: &str = "a fixed disk has no unused blocks to give back; convert it to a \
     dynamic disk (`vhdx convert IN OUT --type dynamic`) to make it smaller";

/// Analyses `disk` for `how` without changing anything: `None` for fixed disks.
/// `progress(done)` is called from this thread during the zero scan.
fn analyze(
    disk: &Disk,
    how: CompactOptions,
    file_len: u64,
    progress: &dyn Fn(u64),
) -> Result<Option<Analysis>> {
    let mode = how.mode;
    let Some(mut lay) = layout_of(disk)? else {
        return Ok(None);
    };
    lay.validate("block layout")?;
    // Free: the gaps between blocks and structures, and what lies between the last of them
    // and the end of the file (minus the VHD footer).
    let used_end = lay.needed_len() - lay.tail;
    let mut free = lay.gaps();
    let file_end = file_len.saturating_sub(lay.tail);
    if file_end > used_end {
        free.push((used_end, file_end - used_end));
    }
    let mut releases = Vec::new();
    let mut free_space_released = 0;
    let mut volumes = Vec::new();
    if mode == CompactMode::Full {
        let map = match how.free_space {
            true => Some(FreeMap::read(disk)?),
            false => None,
        };
        let found = zero_blocks(disk, &lay, map.as_ref(), progress)?;
        if let Some(mut map) = map {
            for r in &found {
                if let Some(v) = r.volume {
                    free_space_released += 1;
                    map.volumes[v].blocks_released += 1;
                    map.volumes[v].bytes_reclaimed += r.bytes;
                }
            }
            volumes = map.volumes;
        }
        let gone: std::collections::HashSet<usize> = found.iter().map(|r| r.unit).collect();
        releases = found
            .iter()
            .map(|r| (lay.units[r.unit].index, r.entry))
            .collect();
        let mut i = 0;
        lay.units.retain(|_| {
            i += 1;
            !gone.contains(&(i - 1))
        });
    }
    let (moves, end) = if mode == CompactMode::Retrim {
        (Vec::new(), file_len)
    } else {
        layout::plan(&lay)
    };
    Ok(Some(Analysis {
        lay,
        releases,
        free_space_released,
        volumes,
        free_space_pass: mode == CompactMode::Full && how.free_space,
        free,
        moves,
        end: end.min(file_len),
    }))
}

/// The layout of `disk`'s image, `None` when it has nothing to compact (fixed disks).
fn layout_of(disk: &Disk) -> Result<Option<Layout>> {
    let storage = Layer::storage(disk);
    match disk.image() {
        Image::Vhdx(v) if v.metadata().leave_block_allocated => Ok(None),
        Image::Vhdx(v) => layout::vhdx_layout(v, storage).map(Some),
        Image::Vhd(v) => layout::vhd_layout(v, storage),
        Image::Raw(_) => Ok(None),
    }
}

/// What compacting `disk` with `how` (a [`CompactMode`] or [`CompactOptions`]) would do,
/// changing nothing (no lock is needed: it works on a read-only [`Disk`] too).
pub fn compact_dry_run(disk: &Disk, how: impl Into<CompactOptions>) -> Result<CompactStats> {
    let how = how.into();
    let mode = how.mode;
    let t0 = Instant::now();
    let storage = Layer::storage(disk);
    let file_len = storage
        .len()
        .map_err(|e| Error::io(e, "reading the file length"))?;
    let mut stats = base_stats(disk, mode, true, file_len)?;
    match analyze(disk, how, file_len, &|_| {})? {
        None => stats.note = Some(FIXED_NOTE.into()),
        Some(a) => fill(&mut stats, &a, storage)?,
    }
    stats.seconds = t0.elapsed().as_secs_f64();
    Ok(stats)
}

/// The counts of an analysis.
fn fill(stats: &mut CompactStats, a: &Analysis, storage: &dyn Storage) -> Result<()> {
    stats.zero_blocks_released = a.releases.len() as u64 - a.free_space_released;
    stats.free_space_blocks_released = a.free_space_released;
    stats.free_space_pass = a.free_space_pass;
    stats.volumes = a.volumes.clone();
    if stats.mode == CompactMode::Retrim {
        stats.bytes_reclaimed = host_data_in(storage, &a.free)?;
        return Ok(());
    }
    stats.blocks_moved = a.moves.len() as u64;
    stats.bytes_moved = a.moves.iter().map(|&(i, _)| a.lay.units[i].length).sum();
    stats.file_len_after = a.end;
    stats.bytes_reclaimed = stats.file_len_before - a.end;
    Ok(())
}

/// Bytes of `ranges` the host file really stores (not holes).
fn host_data_in(storage: &dyn Storage, ranges: &[(u64, u64)]) -> Result<u64> {
    let mut total = 0;
    for &(o, l) in ranges {
        let end = o + l;
        let mut pos = o;
        while pos < end {
            let next = storage
                .next_data(pos)
                .map_err(|e| Error::read_failed("image file", pos, e))?;
            let Some((s, e)) = next.filter(|&(s, _)| s < end) else {
                break;
            };
            let e = e.min(end);
            total += e - s.max(pos);
            pos = e;
        }
    }
    Ok(total)
}

impl WritableDisk {
    /// Compacts the disk in place (see the module documentation) with `how`: a
    /// [`CompactMode`] (full mode reads the guest's free space too) or [`CompactOptions`].
    /// `progress(done, total)` is called as the work advances. Fixed disks come back
    /// unchanged with a note.
    pub fn compact(
        &self,
        how: impl Into<CompactOptions>,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<CompactStats> {
        self.compact_inner(how.into(), progress)
            .map_err(|e| e.in_file(self.path()))
    }

    /// What [`WritableDisk::compact`] would do, changing nothing (see [`compact_dry_run`]).
    pub fn compact_dry_run(&self, how: impl Into<CompactOptions>) -> Result<CompactStats> {
        compact_dry_run(&self.disk, how).map_err(|e| e.in_file(self.path()))
    }

    fn compact_inner(
        &self,
        how: CompactOptions,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<CompactStats> {
        let mode = how.mode;
        let t0 = Instant::now();
        self.flush()?;
        let file_len = self
            .file
            .len()
            .map_err(|e| Error::io(e, "reading the file length"))?;
        let mut stats = base_stats(&self.disk, mode, false, file_len)?;
        // Progress, in bytes: the zero scan of the payload blocks (full mode), then the
        // moves, counted as if every block moved (the rest is skipped at the end).
        let (scan_total, all_units) = layout_of(&self.disk)?.map_or((0, 0), |l| {
            let sum = |f: fn(&layout::Unit) -> bool| {
                l.units
                    .iter()
                    .filter(|u| f(u))
                    .map(|u| u.length)
                    .sum::<u64>()
            };
            (sum(|u| u.payload), sum(|_| true))
        });
        let scan_total = if mode == CompactMode::Full {
            scan_total
        } else {
            0
        };
        let total = (scan_total + all_units).max(1);
        let report = |done: u64| {
            if let Some(p) = progress {
                p(done.min(total), total);
            }
        };
        let Some(a) = analyze(&self.disk, how, file_len, &report)? else {
            stats.note = Some(FIXED_NOTE.into());
            stats.seconds = t0.elapsed().as_secs_f64();
            return Ok(stats);
        };
        fill(&mut stats, &a, &*self.journal)?;
        let mut st = self.state();
        if st.closed {
            return Err(Error::invalid_argument("the disk is closed"));
        }
        if mode == CompactMode::Retrim {
            for &(o, l) in &a.free {
                self.file
                    .discard(o, l)
                    .map_err(|e| Error::io(e, "punching a hole").offset(o))?;
            }
            self.file
                .sync()
                .map_err(|e| Error::io(e, "flushing the image file"))?;
            stats.host_bytes_after = host_bytes(self.path());
            if let (Some(b), Some(a)) = (stats.host_bytes_before, stats.host_bytes_after) {
                stats.bytes_reclaimed = b.saturating_sub(a);
            }
            report(total);
            stats.seconds = t0.elapsed().as_secs_f64();
            return Ok(stats);
        }
        let t = self.target();
        if !a.releases.is_empty() {
            match &mut st.engine {
                Engine::Vhdx(e) => {
                    e.begin(&t, false)?;
                    for &(index, entry) in &a.releases {
                        e.stage_index(&t, index, entry)?;
                    }
                    e.commit(&t)?;
                }
                Engine::Vhd(e) => {
                    for &(index, _) in &a.releases {
                        e.release(&t, index)?;
                    }
                    e.commit(&t)?;
                }
                Engine::Raw => {}
            }
        }
        let mut done = scan_total;
        for &(i, to) in &a.moves {
            let u = a.lay.units[i];
            self.move_unit(&mut st.engine, u, to)?;
            done += u.length;
            report(done);
        }
        let end = a.end;
        match &mut st.engine {
            Engine::Vhdx(e) => {
                e.commit(&t)?;
                self.file
                    .sync()
                    .map_err(|e| Error::io(e, "flushing the image file"))?;
                // A clean log before the file shrinks: a replay could extend it again.
                e.finish(&t)?;
                if end < file_len {
                    self.truncate(end)?;
                }
            }
            Engine::Vhd(e) => {
                e.commit(&t)?;
                if end < file_len {
                    // The footer goes to its new place first; the file is cut after it.
                    e.move_footer(&t, end - crate::format::vhd::footer::SIZE as u64)?;
                    self.truncate(end)?;
                }
            }
            Engine::Raw => {}
        }
        report(total);
        stats.host_bytes_after = host_bytes(self.path());
        stats.seconds = t0.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// Copies unit `u` to the free space at `to` and stages its BAT entry at the new place
    /// (keeping the block's state), committing when the stage is full. The space `u` leaves
    /// is still referenced by the durable BAT until the next commit.
    pub(super) fn move_unit(&self, engine: &mut Engine, u: Unit, to: u64) -> Result<()> {
        let t = self.target();
        self.file
            .copy_within(u.offset, to, u.length)
            .map_err(|e| Error::io(e, "copying a block").offset(u.offset))?;
        match engine {
            Engine::Vhdx(e) => {
                e.begin(&t, false)?;
                let old = match self.disk.image() {
                    Image::Vhdx(v) => v.bat().entry(&*self.journal, u.index)?,
                    _ => unreachable!("a VHDX engine on a VHDX image"),
                };
                e.stage_index(&t, u.index, fb::make_entry(fb::entry_state(old), to))?;
                if t.journal.staged() >= e.max_pages() {
                    e.commit(&t)?;
                }
            }
            Engine::Vhd(e) => {
                e.point(&t, u.index, to)?;
                if t.journal.staged() >= super::vhd::MAX_STAGED_PAGES {
                    e.commit(&t)?;
                }
            }
            Engine::Raw => {}
        }
        Ok(())
    }

    /// Cuts the file to `len` bytes and flushes (after every change that could extend it
    /// again is durable; for a VHDX, with a clean log).
    pub(super) fn truncate(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io(e, "truncating the compacted file").offset(len))?;
        self.file
            .sync()
            .map_err(|e| Error::io(e, "flushing the image file"))?;
        match self.disk.image() {
            Image::Vhdx(v) => v.set_file_len(len),
            Image::Vhd(v) => v.set_file_len(len),
            Image::Raw(_) => {}
        }
        Ok(())
    }
}

/// A payload unit [`zero_blocks`] found releasable.
struct Release {
    /// Index in the layout's units.
    unit: usize,
    /// The new BAT entry (VHD: unused, the block becomes unallocated).
    entry: u64,
    /// Released for holding free space: the index of the volume (in the [`FreeMap`]) of its
    /// first free byte; `None` for a block that reads as zeros as a whole.
    volume: Option<usize>,
    /// The block's bytes on the virtual disk.
    bytes: u64,
}

/// The payload units of `lay` that can be released, with their new BAT entries.
///
/// Blocks without free space (or without `free`): those that hold only zeros. Dynamic
/// disks release every zero block; differencing disks release one where the parent also
/// reads zeros, and otherwise (VHDX, fully present blocks) give it the ZERO state.
///
/// Blocks with free space of an understood volume: the bytes that are not free (if any)
/// must read as zeros as the guest sees them; then a dynamic disk's block becomes
/// unallocated and a differencing VHDX's block takes the ZERO state (like a trim: what the
/// child dropped never shows the parent's bytes). A differencing VHD has no ZERO state: its
/// block becomes unallocated when the parent reads zeros wherever the block is not free (so
/// only free space may show the parent's bytes). A block that fails this is still tried as
/// a zero block.
///
/// Two threads scan, a block stops being read at its first non-zero piece, and this thread
/// reports the bytes scanned.
fn zero_blocks(
    disk: &Disk,
    lay: &Layout,
    free: Option<&FreeMap>,
    progress: &dyn Fn(u64),
) -> Result<Vec<Release>> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let storage = Layer::storage(disk);
    let diff = disk.disk_type() == DiskType::Differencing;
    let (bs, chunk_ratio, is_vhdx) = match disk.image() {
        Image::Vhdx(v) => (u64::from(v.metadata().block_size), v.chunk_ratio(), true),
        Image::Vhd(v) => (v.sparse().map_or(0, |s| u64::from(s.block_size)), 1, false),
        Image::Raw(_) => return Ok(Vec::new()),
    };
    let units: Vec<usize> = (0..lay.units.len())
        .filter(|&i| lay.units[i].payload)
        .collect();
    let scanned = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let scan = |part: usize| -> Result<Vec<Release>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; (4 << 20).min(bs as usize)];
        for &i in units.iter().skip(part).step_by(2) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let u = lay.units[i];
            scanned.fetch_add(u.length, Ordering::Relaxed);
            // The payload of a VHD block follows its bitmap.
            let data = u.offset + (u.length - bs);
            let block = if is_vhdx {
                u.index - u.index / (chunk_ratio + 1)
            } else {
                u.index
            };
            let vstart = block * bs;
            let vlen = bs.min(disk.size().saturating_sub(vstart));
            let cover = free.map(|m| m.coverage(vstart, vlen));
            if let Some(c) = cover.filter(|c| c.free > 0) {
                if let Some(entry) = free_release(disk, &c, diff, is_vhdx, &mut buf)? {
                    out.push(Release {
                        unit: i,
                        entry,
                        volume: c.volume,
                        bytes: vlen,
                    });
                    continue;
                }
            }
            let stored_zero = all_zero(bs, &mut buf, |b, o| {
                storage
                    .read_at_zero_tail(b, data + o)
                    .map_err(|e| Error::read_failed("block payload", data + o, e))
            })?;
            if !stored_zero {
                continue;
            }
            let parent_zero = match disk.parent().filter(|_| diff) {
                None => true,
                Some(p) => all_zero(vlen, &mut buf, |b, o| p.read_at(b, vstart + o))?,
            };
            let entry = if parent_zero {
                fb::make_entry(fb::PAYLOAD_NOT_PRESENT, 0)
            } else if is_vhdx
                && fb::entry_state(match disk.image() {
                    Image::Vhdx(v) => v.bat().entry(storage, u.index)?,
                    _ => 0,
                }) == fb::PAYLOAD_FULLY_PRESENT
            {
                fb::make_entry(fb::PAYLOAD_ZERO, 0)
            } else {
                continue;
            };
            out.push(Release {
                unit: i,
                entry,
                volume: None,
                bytes: vlen,
            });
        }
        Ok(out)
    };
    let (a, b) = std::thread::scope(|s| {
        let run = |part| {
            let r = scan(part);
            if r.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            r
        };
        let h0 = s.spawn(move || run(0));
        let h1 = s.spawn(move || run(1));
        while !(h0.is_finished() && h1.is_finished()) {
            progress(scanned.load(Ordering::Relaxed));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let j = |h: std::thread::ScopedJoinHandle<'_, Result<Vec<Release>>>| {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        };
        (j(h0), j(h1))
    });
    progress(scanned.load(Ordering::Relaxed));
    let mut all = a?;
    all.extend(b?);
    Ok(all)
}

/// The new BAT entry of a block with free space (see [`zero_blocks`]), or `None` when it
/// cannot go for that reason. `c` is the block's coverage.
fn free_release(
    disk: &Disk,
    c: &crate::guest::freespace::Coverage,
    diff: bool,
    is_vhdx: bool,
    buf: &mut [u8],
) -> Result<Option<u64>> {
    for &(o, l) in &c.used {
        if !all_zero(l, buf, |b, at| disk.read_at(b, o + at))? {
            return Ok(None);
        }
    }
    let not_present = Some(fb::make_entry(fb::PAYLOAD_NOT_PRESENT, 0));
    let parent = match disk.parent().filter(|_| diff) {
        None => return Ok(not_present),
        // The ZERO state makes all of the block read zeros, which its used bytes already do.
        Some(_) if is_vhdx => return Ok(Some(fb::make_entry(fb::PAYLOAD_ZERO, 0))),
        Some(p) => p,
    };
    for &(o, l) in &c.used {
        if !all_zero(l, buf, |b, at| parent.read_at(b, o + at))? {
            return Ok(None);
        }
    }
    Ok(not_present)
}

/// Whether the `len` bytes `read(buf, offset_within)` gives are all zero, read in pieces of
/// `buf`'s size, stopping at the first non-zero piece.
fn all_zero(len: u64, buf: &mut [u8], read: impl Fn(&mut [u8], u64) -> Result<()>) -> Result<bool> {
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        read(&mut buf[..n], pos)?;
        if !is_zero(&buf[..n]) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// Bytes the file at `path` occupies on the host (allocated blocks), where that is known.
pub fn host_bytes(path: &std::path::Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| m.blocks() * 512)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Writes a compacted copy of the disk at `input` to `out`, leaving `input` as it was: the
/// file is copied under a temporary name beside `out` (while `input` is locked against
/// writers), compacted there in place, and moved to `out` when complete. An existing `out`
/// is kept unless `overwrite`. A differencing copy finds its parent through its locators
/// from `out`'s folder, or through `opts.parents`.
pub fn compact_copy(
    input: &std::path::Path,
    out: &std::path::Path,
    how: impl Into<CompactOptions>,
    overwrite: bool,
    opts: &crate::OpenOptions,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<CompactStats> {
    use crate::ops::convert::{place, temp_path};
    let how = how.into();
    let same = |a: &std::path::Path, b: &std::path::Path| match (a.canonicalize(), b.canonicalize())
    {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    if same(input, out) {
        return Err(Error::invalid_argument(
            "the output is the input itself; compact in place without -o instead",
        )
        .in_file(out));
    }
    if !overwrite && out.symlink_metadata().is_ok() {
        return Err(Error::invalid_argument(
            "the output file already exists (overwriting it was not asked for)",
        )
        .in_file(out));
    }
    let src = std::fs::File::open(input)
        .map_err(|e| Error::io(e, "cannot open the file").in_file(input))?;
    match crate::storage::lock::lock_unchanging(&src) {
        Ok(()) => {}
        Err(crate::storage::lock::LockError::InUse(why)) => {
            return Err(Error::new(
                crate::ErrorKind::InUse,
                format!("the image is in use: {why}"),
            )
            .in_file(input))
        }
        Err(crate::storage::lock::LockError::Io(e)) => {
            return Err(Error::io(e, "cannot lock the file").in_file(input))
        }
    }
    let tmp = temp_path(out)?;
    let result = (|| {
        // A copy that keeps the holes of a sparse image: it never takes more host space.
        let len = src
            .metadata()
            .map_err(|e| Error::io(e, "reading the file length").in_file(input))?
            .len();
        let dst = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(e, "cannot create the output file").in_file(&tmp))?;
        dst.set_len(len)
            .and_then(|()| crate::storage::sparse::copy_keeping_holes(&src, 0, &dst, 0, len))
            .map_err(|e| Error::io(e, "copying the image").in_file(&tmp))?;
        drop(dst);
        let d = WritableDisk::open(&tmp, opts)?;
        let mut stats = d.compact(how, progress)?;
        d.close()?;
        stats.file_len_before = src
            .metadata()
            .map_err(|e| Error::io(e, "reading the file length").in_file(input))?
            .len();
        stats.bytes_reclaimed = stats.file_len_before.saturating_sub(stats.file_len_after);
        stats.host_bytes_before = host_bytes(input);
        Ok(stats)
    })();
    let result = result.and_then(|s| place(&tmp, out, overwrite).map(|()| s));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
