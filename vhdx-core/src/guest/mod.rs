//! Looking inside the guest: the partition table of a virtual disk, the volumes it lists and
//! what each one holds, written once against [`VirtualDisk`] so it works on every format
//! and through differencing chains (the guest's view).
//!
//! - [`partition`]: which table (none, MBR, GPT, protective MBR only) and its entries;
//!   [`mbr`] and [`gpt`] parse the two schemes.
//! - [`volume`]: file system detection by magic bytes ([`VolumeKind`]).
//! - [`relocate`]: what a resize must respect (partition ends) and the GPT edits it needs.
//! - [`window`]: [`VolumeReader`], a bounds-checked byte window over one volume with
//!   positional reads and `Read + Seek`, for our parsers and for crates that want a stream.
//! - [`ntfs_file`]: facts about one file of an NTFS volume (through the `ntfs` crate).
//! - [`odx`]: [`odx_check`], ODX (offloaded data transfer) eligibility with one finding per
//!   rule.
//!
//! ```no_run
//! use vhdx_core::{guest, Disk};
//! let disk = Disk::open("disk.vhdx")?;
//! let layout = guest::inspect(&disk)?;
//! println!("{}", layout.table);
//! for v in &layout.volumes {
//!     println!("{}: {} bytes at {:#x}: {}", v.number, v.length, v.offset, v.kind);
//! }
//! # Ok::<(), vhdx_core::Error>(())
//! ```

pub mod freespace;
pub mod gpt;
pub mod mbr;
pub mod ntfs_file;
pub mod odx;
pub mod partition;
pub mod relocate;
pub mod volume;
pub mod window;

pub use odx::{
    odx_check, odx_check_disk, Controller, OdxFinding, OdxOptions, OdxReport, OdxRule, OdxStatus,
};
pub use partition::{Partition, PartitionTable, Scheme};
pub use volume::VolumeKind;
pub use window::VolumeReader;

use crate::disk::VirtualDisk;
use crate::error::{Error, Result};
use serde::Serialize;

/// One volume of the guest: a partition (or the whole disk) and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// 1-based partition number (MBR: primaries 1-4 by slot, logical partitions from 5;
    /// GPT: entry index); 0 = the whole disk holds a file system, no table.
    pub number: u32,
    /// Byte offset on the virtual disk.
    pub offset: u64,
    /// Length in bytes (cut at the end of the disk when the table says more; see the
    /// layout's warnings).
    pub length: u64,
    /// What the volume holds.
    pub kind: VolumeKind,
    /// The table entry, when the volume is a partition.
    pub partition: Option<Partition>,
}

impl Volume {
    /// A window over this volume on `disk`.
    pub fn reader<'a>(&self, disk: &'a dyn VirtualDisk) -> Result<VolumeReader<'a>> {
        VolumeReader::for_volume(disk, self)
    }
}

/// The guest's layout: its partition table and volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestLayout {
    /// The partition table.
    pub table: PartitionTable,
    /// The logical sector size used to read the table.
    pub sector_size: u32,
    /// The volumes in table order (MBR logical partitions after the primaries).
    pub volumes: Vec<Volume>,
    /// Problems tolerated (a damaged primary GPT, a partition past the end of the disk, …).
    pub warnings: Vec<String>,
}

impl GuestLayout {
    /// The volume numbered `number`, if any.
    pub fn volume(&self, number: u32) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.number == number)
    }
}

/// Reads the partition table of `disk` and detects what each volume holds. A disk without a
/// table gets volume 0 when a file system starts at sector 0, else no volume. Errors:
/// [`Corrupt`](crate::ErrorKind::Corrupt) for a table that is present but unusable (both GPT
/// copies damaged, a looping chain of logical partitions), and the disk's read errors.
pub fn inspect(disk: &dyn VirtualDisk) -> Result<GuestLayout> {
    let sector = disk.logical_sector_size();
    if !(512..=65536).contains(&sector) || !sector.is_power_of_two() {
        return Err(Error::invalid_argument(format!(
            "logical sector size {sector}: expected a power of two from 512 to 65536"
        )));
    }
    let size = disk.size();
    let Some(table) = partition::read_table(disk)? else {
        let whole = VolumeReader::whole(disk);
        let kind = volume::detect(&whole)?;
        let volumes = if kind == VolumeKind::Unknown {
            Vec::new()
        } else {
            vec![Volume {
                number: 0,
                offset: 0,
                length: size,
                kind,
                partition: None,
            }]
        };
        return Ok(GuestLayout {
            table: PartitionTable::None,
            sector_size: sector,
            volumes,
            warnings: Vec::new(),
        });
    };
    let mut warnings = table.warnings;
    let mut volumes = Vec::new();
    let sector = u64::from(sector);
    for (number, p) in table.partitions {
        let start = p.first_lba.checked_mul(sector).filter(|&s| s < size);
        let Some(offset) = start else {
            warnings.push(format!(
                "partition {number} starts past the end of the disk (LBA {})",
                p.first_lba
            ));
            continue;
        };
        let want = p.sectors.saturating_mul(sector);
        let length = want.min(size - offset);
        if length < want {
            warnings.push(format!(
                "partition {number} ends past the end of the disk; {} of its {want} bytes \
                 are on the disk",
                length
            ));
        }
        let kind = volume::detect(&VolumeReader::new(disk, offset, length)?)?;
        volumes.push(Volume {
            number,
            offset,
            length,
            kind,
            partition: Some(p),
        });
    }
    Ok(GuestLayout {
        table: table.table,
        sector_size: sector as u32,
        volumes,
        warnings,
    })
}

/// An in-memory disk for unit tests (raw bytes, a chosen logical sector size).
#[cfg(test)]
pub(crate) mod testdisk {
    use crate::disk::{Extent, Status, VirtualDisk};
    use crate::error::Result;

    /// Raw bytes as a virtual disk.
    pub struct MemDisk {
        pub bytes: Vec<u8>,
        pub sector: u32,
    }

    impl VirtualDisk for MemDisk {
        fn size(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn logical_sector_size(&self) -> u32 {
            self.sector
        }
        fn physical_sector_size(&self) -> u32 {
            self.sector
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            crate::disk::check_range(self.size(), offset, buf.len() as u64)?;
            let o = offset as usize;
            buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
            Ok(())
        }
        fn block_status(&self, offset: u64, length: u64) -> Result<Extent> {
            Ok(Extent {
                offset,
                length: length.min(self.size() - offset),
                status: Status::Data {
                    depth: 0,
                    file_offset: Some(offset),
                },
            })
        }
    }
}

#[cfg(test)]
mod tests;
