//! Read-write disks: [`WritableDisk`] (Rust `Disk::open_rw`, Python `vhdx.open(path, "r+")`).
//!
//! # What opening for writing does
//! 1. The file is opened read-write and locked for writing
//!    ([`FileStorage::open_rw_exclusive`]): a second writer — another `vhdx` or a QEMU that
//!    has the image open — is refused with [`ErrorKind::InUse`](crate::ErrorKind::InUse).
//! 2. A VHDX with a dirty log has it replayed onto the file first.
//! 3. The disk is opened with its parents (read-only) over a [`Journal`] on the file. The
//!    parents are locked the way QEMU locks backing files: while the child is open nobody
//!    may write them (a parent that changes under its child corrupts what the child reads).
//!
//! # How writes are made safe
//! Payload bytes are written straight to the file: into blocks that already exist, or into
//! new blocks appended at the end of the file (VHDX: 1 MiB aligned; the unwritten rest of a
//! new block reads as zeros because the file is extended over it). The metadata that makes
//! new data visible — BAT entries and sector bitmaps — is *staged* in the journal, so the
//! file keeps its old, consistent metadata until a commit, which [`WritableDisk::flush`],
//! [`WritableDisk::close`] and a full journal trigger:
//! - VHDX ([`vhdx`]): flush the payload, write one log entry holding the staged pages,
//!   flush, then apply the pages to their places. A crash at any moment leaves either the
//!   old metadata or a log that every reader (QEMU, Hyper-V, us) replays to the new one.
//! - VHD ([`vhd`]): flush the payload (and the new footer), write the staged bitmap and BAT
//!   sectors, flush. The format has no log; see [`vhd`] for the window that remains.
//!
//! Before the first change of a session, a VHDX gets a new FileWriteGuid and DataWriteGuid
//! through the two-header update protocol (every write is a data change; differencing
//! children of this disk no longer match it, as with Hyper-V).
//!
//! Writes acknowledged before a [`WritableDisk::flush`] returns are durable; later ones may
//! be lost on a crash, as with a disk's write cache, but never corrupt the image.
//!
//! # Zero writes
//! A write whose bytes are all zero into a block that already reads as zeros in this file
//! (an unallocated block of a dynamic disk, a ZERO block) changes nothing and allocates
//! nothing. A whole block of zeros over a block that does not hold them for sure (a
//! not-present block of a differencing VHDX, whose parent shows through; UNDEFINED or
//! UNMAPPED, which may read anything) sets the block's ZERO state instead of allocating.

pub mod compact;
pub mod layout;
mod payload;
pub mod relink;
pub mod resize;
pub mod vhd;
pub mod vhdx;

pub use compact::{CompactMode, CompactOptions, CompactStats};
pub use relink::{set_parent, SetParentStats};
pub use resize::{resize, resize_to_minimum, ResizeStats};

use crate::chain::{Disk, OpenOptions};
use crate::disk::{check_range, Extent, VirtualDisk};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::storage::{FileStorage, Journal, StorageMut};
pub(crate) use payload::Payload;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The format-specific half of a writable disk. One lives in each open disk, so the size
/// of the largest variant does not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Engine {
    Vhdx(vhdx::VhdxEngine),
    Vhd(vhd::VhdEngine),
    Raw,
}

/// What a format engine works on: the opened disk, the journal over its file, the file.
pub(crate) struct Target<'a> {
    /// The disk as opened over the journal.
    pub disk: &'a Disk,
    /// The staged metadata.
    pub journal: &'a Journal,
    /// The file itself (payload writes, commits).
    pub file: &'a dyn StorageMut,
}

/// A disk opened for reading and writing. Reads see every earlier write. Dropping it
/// closes it as [`WritableDisk::close`] does, ignoring errors: call `close` to see them.
#[derive(Debug)]
pub struct WritableDisk {
    path: PathBuf,
    file: Arc<FileStorage>,
    journal: Arc<Journal>,
    disk: Disk,
    /// The parents' files, locked so that nobody writes them while this child is open.
    parent_locks: Vec<std::fs::File>,
    engine: Mutex<State>,
}

#[derive(Debug)]
struct State {
    engine: Engine,
    closed: bool,
}

