//! Compaction in place ([`WritableDisk::compact`]): give back the space of blocks that hold
//! no live data.
//!
//! - `quick`: move blocks from the end of the file into the holes (see
//!   [`super::layout::plan`]), then truncate.
//! - `full`: first release every allocated block that reads as zeros — dynamic disks:
//!   unallocated; differencing disks: unallocated where the parent also reads zeros there,
//!   else (VHDX) the ZERO state — then do what `quick` does.
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

use super::layout::{self, Layout};
use super::{Engine, WritableDisk};
use crate::bytes::is_zero;
use crate::disk::VirtualDisk;
use crate::error::{Error, Result};
use crate::format::vhdx::bat as fb;
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
    /// Seconds the compaction took.
    pub seconds: f64,
    /// Differencing disks: bytes of the virtual disk read from parent files, which
    /// compacting this disk cannot give back (only a merge can).
    pub parent_data_bytes: Option<u64>,
    /// Why nothing could be done (fixed disks), or what a differencing disk's parents hold.
    pub note: Option<String>,
}

/// A zero block found by the full scan, and the entry it gets.
#[derive(Debug, Clone, Copy)]
struct Release {
    unit: usize,
    /// VHDX: the new BAT entry; VHD: unused (the block becomes unallocated).
    entry: u64,
}

