//! The free space of the guest's file systems, read from their own allocation maps: ext2/3/4
//! block bitmaps ([`ext`]) and the NTFS `$Bitmap` ([`ntfs`]). Compaction
//! ([`WritableDisk::compact`](crate::WritableDisk::compact), full mode) drops the blocks
//! that hold only free space, and [`trim_free_space`] trims every free range, so deleted
//! files that the guest never trimmed stop costing space.
//!
//! Exactness is the contract: a byte is reported free only when the volume's map was read
//! completely, every check passed (checksums, counts, pointers inside the volume) and the
//! file system is in a state where the map on disk is the truth (not dirty, no journal to
//! replay). Otherwise the volume is skipped with a [`Skip`] saying why, and none of it counts
//! as free. Areas outside understood volumes (partition tables, gaps, unknown file systems,
//! BitLocker) are never free, and volumes that overlap another are skipped.
//!
//! Memory: the maps are streamed (one bitmap block or piece at a time); the result holds one
//! entry per free extent, so it grows with the fragmentation of the free space, not with
//! any size a structure claims.

pub mod ext;
pub mod ntfs;
mod trim;

pub use trim::trim_free_space;

use super::{Volume, VolumeKind, VolumeReader};
use crate::disk::VirtualDisk;
use crate::error::{Error, ErrorKind, Result};
use serde::Serialize;
use std::fmt;

/// Why a volume's free space was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipKind {
    /// A file system (or content) whose free space is not read: FAT, exFAT, ReFS, swap,
    /// unknown.
    NotSupported,
    /// A BitLocker-encrypted volume: its allocation is not visible from outside.
    Encrypted,
    /// NTFS marked dirty (`chkdsk` pending), or a `$LogFile` with unfinished transactions.
    Dirty,
    /// ext with `needs_recovery`: the journal holds changes not yet in the bitmaps.
    NeedsRecovery,
    /// ext not cleanly unmounted, with recorded errors or with orphan inodes.
    NotClean,
    /// A feature whose effect on allocation is not understood.
    UnsupportedFeature,
    /// Something does not add up: a checksum, a count, a pointer outside the volume, a
    /// volume overlapping another.
    Inconsistent,
}

impl SkipKind {
    /// Lower-case name, as serialized (`dirty`, `needs_recovery`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SkipKind::NotSupported => "not_supported",
            SkipKind::Encrypted => "encrypted",
            SkipKind::Dirty => "dirty",
            SkipKind::NeedsRecovery => "needs_recovery",
            SkipKind::NotClean => "not_clean",
            SkipKind::UnsupportedFeature => "unsupported_feature",
            SkipKind::Inconsistent => "inconsistent",
        }
    }
}

impl fmt::Display for SkipKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A skipped volume: the kind of reason and the details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skip {
    /// The kind of reason.
    pub kind: SkipKind,
    /// What exactly, for people.
    pub reason: String,
}

impl Skip {
    /// A skip of `kind` with `reason`.
    pub fn new(kind: SkipKind, reason: impl Into<String>) -> Skip {
        Skip {
            kind,
            reason: reason.into(),
        }
    }
}

/// The free space of one volume, or why it was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreeSpace {
    /// The map was understood: the free byte ranges as `(disk offset, length)`, sorted,
    /// merged, inside the volume.
    Free(Vec<(u64, u64)>),
    /// The volume was skipped; nothing of it is free.
    Skipped(Skip),
}

/// Why a parser stopped: a skip (the volume is not used) or an error (the disk cannot be
/// read; the whole operation stops).
#[derive(Debug)]
pub(crate) enum Halt {
    Skip(Skip),
    Fail(Error),
}

impl From<Error> for Halt {
    /// A structure that points outside the volume, or bytes that cannot be what they claim
    /// ([`Corrupt`](ErrorKind::Corrupt)), make the volume inconsistent; anything else (I/O,
    /// a missing parent) stops the operation.
    fn from(e: Error) -> Halt {
        if e.kind() == ErrorKind::Corrupt {
            Halt::Skip(Skip::new(SkipKind::Inconsistent, e.to_string()))
        } else {
            Halt::Fail(e)
        }
    }
}