impl Disk {
    /// Opens the disk at `path` for reading and writing (see [`WritableDisk`]). Parents of a
    /// differencing disk are opened read-only with `opts`.
    pub fn open_rw(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<WritableDisk> {
        WritableDisk::open(path.as_ref(), opts)
    }
}

impl WritableDisk {
    /// Opens `path` for writing: locks it, replays a dirty VHDX log, opens it with its
    /// parents over a journal.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<WritableDisk> {
        let file = Arc::new(FileStorage::open_rw_exclusive(path)?);
        let format = match opts.format {
            Some(f) => Some(f),
            None => crate::chain::detect_format(&*file).map_err(|e| e.in_file(path))?,
        };
        let page = match format {
            Some(crate::Format::Vhdx) => {
                crate::vhdx::log::replay_onto_file(&*file).map_err(|e| e.in_file(path))?;
                4096
            }
            _ => 512,
        };
        let journal = Arc::new(Journal::new(file.clone(), page));
        let disk = Disk::open_over(path, journal.clone(), opts)?;
        let parent_locks = lock_parents(&disk)?;
        let engine = match disk.image() {
            Image::Vhdx(v) => Engine::Vhdx(vhdx::VhdxEngine::new(v).map_err(|e| e.in_file(path))?),
            Image::Vhd(v) => Engine::Vhd(vhd::VhdEngine::new(v).map_err(|e| e.in_file(path))?),
            Image::Raw(_) => Engine::Raw,
        };
        Ok(WritableDisk {
            path: path.to_path_buf(),
            file,
            journal,
            disk,
            parent_locks,
            engine: Mutex::new(State {
                engine,
                closed: false,
            }),
        })
    }

