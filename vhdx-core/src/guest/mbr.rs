//! The DOS/MBR partition table: four primary entries at byte 446 of sector 0, and logical
//! partitions in a chain of extended boot records (EBRs) inside an extended partition.
//! Each EBR holds the logical partition (relative to the EBR) and a link to the next EBR
//! (relative to the start of the extended partition). The chain is bounded in length and
//! every EBR must lie inside the extended partition, so a loop or a wild link is an error,
//! never a hang.

use super::partition::{from_mbr, PartitionTable, Scheme, Table};
use super::window::VolumeReader;
use crate::error::{Error, Result};
use std::collections::HashSet;
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `55 AA` at byte 510 of an MBR or EBR.
pub const BOOT_SIGNATURE: [u8; 2] = [0x55, 0xAA];
/// Offset of the first of the four entries.
pub const ENTRIES_OFFSET: usize = 446;
/// Offset of the disk signature.
pub const DISK_SIGNATURE_OFFSET: usize = 440;
/// The protective entry of a GPT disk.
pub const TYPE_GPT_PROTECTIVE: u8 = 0xEE;
/// Most logical partitions followed before the chain is called corrupt (Linux and Windows
/// stop far below this).
pub const MAX_LOGICAL: usize = 256;

/// One 16-byte partition entry (MBR and EBR).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct MbrEntry {
    /// 0x80 active (bootable), 0x00 inactive; anything else is invalid.
    pub status: u8,
    /// CHS address of the first sector (ignored; LBA fields are used).
    pub chs_first: [u8; 3],
    /// Partition type byte; 0 = unused.
    pub kind: u8,
    /// CHS address of the last sector (ignored).
    pub chs_last: [u8; 3],
    /// First sector: absolute (MBR), relative to the EBR (logical) or to the extended
    /// partition (EBR link).
    pub first_lba: U32,
    /// Length in sectors.
    pub sectors: U32,
}
const _: () = assert!(core::mem::size_of::<MbrEntry>() == 16);

/// Whether `kind` is an extended-partition container.
pub fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0F | 0x85)
}

/// The four entries of a 512-byte boot record.
pub fn primary_entries(sector: &[u8; 512]) -> [MbrEntry; 4] {
    let mut out = [MbrEntry::new_zeroed(); 4];
    for (i, e) in out.iter_mut().enumerate() {
        let at = ENTRIES_OFFSET + 16 * i;
        // 16 bytes always lie inside the 512-byte sector.
        if let Ok(v) = MbrEntry::read_from_bytes(&sector[at..at + 16]) {
            *e = v;
        }
    }
    out
}

/// Whether four entries look like a partition table rather than boot code: every status
/// byte is 0x00 or 0x80, and every used entry has a start and a length.
pub fn entries_plausible(entries: &[MbrEntry; 4]) -> bool {
    entries.iter().all(|e| {
        (e.status == 0 || e.status == 0x80)
            && (e.kind == 0 || (e.first_lba.get() > 0 && e.sectors.get() > 0))
    })
}

/// Reads an MBR table whose sector 0 (`lba0`, with `entries`) was already read.
pub fn read(
    disk: &VolumeReader<'_>,
    sector: u64,
    lba0: &[u8; 512],
    entries: &[MbrEntry; 4],
) -> Result<Table> {
    let disk_signature = u32::from_le_bytes([
        lba0[DISK_SIGNATURE_OFFSET],
        lba0[DISK_SIGNATURE_OFFSET + 1],
        lba0[DISK_SIGNATURE_OFFSET + 2],
        lba0[DISK_SIGNATURE_OFFSET + 3],
    ]);
    let mut t = Table {
        table: PartitionTable::Mbr { disk_signature },
        partitions: Vec::new(),
        warnings: Vec::new(),
    };
    let mut extended = None;
    for (slot, e) in (1u32..).zip(entries.iter()) {
        if e.kind == 0 {
            continue;
        }
        if is_extended(e.kind) {
            if extended.is_some() {
                t.warnings.push(format!(
                    "partition {slot}: a second extended partition is ignored"
                ));
            } else {
                extended = Some((
                    slot,
                    u64::from(e.first_lba.get()),
                    u64::from(e.sectors.get()),
                ));
            }
            continue;
        }
        t.partitions.push((
            slot,
            from_mbr(e, Scheme::MbrPrimary, u64::from(e.first_lba.get())),
        ));
    }
    if let Some((slot, start, len)) = extended {
        read_logical(disk, sector, slot, start, len, &mut t)?;
    }
    Ok(t)
}

/// Follows the EBR chain of the extended partition `[start, start + len)` (sectors).
fn read_logical(
    disk: &VolumeReader<'_>,
    sector: u64,
    slot: u32,
    start: u64,
    len: u64,
    t: &mut Table,
) -> Result<()> {
    let end = start + len;
    let mut seen = HashSet::new();
    let mut ebr_lba = start;
    let mut number = 5u32;
    loop {
        let structure = format!("extended boot record of partition {slot}");
        if ebr_lba < start || ebr_lba >= end {
            return Err(Error::corrupt(
                structure,
                ebr_lba.saturating_mul(sector),
                "an extended boot record lies outside its extended partition",
            ));
        }
        if !seen.insert(ebr_lba) || seen.len() > MAX_LOGICAL {
            return Err(Error::corrupt(
                structure,
                ebr_lba.saturating_mul(sector),
                format!("the chain of logical partitions loops or is longer than {MAX_LOGICAL}"),
            ));
        }
        let byte = ebr_lba
            .checked_mul(sector)
            .filter(|b| b.checked_add(512).is_some_and(|e| e <= disk.len()));
        let Some(byte) = byte else {
            t.warnings.push(format!(
                "extended partition {slot}: an extended boot record lies past the end of the disk"
            ));
            return Ok(());
        };
        let mut ebr = [0u8; 512];
        disk.read_at(&mut ebr, byte)?;
        if ebr[510..512] != BOOT_SIGNATURE {
            if ebr.iter().all(|&b| b == 0) && ebr_lba == start {
                // An extended partition with no logical partition in it yet.
                return Ok(());
            }
            return Err(Error::corrupt(structure, byte, "no boot signature")
                .expected("55 aa")
                .found(format!("{:02x} {:02x}", ebr[510], ebr[511])));
        }
        let e = primary_entries(&ebr);
        if e[0].kind != 0 && e[0].sectors.get() > 0 {
            let first = ebr_lba + u64::from(e[0].first_lba.get());
            t.partitions
                .push((number, from_mbr(&e[0], Scheme::MbrLogical, first)));
            number += 1;
        }
        if e[1].kind == 0 || e[1].first_lba.get() == 0 {
            return Ok(());
        }
        if !is_extended(e[1].kind) {
            return Err(Error::corrupt(
                structure,
                byte + ENTRIES_OFFSET as u64 + 16,
                "the link to the next extended boot record has a non-extended type",
            )
            .found(format!("{:#04x}", e[1].kind)));
        }
        ebr_lba = start + u64::from(e[1].first_lba.get());
    }
}