/// Appends `[offset, offset + len)` to the sorted `ranges`, merging it into the last range
/// when they touch. Empty ranges are ignored.
pub(crate) fn push_range(ranges: &mut Vec<(u64, u64)>, offset: u64, len: u64) {
    if len == 0 {
        return;
    }
    if let Some(last) = ranges.last_mut() {
        if last.0 + last.1 == offset {
            last.1 += len;
            return;
        }
    }
    ranges.push((offset, len));
}

/// The free space of `volume` on `disk` (see the module documentation). Errors only when
/// the disk itself cannot be read; everything about the volume's content is a
/// [`FreeSpace::Skipped`].
pub fn free_ranges(disk: &dyn VirtualDisk, volume: &Volume) -> Result<FreeSpace> {
    let vol = VolumeReader::for_volume(disk, volume)?;
    let found = match volume.kind {
        VolumeKind::Ext2 | VolumeKind::Ext3 | VolumeKind::Ext4 => ext::free_ranges(&vol),
        VolumeKind::Ntfs => ntfs::free_ranges(&vol),
        VolumeKind::BitLocker => Err(Halt::Skip(Skip::new(
            SkipKind::Encrypted,
            "BitLocker: the allocation inside is encrypted",
        ))),
        other => Err(Halt::Skip(Skip::new(
            SkipKind::NotSupported,
            format!("free space of {other} volumes is not read"),
        ))),
    };
    match found {
        Ok(ranges) => Ok(FreeSpace::Free(
            ranges
                .into_iter()
                .map(|(o, l)| (o + volume.offset, l))
                .collect(),
        )),
        Err(Halt::Skip(s)) => Ok(FreeSpace::Skipped(s)),
        Err(Halt::Fail(e)) => Err(e),
    }
}

/// What became of one volume in a free-space pass (compaction or trim).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeFreeSpace {
    /// The volume's number (partition number; 0 = the whole disk).
    pub volume: u32,
    /// Byte offset of the volume on the disk.
    pub offset: u64,
    /// Length of the volume in bytes.
    pub length: u64,
    /// What the volume holds (`ext4`, `ntfs`, …).
    pub file_system: VolumeKind,
    /// Free bytes according to the file system's map; `None` when skipped.
    pub free_bytes: Option<u64>,
    /// Compaction: blocks released because of this volume's free space (blocks that did not
    /// read as zeros as a whole). Trim: 0.
    pub blocks_released: u64,
    /// Compaction: the bytes of those blocks. Trim: the free bytes this file stored as data
    /// and trimmed (a repeated trim counts again the free bytes inside blocks that stay
    /// allocated, whose holes were punched before).
    pub bytes_reclaimed: u64,
    /// Why the volume was skipped, when it was.
    pub skipped: Option<SkipKind>,
    /// The details of the skip.
    pub reason: Option<String>,
}

/// The free space of every volume of a disk, ready for block-by-block questions.
#[derive(Debug, Clone, Default)]
pub struct FreeMap {
    /// Free ranges (disk offsets), sorted, not overlapping.
    ranges: Vec<(u64, u64)>,
    /// For each range, its volume's index in `volumes`.
    owner: Vec<usize>,
    /// One entry per volume, in table order.
    pub volumes: Vec<VolumeFreeSpace>,
}

/// How much of a range is free, and what is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// Free bytes in the range.
    pub free: u64,
    /// Index (in [`FreeMap::volumes`]) of the volume of the first free byte.
    pub volume: Option<usize>,
    /// The parts of the range that are not free, as `(disk offset, length)`, in order.
    pub used: Vec<(u64, u64)>,
}

