//! Shared body of the fuzz targets: open an image from memory, ask for its info, check it,
//! map it and read every sector (up to a cap that keeps each run fast).
//!
//! A VHDX is at least 1 MiB, far beyond what libFuzzer mutates well, so inputs are mostly
//! *patch lists* applied to a small valid base image (testdata/fuzz/base.*.gz): each patch is
//! `[u32 LE offset][u8 length][bytes]`, the offset taken modulo the image length. Inputs
//! that already start like a whole image are opened as they are.

use std::io::Read;
use std::sync::{Arc, OnceLock};
use vhdx_core::storage::{MemStorage, Overlay, Storage};
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
    B.get_or_init(|| Arc::new(MemStorage::new(gunzip(include_bytes!("../../testdata/fuzz/base.vhdx.gz")))))
        .clone()
}

/// The VHD base image.
pub fn base_vhd() -> Arc<dyn Storage> {
    static B: OnceLock<Arc<dyn Storage>> = OnceLock::new();
    B.get_or_init(|| Arc::new(MemStorage::new(gunzip(include_bytes!("../../testdata/fuzz/base.vhd.gz")))))
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
    let _ = disk.info(true);
    let _ = disk.check();
    let size = disk.size();
    // Walk the allocation map, bounded by the cap.
    let mut off = 0u64;
    let mut steps = 0;
    while off < size && off < READ_CAP && steps < 10_000 {
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
    let end = size.min(READ_CAP);
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
