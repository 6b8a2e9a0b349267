//! Shared body of the fuzz targets: open an image from memory, ask for its info, check it,
//! map it and read every sector (up to a cap that keeps each run fast).
//!
//! A VHDX is at least 1 MiB, far beyond what libFuzzer mutates well, so inputs are mostly
//! *patch lists* applied to a small valid base image (testdata/fuzz/base.*.gz): each patch is
//! `[u32 LE offset][u8 length][bytes]`, the offset taken modulo the image length. Inputs
//! that already start like a whole image are opened as they are.

use std::io::Read;
use std::sync::{Arc, OnceLock};
use vhdx_core::storage::{MemStorage, Overlay, Storage, StorageMut};
use vhdx_core::{Disk, VirtualDisk};

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .expect("embedded base image");
    out
}

/// The VHDX base image.
pub fn base_vhdx() -> Arc<dyn Storage> {
    static B: OnceLock<Arc<dyn Storage>> = OnceLock::new();
    B.get_or_init(|| {
        Arc::new(MemStorage::new(gunzip(include_bytes!(
            "../../testdata/fuzz/base.vhdx.gz"
        ))))
    })
    .clone()
}

/// The VHD base image.
pub fn base_vhd() -> Arc<dyn Storage> {
    static B: OnceLock<Arc<dyn Storage>> = OnceLock::new();
    B.get_or_init(|| {
        Arc::new(MemStorage::new(gunzip(include_bytes!(
            "../../testdata/fuzz/base.vhd.gz"
        ))))
    })
    .clone()
}

/// Applies the patch list `patches` to `base` in an overlay (the base is never copied).
pub fn patch_and_read(base: Arc<dyn Storage>, patches: &[u8]) {
    let len = base.len().unwrap_or(1).max(1);
    let Ok(mut ov) = Overlay::new(base) else {
        return;
    };
    let mut p = patches;
    while p.len() >= 5 {
        let off = u64::from(u32::from_le_bytes([p[0], p[1], p[2], p[3]])) % len;
        let n = usize::from(p[4]).min(p.len() - 5);
        let n = n.min((len - off) as usize);
        ov.write(off, &p[5..5 + n]);
        p = &p[5 + n..];
    }
    if let Ok(disk) = Disk::from_storage(Arc::new(ov), "fuzz") {
        exercise(&disk);
    }
}

/// Most virtual bytes read per input: a 2 MiB input can describe a 64 TiB disk, and reading
/// all of it would only measure memcpy.
pub const READ_CAP: u64 = 64 << 20;

/// Opens `data` and exercises every read path. Errors are expected; panics are bugs.
pub fn open_and_read(data: &[u8]) {
    if let Ok(disk) = Disk::from_bytes(data.to_vec()) {
        exercise(&disk);
    }
}

/// Asks an opened disk everything: info, check, the allocation map and every sector.
pub fn exercise(disk: &Disk) {
    exercise_within(disk, READ_CAP);
}

/// [`exercise`] with `cap` bytes of the virtual disk read instead of [`READ_CAP`].
pub fn exercise_within(disk: &Disk, cap: u64) {
    let _ = disk.info(true);
    let _ = disk.check();
    let size = disk.size();
    // Walk the allocation map, bounded by the cap.
    let mut off = 0u64;
    let mut steps = 0;
    while off < size && off < cap && steps < 10_000 {
        match disk.block_status(off, size - off) {
            Ok(e) if e.length > 0 => off += e.length,
            _ => break,
        }
        steps += 1;
    }
    // Read every sector up to the cap, with a piece size that is not sector-aligned so
    // partial-sector paths run too.
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    let end = size.min(cap);
    while off < end {
        let n = ((end - off) as usize).min(buf.len() - 7);
        if disk.read_at(&mut buf[..n], off).is_err() {
            break;
        }
        off += n as u64;
    }
    // Near the end of the disk too.
    if size > 4096 {
        let _ = disk.read_at(&mut buf[..4096], size - 4096);
    }
}

/// Decompresses a gzip-compressed image embedded in the target (`include_bytes!`).
pub fn embedded(gz: &[u8]) -> Vec<u8> {
    gunzip(gz)
}

/// Applies the patch list `patches` to `ov`, each offset taken modulo `window` and added to
/// `start` (so a target can aim its patches at one structure: the log, the metadata region),
/// and clipped to the overlay's length.
pub fn apply_patches(ov: &mut Overlay, patches: &[u8], start: u64, window: u64) {
    let len = ov.len().unwrap_or(0);
    let window = window.max(1);
    let mut p = patches;
    while p.len() >= 5 {
        let rel = u64::from(u32::from_le_bytes([p[0], p[1], p[2], p[3]])) % window;
        let off = start.saturating_add(rel).min(len);
        let n = usize::from(p[4]).min(p.len() - 5);
        let n = n.min((len - off) as usize);
        ov.write(off, &p[5..5 + n]);
        p = &p[5 + usize::from(p[4]).min(p.len() - 5)..];
    }
}

/// A writable copy-on-write view of a read-only base: writes land in an [`Overlay`], so a
/// target can run a write path (a log replay onto the "file") without copying the image.
#[derive(Debug)]
pub struct CowStorage(std::sync::Mutex<Overlay>);

impl CowStorage {
    /// A writable view of `ov` (which may already hold patches).
    pub fn new(ov: Overlay) -> Self {
        CowStorage(std::sync::Mutex::new(ov))
    }

    fn ov(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Storage for CowStorage {
    fn len(&self) -> std::io::Result<u64> {
        self.ov().len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.ov().read_exact_at(buf, offset)
    }
}

impl StorageMut for CowStorage {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        self.ov().write(offset, buf);
        Ok(())
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.ov().set_len(len);
        Ok(())
    }
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn write_zeroes_at(&self, offset: u64, len: u64) -> std::io::Result<()> {
        offset
            .checked_add(len)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        self.ov().write_zeroes(offset, len);
        Ok(())
    }
}

/// Reads the virtual disk `disk` up to `cap` bytes: the allocation map, then every range the
/// map reports as stored in some image of the chain, then the first and last sectors.
/// Cheaper than [`exercise`] on large, mostly empty disks.
pub fn read_data_ranges(disk: &dyn VirtualDisk, cap: u64) -> Vec<(u64, Vec<u8>)> {
    let size = disk.size();
    let mut out = Vec::new();
    let mut off = 0u64;
    let mut steps = 0;
    let mut budget = cap;
    while off < size && steps < 4096 && budget > 0 {
        let Ok(e) = disk.block_status(off, size - off) else {
            break;
        };
        if e.length == 0 {
            break;
        }
        if matches!(e.status, vhdx_core::Status::Data { .. }) {
            let n = e.length.min(budget).min(4 << 20);
            let mut buf = vec![0u8; n as usize];
            if disk.read_at(&mut buf, off).is_ok() {
                out.push((off, buf));
            }
            budget -= n;
        }
        off += e.length;
        steps += 1;
    }
    for at in [0, size.saturating_sub(4096)] {
        let n = size.min(4096) as usize;
        let mut buf = vec![0u8; n];
        if disk.read_at(&mut buf, at).is_ok() {
            out.push((at, buf));
        }
    }
    out
}