impl FreeMap {
    /// Reads the guest's partition table and the free space of every volume of `disk`. A
    /// partition table that cannot be parsed gives an empty map (nothing is free); volumes
    /// that overlap another are skipped. Errors are the disk's read errors.
    pub fn read(disk: &dyn VirtualDisk) -> Result<FreeMap> {
        let layout = match super::inspect(disk) {
            Ok(l) => l,
            Err(e) if e.kind() == ErrorKind::Corrupt => return Ok(FreeMap::default()),
            Err(e) => return Err(e),
        };
        let mut map = FreeMap::default();
        let vols = &layout.volumes;
        for (i, v) in vols.iter().enumerate() {
            let clash = vols.iter().enumerate().find(|&(j, w)| {
                j != i
                    && v.offset < w.offset.saturating_add(w.length)
                    && w.offset < v.offset.saturating_add(v.length)
            });
            let found = match clash {
                Some((_, w)) => FreeSpace::Skipped(Skip::new(
                    SkipKind::Inconsistent,
                    format!("the volume overlaps volume {}", w.number),
                )),
                None => free_ranges(disk, v)?,
            };
            let mut report = VolumeFreeSpace {
                volume: v.number,
                offset: v.offset,
                length: v.length,
                file_system: v.kind,
                free_bytes: None,
                blocks_released: 0,
                bytes_reclaimed: 0,
                skipped: None,
                reason: None,
            };
            match found {
                FreeSpace::Free(r) => {
                    report.free_bytes = Some(r.iter().map(|x| x.1).sum());
                    map.owner.extend(std::iter::repeat_n(i, r.len()));
                    map.ranges.extend(r);
                }
                FreeSpace::Skipped(s) => {
                    report.skipped = Some(s.kind);
                    report.reason = Some(s.reason);
                }
            }
            map.volumes.push(report);
        }
        let mut order: Vec<usize> = (0..map.ranges.len()).collect();
        order.sort_by_key(|&k| map.ranges[k].0);
        map.ranges = order.iter().map(|&k| map.ranges[k]).collect();
        map.owner = order.iter().map(|&k| map.owner[k]).collect();
        Ok(map)
    }

    /// Whether no byte is free.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The free ranges, `(disk offset, length)`, sorted.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// The volume index (in [`FreeMap::volumes`]) of each range of [`FreeMap::ranges`].
    pub fn owners(&self) -> &[usize] {
        &self.owner
    }

    /// How much of `[start, start + len)` is free.
    pub fn coverage(&self, start: u64, len: u64) -> Coverage {
        let end = start + len;
        let mut c = Coverage {
            free: 0,
            volume: None,
            used: Vec::new(),
        };
        let mut pos = start;
        let first = self.ranges.partition_point(|&(o, l)| o + l <= start);
        for (k, &(o, l)) in self.ranges.iter().enumerate().skip(first) {
            if o >= end {
                break;
            }
            let (s, e) = (o.max(start), (o + l).min(end));
            if s > pos {
                c.used.push((pos, s - pos));
            }
            c.free += e - s;
            c.volume.get_or_insert(self.owner[k]);
            pos = e;
        }
        if pos < end {
            c.used.push((pos, end - pos));
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_when_they_touch() {
        let mut r = Vec::new();
        push_range(&mut r, 0, 10);
        push_range(&mut r, 10, 5);
        push_range(&mut r, 20, 0);
        push_range(&mut r, 30, 1);
        assert_eq!(r, vec![(0, 15), (30, 1)]);
    }

    #[test]
    fn coverage_of_a_block() {
        let map = FreeMap {
            ranges: vec![(100, 50), (200, 100), (300, 10)],
            owner: vec![0, 0, 1],
            volumes: Vec::new(),
        };
        let c = map.coverage(0, 100);
        assert_eq!((c.free, c.volume, c.used), (0, None, vec![(0, 100)]));
        let c = map.coverage(120, 200);
        assert_eq!(c.free, 30 + 100 + 10);
        assert_eq!(c.volume, Some(0));
        assert_eq!(c.used, vec![(150, 50), (310, 10)]);
        let c = map.coverage(210, 90);
        assert_eq!((c.free, c.used), (90, vec![]));
        let c = map.coverage(305, 5);
        assert_eq!((c.free, c.volume), (5, Some(1)));
    }
}