    /// The disk as currently seen (with its parents).
    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    /// The path of the image file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn target(&self) -> Target<'_> {
        Target {
            disk: &self.disk,
            journal: &self.journal,
            file: &*self.file,
        }
    }

    /// Writes `buf` at virtual `offset`. Ranges that do not cover whole logical sectors are
    /// completed by reading the sectors at their edges first.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.with_engine(offset, buf.len() as u64, |engine| {
            self.write_inner(engine, buf, offset)
        })
    }

    /// Writes the `len` bytes at `src` of the host file `from` at virtual `offset`, as
    /// [`WritableDisk::write_at`] would write them after reading them, but copied in the
    /// kernel where the host can (`copy_file_range`): bulk copies (conversions) never pass
    /// their data through user space. The range must lie inside `from`. The bytes are taken
    /// for data without being looked at, so blocks they fall in are allocated even if the
    /// bytes are zeros: the caller sends ranges known to hold data. A range that does not
    /// cover whole logical sectors is read and written through memory.
    pub(crate) fn write_from(
        &self,
        from: &std::fs::File,
        src: u64,
        len: u64,
        offset: u64,
    ) -> Result<()> {
        let lss = u64::from(self.disk.logical_sector_size());
        if offset % lss != 0 || len % lss != 0 {
            let mut buf = vec![0u8; len as usize];
            crate::storage::pread_exact(from, &mut buf, src)
                .map_err(|e| Error::io(e, "reading the source file").offset(src))?;
            return self.write_at(&buf, offset);
        }
        self.with_engine(offset, len, |engine| {
            let p = Payload::File {
                file: from,
                offset: src,
                len,
            };
            self.write_aligned(engine, p, offset)
        })
    }

    /// Makes `[offset, offset + length)` read as zeros and gives its space back where the
    /// format allows (UNMAP/TRIM). Whole blocks change state — VHDX: NOT_PRESENT in a
    /// dynamic disk, ZERO in a differencing disk (so the parent's data never shows through);
    /// VHD: unallocated in a dynamic disk — and their space in the file is punched out; the
    /// rest is zeroed, by punching holes in the host file where it can, so it costs no space.
    /// Fixed disks are zeroed and keep their space. Parents are never changed. Sector edges
    /// of an unaligned range are zeroed by read-modify-write. Trimmed ranges read as zeros
    /// at once, on every disk type; like writes, the change is durable after
    /// [`WritableDisk::flush`].
    ///
    /// ```
    /// # use vhdx_core::create::{create, CreateOptions};
    /// use vhdx_core::{Disk, VirtualDisk};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("disk.vhdx");
    /// # create(&path, &CreateOptions::new().size(64 << 20).block_size(1 << 20))?;
    /// let disk = Disk::open_rw(&path, &Default::default())?;
    /// disk.write_at(&[1; 1 << 20], 0)?;
    /// disk.trim(0, 1 << 20)?; // the whole block is freed
    /// let mut buf = [9u8; 512];
    /// disk.read_at(&mut buf, 0)?;
    /// assert_eq!(buf, [0; 512]);
    /// disk.close()?;
    /// # Ok::<(), vhdx_core::Error>(())
    /// ```
    pub fn trim(&self, offset: u64, length: u64) -> Result<()> {
        self.with_engine(offset, length, |engine| {
            let lss = u64::from(self.disk.logical_sector_size());
            let end = offset + length;
            let a = offset.div_ceil(lss) * lss;
            let b = end / lss * lss;
            if a >= b {
                return self.write_inner(engine, &vec![0u8; length as usize], offset);
            }
            self.write_inner(engine, &vec![0u8; (a - offset) as usize], offset)?;
            let t = self.target();
            match engine {
                Engine::Vhdx(e) => e.trim(&t, a, b - a)?,
                Engine::Vhd(e) => e.trim(&t, a, b - a)?,
                Engine::Raw => t
                    .file
                    .discard(a, b - a)
                    .map_err(|e| Error::io(e, "zeroing a trimmed range").offset(a))?,
            }
            self.write_inner(engine, &vec![0u8; (end - b) as usize], b)
        })
    }

    /// Runs `f` on the engine for a change of `[offset, offset + length)`: checks the range
    /// and that the disk is open, commits when the stage is full, names the file in errors.
    fn with_engine(
        &self,
        offset: u64,
        length: u64,
        f: impl FnOnce(&mut Engine) -> Result<()>,
    ) -> Result<()> {
        check_range(self.disk.size(), offset, length).map_err(|e| e.in_file(&self.path))?;
        if length == 0 {
            return Ok(());
        }
        let mut st = self.state();
        if st.closed {
            return Err(Error::invalid_argument("the disk is closed").in_file(&self.path));
        }
        f(&mut st.engine)
            .and_then(|()| self.commit_if_full(&mut st.engine))
            .map_err(|e| e.in_file(&self.path))
    }

    /// Writes `buf` at `offset` (inside the disk), completing partial sectors at the edges.
    fn write_inner(&self, engine: &mut Engine, buf: &[u8], offset: u64) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let lss = u64::from(self.disk.logical_sector_size());
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        // A head that starts or ends inside a sector.
        if pos % lss != 0 || end - pos < lss {
            let s = pos - pos % lss;
            let n = (s + lss).min(end) - pos;
            self.write_sector_rmw(engine, s, &buf[..n as usize], pos - s)?;
            pos += n;
        }
        let body = (end - pos) / lss * lss;
        if body > 0 {
            let from = (pos - offset) as usize;
            let body = Payload::Bytes(&buf[from..from + body as usize]);
            self.write_aligned(engine, body, pos)?;
            pos += body.len();
        }
        if pos < end {
            let from = (pos - offset) as usize;
            self.write_sector_rmw(engine, pos, &buf[from..], 0)?;
        }
        Ok(())
    }

    /// Writes `data` at `at` bytes into the logical sector starting at `sector`.
    fn write_sector_rmw(
        &self,
        engine: &mut Engine,
        sector: u64,
        data: &[u8],
        at: u64,
    ) -> Result<()> {
        let lss = self.disk.logical_sector_size() as usize;
        let mut s = vec![0u8; lss];
        self.disk.read_at(&mut s, sector)?;
        s[at as usize..at as usize + data.len()].copy_from_slice(data);
        self.write_aligned(engine, Payload::Bytes(&s), sector)
    }

    fn write_aligned(&self, engine: &mut Engine, buf: Payload<'_>, offset: u64) -> Result<()> {
        let t = self.target();
        match engine {
            Engine::Vhdx(e) => e.write(&t, buf, offset),
            Engine::Vhd(e) => e.write(&t, buf, offset),
            Engine::Raw => buf
                .write_to(t.file, offset)
                .map_err(|e| Error::io(e, "writing to the raw image").offset(offset)),
        }
    }

    fn commit_if_full(&self, engine: &mut Engine) -> Result<()> {
        let t = self.target();
        match engine {
            Engine::Vhdx(e) if self.journal.staged() >= e.max_pages() => e.commit(&t),
            Engine::Vhd(e) if self.journal.staged() >= vhd::MAX_STAGED_PAGES => e.commit(&t),
            _ => Ok(()),
        }
    }

    /// Makes every earlier write durable: commits the staged metadata (see the module
    /// documentation) and flushes the file.
    pub fn flush(&self) -> Result<()> {
        let mut st = self.state();
        if st.closed {
            return Ok(());
        }
        self.flush_engine(&mut st.engine)
            .map_err(|e| e.in_file(&self.path))
    }

    fn flush_engine(&self, engine: &mut Engine) -> Result<()> {
        let t = self.target();
        match engine {
            Engine::Vhdx(e) => e.commit(&t)?,
            Engine::Vhd(e) => e.commit(&t)?,
            Engine::Raw => {}
        }
        t.file
            .sync()
            .map_err(|e| Error::io(e, "flushing the image file"))
    }

    /// Flushes, marks the VHDX log clean (so every tool opens the file without a replay) and
    /// releases the lock. Idempotent. Afterwards writes fail and reads still work.
    pub fn close(&self) -> Result<()> {
        let mut st = self.state();
        if st.closed {
            return Ok(());
        }
        let r = (|| {
            self.flush_engine(&mut st.engine)?;
            if let Engine::Vhdx(e) = &mut st.engine {
                e.finish(&self.target())?;
            }
            Ok(())
        })();
        st.closed = true;
        // Other programs may open the file as soon as we are done with it, even while this
        // value (and so the file handle) lives on.
        let unlocked = crate::storage::lock::unlock(self.file.file())
            .map_err(|e| Error::io(e, "releasing the write lock"));
        for f in &self.parent_locks {
            let _ = crate::storage::lock::unlock(f);
        }
        r.and(unlocked).map_err(|e: Error| e.in_file(&self.path))
    }
}

