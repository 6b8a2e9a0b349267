//! What a change of the disk's size must respect inside the guest, and the partition-table
//! edits it needs (`vhdx resize`, like Hyper-V's `Resize-VHD`):
//! - no partition may be cut: a disk shrinks at most to the end of its last partition (MBR:
//!   extended containers included), and a GPT disk keeps room after it for the backup
//!   entry array and header;
//! - a GPT lives at both ends of the disk: after the size changes, the backup header must
//!   sit on the new last LBA, with its entry array just before it, and the primary header
//!   must name it (`AlternateLBA`) and the new last usable LBA; the protective MBR entry
//!   covers the new size. [`GptMove`] holds these writes, in the order that keeps a valid
//!   GPT at every step (see [`gpt_move`]).

use super::gpt::{self, GptHeader, HEADER_CRC_FIELD, SIGNATURE};
use super::mbr::{self, TYPE_GPT_PROTECTIVE};
use super::window::VolumeReader;
use crate::disk::VirtualDisk;
use crate::error::{Error, ErrorKind, Result};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

/// The partition layout a resize must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    /// The partition that ends last (its number, as [`super::partition::Table`] numbers
    /// them; 0 for an extended container) and its end in bytes.
    pub last_partition: Option<(u32, u64)>,
    /// Bytes a GPT needs after its last usable LBA: the backup entry array and header
    /// (0 without a GPT).
    pub gpt_tail: u64,
    /// Byte ranges `(start, end)` holding backup GPT copies where the primary header names
    /// one and on the last LBA: table structures, not data, when looking for the end of the
    /// used data.
    pub gpt_backups: Vec<(u64, u64)>,
}

impl Bounds {
    /// The smallest size that cuts no partition and leaves a GPT room for its backup.
    pub fn min_size(&self) -> u64 {
        self.last_partition
            .map_or(0, |(_, end)| end + self.gpt_tail)
    }

    /// Refuses `new_size` when it would cut a partition or leave a GPT no room for its
    /// backup.
    pub fn check(&self, new_size: u64) -> Result<()> {
        let Some((number, end)) = self.last_partition else {
            return Ok(());
        };
        if new_size >= end + self.gpt_tail {
            return Ok(());
        }
        let what = if number == 0 {
            "the extended partition".to_string()
        } else {
            format!("partition {number}")
        };
        let gpt = if self.gpt_tail > 0 {
            format!(
                ", and the GPT needs {} bytes after it for its backup copy",
                self.gpt_tail
            )
        } else {
            String::new()
        };
        Err(Error::invalid_argument(format!(
            "cannot shrink to {new_size} bytes: {what} ends at offset {end}{gpt}; shrink the \
             partition first (in the guest), or use `--to-minimum`"
        ))
        .expected(format!("at least {}", end + self.gpt_tail))
        .found(new_size))
    }
}

/// Reads the partition table of `disk` and the bounds it sets (none without a table).
pub fn bounds(disk: &dyn VirtualDisk) -> Result<Bounds> {
    let mut b = Bounds {
        last_partition: None,
        gpt_tail: 0,
        gpt_backups: Vec::new(),
    };
    let Some(table) = super::partition::read_table(disk)? else {
        return Ok(b);
    };
    let sector = u64::from(disk.logical_sector_size());
    let mut note = |number: u32, end: u64| {
        if b.last_partition.is_none_or(|(_, e)| end > e) {
            b.last_partition = Some((number, end));
        }
    };
    for (number, p) in &table.partitions {
        note(*number, (p.first_lba + p.sectors) * sector);
    }
    let whole = VolumeReader::whole(disk);
    let mut lba0 = [0u8; 512];
    whole.read_at(&mut lba0, 0)?;
    for e in mbr::primary_entries(&lba0) {
        if mbr::is_extended(e.kind) {
            note(
                0,
                (u64::from(e.first_lba.get()) + u64::from(e.sectors.get())) * sector,
            );
        }
    }
    if let Some(primary) = primary_gpt(disk)? {
        let h = &primary.header;
        let array = array_sectors(h, sector);
        b.gpt_tail = (array + 1) * sector;
        let last = disk.size() / sector - 1;
        for lba in [h.alternate_lba.get(), last] {
            if lba > array && lba <= last {
                b.gpt_backups
                    .push(((lba - array) * sector, (lba + 1) * sector));
            }
        }
    }
    Ok(b)
}

