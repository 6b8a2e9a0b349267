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
