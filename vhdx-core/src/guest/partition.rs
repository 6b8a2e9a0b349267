//! Partition tables: which one a disk carries (none, MBR, GPT, a protective MBR without a
//! GPT) and the partitions it lists. [`mbr`] and [`gpt`] parse the
//! two schemes; this module decides between them and holds the public types.
//!
//! Deciding between "an MBR" and "a file system starting at sector 0" is the classic
//! ambiguity (a FAT or NTFS boot sector also ends in `55 AA`): a boot sector that a volume
//! detector recognises wins, as Linux and Windows decide too.

use super::gpt::{self, GptHeaderCopy};
use super::mbr::{self, MbrEntry};
use super::window::VolumeReader;
use crate::disk::VirtualDisk;
use crate::error::Result;
use serde::Serialize;
use std::fmt;
use uuid::Uuid;

/// The partition table a disk carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PartitionTable {
    /// No partition table: the disk is empty, or a file system starts at sector 0.
    None,
    /// A DOS/MBR table (primary entries, and logical ones in an extended partition).
    Mbr {
        /// The 32-bit disk signature at byte 440 (Windows identifies MBR disks by it).
        disk_signature: u32,
    },
    /// A GUID partition table.
    Gpt {
        /// The disk GUID.
        disk_guid: Uuid,
        /// Which header copy was used (`primary`, or `backup` when the primary is damaged).
        header: GptHeaderCopy,
        /// First LBA partitions may use.
        first_usable_lba: u64,
        /// Last LBA partitions may use.
        last_usable_lba: u64,
        /// Entries in the partition entry array (used or not).
        entry_count: u32,
    },
    /// An MBR with a protective (type 0xEE) entry, but no GPT header in either place.
    ProtectiveMbrOnly,
}

impl PartitionTable {
    /// Short lower-case name: `none`, `mbr`, `gpt`, `protective_mbr_only`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PartitionTable::None => "none",
            PartitionTable::Mbr { .. } => "mbr",
            PartitionTable::Gpt { .. } => "gpt",
            PartitionTable::ProtectiveMbrOnly => "protective_mbr_only",
        }
    }
}

impl fmt::Display for PartitionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionTable::None => f.write_str("none"),
            PartitionTable::Mbr { disk_signature } => {
                write!(f, "MBR (disk signature {disk_signature:08x})")
            }
            PartitionTable::Gpt {
                disk_guid, header, ..
            } => match header {
                GptHeaderCopy::Primary => write!(f, "GPT (disk GUID {disk_guid})"),
                GptHeaderCopy::Backup => {
                    write!(f, "GPT (disk GUID {disk_guid}, from the backup header)")
                }
            },
            PartitionTable::ProtectiveMbrOnly => f.write_str("protective MBR without a GPT header"),
        }
    }
}

/// The scheme a partition entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// A primary MBR entry.
    MbrPrimary,
    /// A logical partition inside an MBR extended partition.
    MbrLogical,
    /// A GPT entry.
    Gpt,
}

/// One partition-table entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// Where the entry comes from.
    pub scheme: Scheme,
    /// MBR: the partition type byte (0x07 NTFS/exFAT, 0x83 Linux, …).
    pub mbr_type: Option<u8>,
    /// MBR: the boot indicator (0x80) is set.
    pub bootable: bool,
    /// GPT: the partition type GUID.
    pub type_guid: Option<Uuid>,
    /// GPT: the unique partition GUID.
    pub unique_guid: Option<Uuid>,
    /// GPT: the partition name (UTF-16 in the entry).
    pub name: Option<String>,
    /// GPT: the 64-bit attribute field (bit 0 required, bit 1 no block I/O protocol, bit 2
    /// legacy BIOS bootable, bits 48-63 type-specific, e.g. bit 60 read-only, bit 62 hidden,
    /// bit 63 no drive letter for Microsoft basic data).
    pub attributes: u64,
    /// A readable name of the type, when it is a well-known one.
    pub type_name: Option<&'static str>,
    /// First LBA (logical sectors of the disk).
    pub first_lba: u64,
    /// Length in sectors.
    pub sectors: u64,
}

/// The table and its partitions (number, entry), before volume detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The table kind.
    pub table: PartitionTable,
    /// Data partitions in table order with their 1-based numbers (Linux numbering: MBR
    /// primaries 1-4 by slot, logical partitions from 5; GPT by entry index). Extended
    /// containers and empty entries are left out.
    pub partitions: Vec<(u32, Partition)>,
    /// Problems tolerated (a damaged primary GPT, a partition cut by the end of the disk…).
    pub warnings: Vec<String>,
}