/// The primary GPT of `disk`, checked; `None` when the disk has no GPT. A GPT whose primary
/// copy is damaged or missing (only the backup is valid) is refused: rewriting it for a new
/// size would rebuild the primary from the backup, which is a repair to make on purpose.
fn primary_gpt(disk: &dyn VirtualDisk) -> Result<Option<gpt::GptCopy>> {
    let sector = u64::from(disk.logical_sector_size());
    let whole = VolumeReader::whole(disk);
    let Some(last) = (whole.len() / sector).checked_sub(1).filter(|&l| l >= 2) else {
        return Ok(None);
    };
    match gpt::read_copy(&whole, sector, 1, last)? {
        Some(c) => Ok(Some(c)),
        None => match gpt::read_copy(&whole, sector, last, last) {
            Ok(Some(_)) => Err(Error::new(
                ErrorKind::Unsupported,
                "the primary GPT header is missing (only the backup at the last LBA is valid): \
                 repair the partition table (e.g. `sgdisk -e`) before resizing",
            )
            .structure("primary GPT header")
            .offset(sector)),
            _ => Ok(None),
        },
    }
}

/// Sectors of the entry array `h` describes.
fn array_sectors(h: &GptHeader, sector: u64) -> u64 {
    (u64::from(h.number_of_partition_entries.get()) * u64::from(h.size_of_partition_entry.get()))
        .div_ceil(sector)
}

/// The partition-table writes a GPT disk needs when its size becomes `new_size`, in three
/// steps that each leave a valid GPT behind: the new backup copy (entry array, then header
/// on the new last LBA; on a shrink this lies inside the old size, past the last usable
/// LBA), then the primary header naming it and the protective MBR covering the new size,
/// then (on a grow) the old backup copy's sectors zeroed, as they now lie inside the usable
/// space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptMove {
    /// `(offset, bytes)` of the new backup entry array and header.
    pub backup: Vec<(u64, Vec<u8>)>,
    /// `(offset, bytes)` of the primary header and, when it is a plain protective MBR, of
    /// sector 0.
    pub primary: Vec<(u64, Vec<u8>)>,
    /// `(offset, length)` of the old backup copy, when it stays inside the disk.
    pub stale: Option<(u64, u64)>,
}

/// The writes that fit the GPT of `disk` to a disk of `new_size` bytes (see [`GptMove`]);
/// `None` when the disk has no GPT or it already fits. The last usable LBA becomes the last
/// LBA before the backup array (the whole new size is usable, as Windows and `sgdisk -e`
/// leave it); a shrink that would cut a partition is refused ([`Bounds::check`] says so
/// first).
pub fn gpt_move(disk: &dyn VirtualDisk, new_size: u64) -> Result<Option<GptMove>> {
    let sector = u64::from(disk.logical_sector_size());
    let Some(primary) = primary_gpt(disk)? else {
        return Ok(None);
    };
    let mut h = primary.header;
    let array = array_sectors(&h, sector);
    let new_last = new_size / sector - 1;
    let old_alt = h.alternate_lba.get();
    let last_usable = new_last
        .checked_sub(array + 1)
        .filter(|&l| l >= h.first_usable_lba.get())
        .ok_or_else(|| {
            Error::invalid_argument(format!(
                "a disk of {new_size} bytes is too small for its GPT ({array} entry-array \
                 sectors at each end)"
            ))
        })?;
    let cut = used_lba_end(&primary);
    if cut > last_usable + 1 {
        return Err(Error::invalid_argument(format!(
            "cannot resize to {new_size} bytes: a GPT partition ends at LBA {}, past the new \
             last usable LBA {last_usable}",
            cut - 1
        )));
    }
    let whole = VolumeReader::whole(disk);
    let in_place = old_alt == new_last
        && h.last_usable_lba.get() == last_usable
        && matches!(
            gpt::read_copy(&whole, sector, new_last, new_last),
            Ok(Some(_))
        )
        && protective_mbr(disk, new_size)?.is_none();
    if in_place {
        return Ok(None);
    }
    h.alternate_lba = U64::new(new_last);
    h.last_usable_lba = U64::new(last_usable);
    let primary_header = sealed(h, sector);
    let mut backup = h;
    backup.my_lba = U64::new(new_last);
    backup.alternate_lba = U64::new(1);
    backup.partition_entry_lba = U64::new(new_last - array);
    let mut entries = primary.entries.clone();
    entries.resize((array * sector) as usize, 0);
    let mut primary_writes = vec![(sector, primary_header)];
    if let Some(mbr) = protective_mbr(disk, new_size)? {
        primary_writes.push((0, mbr));
    }
    // On a grow the old backup copy now lies inside the usable space; on a shrink it is
    // cut off with the end of the disk.
    let stale = (old_alt != new_last && old_alt > array && (old_alt + 1) * sector <= new_size)
        .then(|| ((old_alt - array) * sector, (array + 1) * sector));
    Ok(Some(GptMove {
        backup: vec![
            ((new_last - array) * sector, entries),
            (new_last * sector, sealed(backup, sector)),
        ],
        primary: primary_writes,
        stale,
    }))
}

