//! Trimming the guest's free space ([`trim_free_space`]): what a guest's `fstrim` would do,
//! done offline.

use super::{FreeMap, VolumeFreeSpace};
use crate::disk::{Status, VirtualDisk};
use crate::error::Result;
use crate::write::WritableDisk;

/// Trims every free range of every volume whose map was understood (see
/// [`FreeMap::read`]), where this file stores the bytes: ranges the file does not hold
/// (unallocated, ZERO, or read from a parent) are left alone, since trimming them would
/// give nothing back (and in a differencing disk would allocate blocks to hold the zeros).
/// Whole blocks are freed, the rest is punched out of the host file (see
/// [`WritableDisk::trim`]). The free space then reads as zeros; used bytes never change. A
/// fixed disk keeps its space (its free space is zeroed, which a later conversion to a
/// dynamic disk skips).
/// Returns one entry per volume with the bytes trimmed (`bytes_reclaimed`) or why it was
/// skipped. `progress(done, total)` counts free bytes examined. The caller flushes or closes.
pub fn trim_free_space(
    disk: &WritableDisk,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<Vec<VolumeFreeSpace>> {
    let map = FreeMap::read(disk.disk())?;
    let total: u64 = map.ranges().iter().map(|r| r.1).sum();
    let mut volumes = map.volumes.clone();
    let mut done = 0;
    let mut pieces = Vec::new();
    for (&(offset, length), &owner) in map.ranges().iter().zip(map.owners()) {
        pieces.clear();
        disk.disk().visit_extents(offset, length, &mut |e| {
            if let Status::Data { depth: 0, .. } = e.status {
                crate::guest::freespace::push_range(&mut pieces, e.offset, e.length);
            }
            Ok(())
        })?;
        for &(o, l) in &pieces {
            disk.trim(o, l)?;
            volumes[owner].bytes_reclaimed += l;
        }
        done += length;
        if let Some(p) = progress {
            p(done, total);
        }
    }
    Ok(volumes)
}
