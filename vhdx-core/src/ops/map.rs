//! `vhdx map`: the allocation map of a disk, in the shape of `qemu-img map --output=json`
//! so users and scripts that know qemu find the same fields.

use crate::disk::{extents, Status, VirtualDisk};
use crate::error::Result;
use serde::Serialize;

/// One extent of the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MapEntry {
    /// Virtual offset.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
    /// Chain depth of the image that decides the content (0 = the disk itself); 0 for an
    /// unallocated range.
    pub depth: u32,
    /// Whether some image in the chain holds or declares the range (data or explicit zeros).
    pub present: bool,
    /// Whether the range reads as zeros.
    pub zero: bool,
    /// Whether the bytes come from stored data.
    pub data: bool,
    /// Offset in the image file at `depth`, for data stored contiguously there.
    pub offset: Option<u64>,
}

/// The map of `disk`: every byte of the virtual disk in exactly one entry, in order.
///
/// ```
/// # use vhdx_core::create::{create, CreateOptions};
/// use vhdx_core::Disk;
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("disk.vhdx");
/// # create(&path, &CreateOptions::new().size(64 << 20).block_size(1 << 20))?;
/// let w = Disk::open_rw(&path, &Default::default())?;
/// w.write_at(&[7; 4096], 3 << 20)?;
/// w.close()?;
/// let map = vhdx_core::ops::map::map(&Disk::open(&path)?)?;
/// let data: Vec<_> = map.iter().filter(|e| e.data).map(|e| (e.start, e.length)).collect();
/// assert_eq!(data, [(3 << 20, 1 << 20)]); // the block written, the rest reads zeros
/// # Ok::<(), vhdx_core::Error>(())
/// ```
pub fn map(disk: &dyn VirtualDisk) -> Result<Vec<MapEntry>> {
    Ok(extents(disk)?
        .into_iter()
        .map(|e| match e.status {
            Status::Data { depth, file_offset } => MapEntry {
                start: e.offset,
                length: e.length,
                depth,
                present: true,
                zero: false,
                data: true,
                offset: file_offset,
            },
            Status::Zero { depth } => MapEntry {
                start: e.offset,
                length: e.length,
                depth,
                present: true,
                zero: true,
                data: false,
                offset: None,
            },
            Status::Unallocated => MapEntry {
                start: e.offset,
                length: e.length,
                depth: 0,
                present: false,
                zero: true,
                data: false,
                offset: None,
            },
        })
        .collect())
}