impl Drop for WritableDisk {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl VirtualDisk for WritableDisk {
    fn size(&self) -> u64 {
        self.disk.size()
    }
    fn logical_sector_size(&self) -> u32 {
        self.disk.logical_sector_size()
    }
    fn physical_sector_size(&self) -> u32 {
        self.disk.physical_sector_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.disk.read_at(buf, offset)
    }
    fn block_status(&self, offset: u64, length: u64) -> Result<Extent> {
        self.disk.block_status(offset, length)
    }
    fn visit_extents(
        &self,
        offset: u64,
        length: u64,
        f: &mut dyn FnMut(Extent) -> Result<()>,
    ) -> Result<()> {
        self.disk.visit_extents(offset, length, f)
    }
}

/// Locks every parent of `disk` against writers, as QEMU locks backing files: a parent that
/// changed under an open child would change what the child reads.
fn lock_parents(disk: &Disk) -> Result<Vec<std::fs::File>> {
    let mut locks = Vec::new();
    for p in disk.chain().into_iter().skip(1) {
        let Some(path) = p.path() else { continue };
        let f = std::fs::File::open(path)
            .map_err(|e| Error::io(e, "cannot open the parent to lock it").in_file(path))?;
        match crate::storage::lock::lock_unchanging(&f) {
            Ok(()) => locks.push(f),
            Err(crate::storage::lock::LockError::InUse(why)) => {
                return Err(Error::new(
                    crate::ErrorKind::InUse,
                    format!("a parent of the disk is in use: {why}; a parent must not change while a child is written"),
                )
                .in_file(path))
            }
            Err(crate::storage::lock::LockError::Io(e)) => {
                return Err(Error::io(e, "cannot lock the parent").in_file(path))
            }
        }
    }
    Ok(locks)
}

/// `n` rounded up to a multiple of `to` (a power of two), or an error when it overflows.
pub(crate) fn round_up(n: u64, to: u64) -> Result<u64> {
    n.checked_add(to - 1)
        .map(|v| v & !(to - 1))
        .ok_or_else(|| Error::invalid_argument("file offset overflows"))
}