/// Reads the partition table of `disk`. `Ok(None)` when sector 0 holds no table (no boot
/// signature, or the boot sector of a file system). Sector size: the disk's logical one.
pub fn read_table(disk: &dyn VirtualDisk) -> Result<Option<Table>> {
    let sector = u64::from(disk.logical_sector_size());
    let whole = VolumeReader::whole(disk);
    if whole.len() < 2 * sector.max(512) {
        return Ok(None);
    }
    let mut lba0 = [0u8; 512];
    whole.read_at(&mut lba0, 0)?;
    let mbr_ok = lba0[510..512] == mbr::BOOT_SIGNATURE;
    let entries = mbr::primary_entries(&lba0);
    let protective = mbr_ok && entries.iter().any(|e| e.kind == mbr::TYPE_GPT_PROTECTIVE);
    if protective || !mbr_ok {
        if let Some(t) = gpt::read(&whole, sector)? {
            let mut t = t;
            if !mbr_ok {
                t.warnings
                    .push("a GPT without a protective MBR (sector 0 has no boot signature)".into());
            }
            return Ok(Some(t));
        }
        if protective {
            let mut warnings = vec![
                "the MBR has a protective GPT entry, but there is no GPT header at LBA 1 nor \
                 at the last LBA"
                    .to_string(),
            ];
            // A table written for the other sector size (a 4Kn disk's image behind 512-byte
            // sectors, or the reverse) has its header at LBA 1 of that size.
            for other in [512u64, 4096] {
                let mut sig = [0u8; 8];
                if other != sector
                    && whole.read_some_at(&mut sig, other)? == 8
                    && sig == gpt::SIGNATURE
                {
                    warnings.push(format!(
                        "a GPT header lies at byte {other}, LBA 1 for {other}-byte sectors: the \
                         table was written for {other}-byte sectors, but the disk has \
                         {sector}-byte logical sectors"
                    ));
                }
            }
            return Ok(Some(Table {
                table: PartitionTable::ProtectiveMbrOnly,
                partitions: Vec::new(),
                warnings,
            }));
        }
        return Ok(None);
    }
    if super::volume::boot_sector_kind(&lba0).is_some() || !mbr::entries_plausible(&entries) {
        return Ok(None);
    }
    mbr::read(&whole, sector, &lba0, &entries).map(Some)
}

/// A short name for well-known MBR type bytes.
pub fn mbr_type_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        0x01 => "FAT12",
        0x04 | 0x06 | 0x0E => "FAT16",
        0x05 | 0x0F | 0x85 => "extended",
        0x07 => "NTFS/exFAT/HPFS",
        0x0B | 0x0C => "FAT32",
        0x27 => "Windows recovery",
        0x42 => "Windows dynamic disk",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x8E => "Linux LVM",
        0xEE => "GPT protective",
        0xEF => "EFI system",
        0xFD => "Linux RAID",
        _ => return None,
    })
}

/// A short name for well-known GPT partition type GUIDs.
pub fn gpt_type_name(guid: &Uuid) -> Option<&'static str> {
    const NAMES: &[(&str, &str)] = &[
        ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI system"),
        ("e3c9e316-0b5c-4db8-817d-f92df00215ae", "Microsoft reserved"),
        (
            "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",
            "Microsoft basic data",
        ),
        ("de94bba4-06d1-4d40-a16a-bfd50179d6ac", "Windows recovery"),
        (
            "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3",
            "Windows LDM metadata",
        ),
        ("af9b60a0-1431-4f62-bc68-3311714a69ad", "Windows LDM data"),
        (
            "e75caf8f-f680-4cee-afa3-b001e56efc2d",
            "Windows storage spaces",
        ),
        ("0fc63daf-8483-4772-8e79-3d69d8477de4", "Linux filesystem"),
        ("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "Linux swap"),
        ("e6d6d379-f507-44c2-a23c-238f2a3df928", "Linux LVM"),
        ("a19d880f-05fc-4d3b-a006-743f0f84911e", "Linux RAID"),
        (
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
            "Linux root (x86-64)",
        ),
        ("933ac7e1-2eb4-4f13-b844-0e14e2aef915", "Linux home"),
        (
            "bc13c2ff-59e6-4262-a352-b275fd6f7172",
            "Linux extended boot",
        ),
        ("21686148-6449-6e6f-744e-656564454649", "BIOS boot"),
    ];
    let s = guid.hyphenated().to_string();
    NAMES.iter().find(|(g, _)| *g == s).map(|(_, n)| *n)
}

/// A partition entry from an MBR slot (used by [`mbr`](super::mbr)).
pub(super) fn from_mbr(e: &MbrEntry, scheme: Scheme, first_lba: u64) -> Partition {
    Partition {
        scheme,
        mbr_type: Some(e.kind),
        bootable: e.status == 0x80,
        type_guid: None,
        unique_guid: None,
        name: None,
        attributes: 0,
        type_name: mbr_type_name(e.kind),
        first_lba,
        sectors: u64::from(e.sectors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names() {
        let g = Uuid::parse_str("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7").unwrap();
        assert_eq!(gpt_type_name(&g), Some("Microsoft basic data"));
        assert_eq!(gpt_type_name(&Uuid::nil()), None);
        assert_eq!(mbr_type_name(0x83), Some("Linux"));
        assert_eq!(mbr_type_name(0x99), None);
    }

    #[test]
    fn serializes_tagged() {
        let t = PartitionTable::Mbr {
            disk_signature: 0x1234,
        };
        let j = serde_json::to_string(&t).unwrap();
        assert_eq!(j, r#"{"type":"mbr","disk_signature":4660}"#);
        assert_eq!(t.as_str(), "mbr");
    }
}