impl WritableDisk {
    /// Compacts the disk in place (see the module documentation). `progress(done, total)`
    /// is called as the work advances. Fixed disks come back unchanged with a note.
    pub fn compact(
        &self,
        mode: CompactMode,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<CompactStats> {
        self.compact_inner(mode, false, progress)
            .map_err(|e| e.in_file(self.path()))
    }

    /// What [`WritableDisk::compact`] would do, changing nothing.
    pub fn compact_dry_run(&self, mode: CompactMode) -> Result<CompactStats> {
        self.compact_inner(mode, true, None)
            .map_err(|e| e.in_file(self.path()))
    }

    fn compact_inner(
        &self,
        mode: CompactMode,
        dry_run: bool,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<CompactStats> {
        let t0 = Instant::now();
        if !dry_run {
            self.flush()?;
        }
        let file_len = self
            .file
            .len()
            .map_err(|e| Error::io(e, "reading the file length"))?;
        let mut stats = CompactStats {
            mode,
            dry_run,
            file_len_before: file_len,
            file_len_after: file_len,
            host_bytes_before: host_bytes(self.file.file()),
            host_bytes_after: None,
            bytes_reclaimed: 0,
            blocks_moved: 0,
            bytes_moved: 0,
            zero_blocks_released: 0,
            seconds: 0.0,
            parent_data_bytes: None,
            note: None,
        };
        if self.disk.disk_type() == DiskType::Differencing {
            let paths = self
                .disk
                .chain()
                .iter()
                .map(|d| {
                    d.path()
                        .map_or_else(String::new, |p| p.display().to_string())
                })
                .collect();
            let u = crate::ops::info::chain_usage(self, paths)?;
            stats.parent_data_bytes = Some(u.parent_data_bytes);
            stats.note = Some(u.note);
        }
        let Some(mut lay) = self.layout()? else {
            stats.note = Some(
                "a fixed disk has no unused blocks to give back; convert it to a dynamic disk \
                 (`vhdx convert IN OUT --type dynamic`) to make it smaller"
                    .into(),
            );
            stats.seconds = t0.elapsed().as_secs_f64();
            return Ok(stats);
        };
        lay.validate("block layout")?;
        let mut st = self.state();
        if st.closed {
            return Err(Error::invalid_argument("the disk is closed"));
        }
        if mode == CompactMode::Retrim {
            // Free: the gaps between blocks and structures, and what lies between the last
            // of them and the end of the file (minus the VHD footer).
            let used_end = lay.needed_len() - lay.tail;
            let mut gaps: Vec<_> = lay.gaps();
            let file_end = file_len.saturating_sub(lay.tail);
            if file_end > used_end {
                gaps.push((used_end, file_end - used_end));
            }
            stats.bytes_reclaimed = gaps.iter().map(|g| g.1).sum();
            if !dry_run {
                for (o, l) in gaps {
                    self.file
                        .discard(o, l)
                        .map_err(|e| Error::io(e, "punching a hole").offset(o))?;
                }
                self.file
                    .sync()
                    .map_err(|e| Error::io(e, "flushing the image file"))?;
                stats.host_bytes_after = host_bytes(self.file.file());
            }
            stats.seconds = t0.elapsed().as_secs_f64();
            return Ok(stats);
        }
        let payload_bytes: u64 = lay.units.iter().map(|u| u.length).sum();
        let total = if mode == CompactMode::Full {
            2 * payload_bytes
        } else {
            payload_bytes
        };
        let report = |done: u64| {
            if let Some(p) = progress {
                p(done.min(total), total);
            }
        };
        if mode == CompactMode::Full {
            let releases = self.zero_blocks(&lay)?;
            report(payload_bytes);
            stats.zero_blocks_released = releases.len() as u64;
            if !dry_run && !releases.is_empty() {
                let t = self.target();
                match &mut st.engine {
                    Engine::Vhdx(e) => {
                        e.begin(&t, false)?;
                        for r in &releases {
                            e.stage_index(&t, lay.units[r.unit].index, r.entry)?;
                        }
                        e.commit(&t)?;
                    }
                    Engine::Vhd(e) => {
                        for r in &releases {
                            e.release(&t, lay.units[r.unit].index)?;
                        }
                        e.commit(&t)?;
                    }
                    Engine::Raw => {}
                }
            }
            let mut gone: Vec<usize> = releases.iter().map(|r| r.unit).collect();
            gone.sort_unstable();
            let mut k = 0;
            let mut i = 0;
            lay.units.retain(|_| {
                let keep = gone.get(k) != Some(&i);
                if !keep {
                    k += 1;
                }
                i += 1;
                keep
            });
        }
        let (moves, end) = layout::plan(&lay);
        stats.blocks_moved = moves.len() as u64;
        stats.bytes_moved = moves.iter().map(|&(i, _)| lay.units[i].length).sum();
        stats.file_len_after = end.min(file_len);
        stats.bytes_reclaimed = file_len - stats.file_len_after;
        if dry_run {
            stats.seconds = t0.elapsed().as_secs_f64();
            return Ok(stats);
        }
        let t = self.target();
        let mut done = total - payload_bytes;
        for &(i, to) in &moves {
            let u = lay.units[i];
            self.file
                .copy_within(u.offset, to, u.length)
                .map_err(|e| Error::io(e, "copying a block").offset(u.offset))?;
            match &mut st.engine {
                Engine::Vhdx(e) => {
                    e.begin(&t, false)?;
                    let old = self.vhdx_entry(u.index)?;
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
            done += u.length;
            report(done);
        }
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
        stats.host_bytes_after = host_bytes(self.file.file());
        stats.seconds = t0.elapsed().as_secs_f64();
        Ok(stats)
    }

    fn truncate(&self, len: u64) -> Result<()> {
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

    fn vhdx_entry(&self, index: u64) -> Result<u64> {
        match self.disk.image() {
            Image::Vhdx(v) => v.bat().entry(&*self.journal, index),
            _ => Err(Error::invalid_argument("not a VHDX")),
        }
    }

    /// The layout of the image, `None` when there is nothing to compact (fixed disks).
    fn layout(&self) -> Result<Option<Layout>> {
        match self.disk.image() {
            Image::Vhdx(v) if v.metadata().leave_block_allocated => Ok(None),
            Image::Vhdx(v) => layout::vhdx_layout(v, &*self.journal).map(Some),
            Image::Vhd(v) => layout::vhd_layout(v, &*self.journal),
            Image::Raw(_) => Ok(None),
        }
    }

    /// The payload units that hold only zeros and can be released, with their new entries.
    /// Blocks are scanned by two threads; a block stops being read at its first non-zero
    /// piece.
    fn zero_blocks(&self, lay: &Layout) -> Result<Vec<Release>> {
        let diff = self.disk.disk_type() == DiskType::Differencing;
        let bs = self.block_bytes();
        let is_vhdx = matches!(self.disk.image(), Image::Vhdx(_));
        let units: Vec<usize> = (0..lay.units.len())
            .filter(|&i| lay.units[i].payload)
            .collect();
        let scan = |part: usize| -> Result<Vec<Release>> {
            let mut out = Vec::new();
            let mut buf = vec![0u8; (4 << 20).min(bs as usize)];
            for &i in units.iter().skip(part).step_by(2) {
                let u = lay.units[i];
                // The payload of a VHD block follows its bitmap.
                let data = u.offset + (u.length - bs);
                let block = if is_vhdx {
                    u.index - u.index / (self.chunk_ratio() + 1)
                } else {
                    u.index
                };
                if !self
                    .range_is_zero(data, bs, &mut buf, |b, o| self.file.read_at_zero_tail(b, o))?
                {
                    continue;
                }
                let vstart = block * bs;
                let vlen = bs.min(self.disk.size() - vstart);
                let parent_zero = !diff || self.parent_reads_zero(vstart, vlen, &mut buf)?;
                let entry = if parent_zero {
                    fb::make_entry(fb::PAYLOAD_NOT_PRESENT, 0)
                } else if is_vhdx
                    && self.vhdx_entry(u.index).map(fb::entry_state)? == fb::PAYLOAD_FULLY_PRESENT
                {
                    fb::make_entry(fb::PAYLOAD_ZERO, 0)
                } else {
                    continue;
                };
                out.push(Release { unit: i, entry });
            }
            Ok(out)
        };
        let (a, b) = std::thread::scope(|s| {
            let h = s.spawn(|| scan(1));
            let a = scan(0);
            (a, h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        });
        let mut all = a?;
        all.extend(b?);
        Ok(all)
    }

    fn range_is_zero(
        &self,
        at: u64,
        len: u64,
        buf: &mut [u8],
        read: impl Fn(&mut [u8], u64) -> std::io::Result<()>,
    ) -> Result<bool> {
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(buf.len() as u64) as usize;
            read(&mut buf[..n], at + pos)
                .map_err(|e| Error::read_failed("block payload", at + pos, e))?;
            if !is_zero(&buf[..n]) {
                return Ok(false);
            }
            pos += n as u64;
        }
        Ok(true)
    }

    fn parent_reads_zero(&self, at: u64, len: u64, buf: &mut [u8]) -> Result<bool> {
        let Some(p) = self.disk.parent() else {
            return Ok(true);
        };
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(buf.len() as u64) as usize;
            p.read_at(&mut buf[..n], at + pos)?;
            if !is_zero(&buf[..n]) {
                return Ok(false);
            }
            pos += n as u64;
        }
        Ok(true)
    }

    fn block_bytes(&self) -> u64 {
        match self.disk.image() {
            Image::Vhdx(v) => u64::from(v.metadata().block_size),
            Image::Vhd(v) => v.sparse().map_or(0, |s| u64::from(s.block_size)),
            Image::Raw(_) => 0,
        }
    }

    fn chunk_ratio(&self) -> u64 {
        match self.disk.image() {
            Image::Vhdx(v) => v.chunk_ratio(),
            _ => 1,
        }
    }
}

/// Bytes `file` occupies on the host.
fn host_bytes(file: &std::fs::File) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        file.metadata().ok().map(|m| m.blocks() * 512)
    }
    #[cfg(not(unix))]
    {
        let _ = file;
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
    mode: CompactMode,
    overwrite: bool,
    opts: &crate::OpenOptions,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<CompactStats> {
    use crate::ops::convert::{place, temp_path};
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
        std::fs::copy(input, &tmp).map_err(|e| Error::io(e, "copying the image").in_file(&tmp))?;
        let d = WritableDisk::open(&tmp, opts)?;
        let mut stats = d.compact(mode, progress)?;
        d.close()?;
        stats.file_len_before = src
            .metadata()
            .map_err(|e| Error::io(e, "reading the file length").in_file(input))?
            .len();
        stats.bytes_reclaimed = stats.file_len_before.saturating_sub(stats.file_len_after);
        stats.host_bytes_before = host_bytes(&src);
        Ok(stats)
    })();
    let result = result.and_then(|s| place(&tmp, out, overwrite).map(|()| s));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