/// One past the last LBA a used entry of `copy` covers (0 when there is none).
fn used_lba_end(copy: &gpt::GptCopy) -> u64 {
    let size = copy.header.size_of_partition_entry.get() as usize;
    copy.entries
        .chunks_exact(size)
        .filter_map(|raw| gpt::GptEntry::read_from_prefix(raw).ok().map(|(e, _)| e))
        .filter(|e| !e.partition_type_guid.is_nil())
        .map(|e| e.ending_lba.get().saturating_add(1))
        .max()
        .unwrap_or(0)
}

/// `h` with its CRC set, as one sector (the rest zeros).
fn sealed(mut h: GptHeader, sector: u64) -> Vec<u8> {
    h.header_crc32 = U32::new(0);
    let mut out = vec![0u8; sector as usize];
    out[..h.as_bytes().len()].copy_from_slice(h.as_bytes());
    let hsize = (h.header_size.get() as usize).min(out.len());
    let crc = gpt::crc32_with_zeroed_field(&out[..hsize], HEADER_CRC_FIELD);
    out[HEADER_CRC_FIELD..HEADER_CRC_FIELD + 4].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out[..8], SIGNATURE);
    out
}

/// Sector 0 with its protective entry covering a disk of `new_size` bytes, when sector 0 is
/// a plain protective MBR (one 0xEE entry from LBA 1, the others empty) whose entry does
/// not cover it yet; `None` otherwise (a hybrid MBR is left as it is).
fn protective_mbr(disk: &dyn VirtualDisk, new_size: u64) -> Result<Option<Vec<u8>>> {
    let sector = u64::from(disk.logical_sector_size());
    let mut lba0 = [0u8; 512];
    VolumeReader::whole(disk).read_at(&mut lba0, 0)?;
    if lba0[510..512] != mbr::BOOT_SIGNATURE {
        return Ok(None);
    }
    let entries = mbr::primary_entries(&lba0);
    let protective: Vec<usize> = (0..4).filter(|&i| entries[i].kind != 0).collect();
    let [i] = protective[..] else {
        return Ok(None);
    };
    let e = entries[i];
    if e.kind != TYPE_GPT_PROTECTIVE || e.first_lba.get() != 1 {
        return Ok(None);
    }
    let want = u32::try_from(new_size / sector - 1).unwrap_or(u32::MAX);
    if e.sectors.get() == want {
        return Ok(None);
    }
    let mut out = vec![0u8; sector as usize];
    let mut s0 = vec![0u8; sector as usize];
    VolumeReader::whole(disk).read_at(&mut s0, 0)?;
    out.copy_from_slice(&s0);
    let at = mbr::ENTRIES_OFFSET + 16 * i + 12;
    out[at..at + 4].copy_from_slice(&want.to_le_bytes());
    Ok(Some(out))
}
