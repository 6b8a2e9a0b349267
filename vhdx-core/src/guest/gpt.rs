//! The GUID partition table (UEFI specification, "GUID Partition Table (GPT) Disk Layout"):
//! a header at LBA 1 with a CRC32 over itself and one over the partition entry array, and a
//! backup header at the last LBA with its own copy of the array. The primary is used when
//! both its CRCs hold, else the backup; every field that sizes or places something is
//! checked against the disk before it is used, and the entry array is capped at
//! [`MAX_ENTRY_ARRAY`] bytes.

use super::partition::{gpt_type_name, Partition, PartitionTable, Scheme, Table};
use super::window::VolumeReader;
use crate::error::{Error, ErrorKind, Result};
use crate::format::utf16;
use crate::format::vhdx::Guid;
use serde::Serialize;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `EFI PART`.
pub const SIGNATURE: [u8; 8] = *b"EFI PART";
/// Offset of the header CRC field.
pub const HEADER_CRC_FIELD: usize = 16;
/// The smallest header size (the fields below).
pub const MIN_HEADER_SIZE: u32 = 92;
/// The smallest partition entry.
pub const MIN_ENTRY_SIZE: u32 = 128;
/// Largest entry array read (count × size); the usual one is 16 KiB.
pub const MAX_ENTRY_ARRAY: u64 = 1 << 20;

/// The GPT header (UEFI "GPT Header"); the rest of its sector is reserved.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct GptHeader {
    /// `EFI PART`.
    pub signature: [u8; 8],
    /// 0x00010000.
    pub revision: U32,
    /// Bytes covered by the header CRC (92 up to the sector size).
    pub header_size: U32,
    /// CRC32 of `header_size` bytes with this field zeroed.
    pub header_crc32: U32,
    /// Zero.
    pub reserved: U32,
    /// The LBA of this header.
    pub my_lba: U64,
    /// The LBA of the other header.
    pub alternate_lba: U64,
    /// First LBA partitions may use.
    pub first_usable_lba: U64,
    /// Last LBA partitions may use.
    pub last_usable_lba: U64,
    /// Disk GUID (mixed-endian).
    pub disk_guid: Guid,
    /// First LBA of this copy's partition entry array.
    pub partition_entry_lba: U64,
    /// Entries in the array.
    pub number_of_partition_entries: U32,
    /// Bytes per entry (128 × 2^n).
    pub size_of_partition_entry: U32,
    /// CRC32 of the whole entry array.
    pub partition_entry_array_crc32: U32,
}
const _: () = assert!(core::mem::size_of::<GptHeader>() == MIN_HEADER_SIZE as usize);

/// A GPT partition entry (the first 128 bytes; larger entries add reserved bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct GptEntry {
    /// Partition type GUID; all zeros = unused entry.
    pub partition_type_guid: Guid,
    /// Unique partition GUID.
    pub unique_partition_guid: Guid,
    /// First LBA.
    pub starting_lba: U64,
    /// Last LBA (inclusive).
    pub ending_lba: U64,
    /// Attribute bits.
    pub attributes: U64,
    /// Name, UTF-16LE, NUL-padded.
    pub partition_name: [u8; 72],
}
const _: () = assert!(core::mem::size_of::<GptEntry>() == MIN_ENTRY_SIZE as usize);

/// Which GPT header copy a table was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GptHeaderCopy {
    /// The header at LBA 1.
    Primary,
    /// The header at the last LBA (used when the primary is damaged).
    Backup,
}

/// CRC32 (IEEE) of `data` with the 4 bytes at `field` taken as zero.
pub(super) fn crc32_with_zeroed_field(data: &[u8], field: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let (before, rest) = data.split_at(field.min(data.len()));
    h.update(before);
    h.update(&[0u8; 4][..rest.len().min(4)]);
    h.update(rest.get(4..).unwrap_or(&[]));
    h.finalize()
}

/// A header and its entry array, both checked.
pub(super) struct GptCopy {
    pub(super) header: GptHeader,
    pub(super) entries: Vec<u8>,
}

/// Reads the GPT of `disk` (sector size `sector`). `Ok(None)` when neither LBA 1 nor the
/// last LBA carries the `EFI PART` signature; an error when a header is there but no copy
/// is valid.
pub fn read(disk: &VolumeReader<'_>, sector: u64) -> Result<Option<Table>> {
    if !(512..=65536).contains(&sector) || !sector.is_power_of_two() {
        return Err(Error::invalid_argument(format!(
            "logical sector size {sector}: expected a power of two from 512 to 65536"
        )));
    }
    let Some(last_lba) = (disk.len() / sector).checked_sub(1).filter(|&l| l >= 2) else {
        return Ok(None);
    };
    let primary = read_copy(disk, sector, 1, last_lba);
    let (copy, used, mut warnings) = match primary {
        Ok(Some(c)) => {
            let mut w = Vec::new();
            let alt = c.header.alternate_lba.get();
            match read_copy(disk, sector, alt, last_lba) {
                Ok(Some(_)) => {}
                Ok(None) => w.push(format!(
                    "the backup GPT header is missing (none at LBA {alt}, which the primary names)"
                )),
                Err(e) => w.push(format!("the backup GPT header is damaged: {e}")),
            }
            if alt != last_lba {
                w.push(format!(
                    "the backup GPT header is not at the last LBA ({alt} instead of {last_lba})"
                ));
            }
            (c, GptHeaderCopy::Primary, w)
        }
        Ok(None) => match read_copy(disk, sector, last_lba, last_lba)? {
            Some(c) => (
                c,
                GptHeaderCopy::Backup,
                vec!["no primary GPT header at LBA 1; the backup header is used".to_string()],
            ),
            None => return Ok(None),
        },
        Err(primary_err) => match read_copy(disk, sector, last_lba, last_lba) {
            Ok(Some(c)) => (
                c,
                GptHeaderCopy::Backup,
                vec![format!(
                    "the primary GPT is damaged ({primary_err}); the backup is used"
                )],
            ),
            _ => return Err(primary_err),
        },
    };
    let h = &copy.header;
    let mut partitions = Vec::new();
    let size = h.size_of_partition_entry.get() as usize;
    for (number, raw) in (1u32..).zip(copy.entries.chunks_exact(size)) {
        let Ok((e, _)) = GptEntry::read_from_prefix(raw) else {
            continue;
        };
        if e.partition_type_guid.is_nil() {
            continue;
        }
        let (first, last) = (e.starting_lba.get(), e.ending_lba.get());
        if first > last {
            return Err(Error::corrupt(
                "GPT partition entry",
                h.partition_entry_lba.get() * sector + u64::from(number - 1) * size as u64,
                format!("partition {number} ends (LBA {last}) before it starts (LBA {first})"),
            ));
        }
        if first < h.first_usable_lba.get() || last > h.last_usable_lba.get() {
            warnings.push(format!(
                "partition {number} (LBA {first}-{last}) lies outside the usable LBAs {}-{}",
                h.first_usable_lba.get(),
                h.last_usable_lba.get()
            ));
        }
        let type_guid = e.partition_type_guid.to_uuid();
        partitions.push((
            number,
            Partition {
                scheme: Scheme::Gpt,
                mbr_type: None,
                bootable: e.attributes.get() & 0b100 != 0,
                type_guid: Some(type_guid),
                unique_guid: Some(e.unique_partition_guid.to_uuid()),
                name: Some(utf16::decode_le(&e.partition_name)),
                attributes: e.attributes.get(),
                type_name: gpt_type_name(&type_guid),
                first_lba: first,
                sectors: last - first + 1,
            },
        ));
    }
    Ok(Some(Table {
        table: PartitionTable::Gpt {
            disk_guid: h.disk_guid.to_uuid(),
            header: used,
            first_usable_lba: h.first_usable_lba.get(),
            last_usable_lba: h.last_usable_lba.get(),
            entry_count: h.number_of_partition_entries.get(),
        },
        partitions,
        warnings,
    }))
}

/// Reads and checks the header at `lba` and its entry array. `Ok(None)` when the sector
/// does not carry the signature (or `lba` is not on the disk).
pub(super) fn read_copy(
    disk: &VolumeReader<'_>,
    sector: u64,
    lba: u64,
    last_lba: u64,
) -> Result<Option<GptCopy>> {
    if lba == 0 || lba > last_lba {
        return Ok(None);
    }
    let at = lba * sector;
    let which = if lba == 1 { "primary" } else { "backup" };
    let structure = format!("{which} GPT header");
    let mut buf = vec![0u8; sector as usize];
    disk.read_at(&mut buf, at)?;
    if buf[..8] != SIGNATURE {
        return Ok(None);
    }
    let bad = |msg: String| Error::corrupt(structure.clone(), at, msg);
    let Ok((h, _)) = GptHeader::read_from_prefix(&buf) else {
        return Err(bad("the sector is shorter than a GPT header".into()));
    };
    let hsize = h.header_size.get();
    if hsize < MIN_HEADER_SIZE || u64::from(hsize) > sector {
        return Err(bad("impossible header size".into())
            .expected(format!("{MIN_HEADER_SIZE}..={sector}"))
            .found(hsize));
    }
    let crc = crc32_with_zeroed_field(&buf[..hsize as usize], HEADER_CRC_FIELD);
    if crc != h.header_crc32.get() {
        return Err(bad("header CRC32 mismatch".into())
            .expected(format!("{crc:#010x}"))
            .found(format!("{:#010x}", h.header_crc32.get())));
    }
    if h.my_lba.get() != lba {
        return Err(bad("the header names another LBA as its own".into())
            .expected(lba)
            .found(h.my_lba.get()));
    }
    let (first, last) = (h.first_usable_lba.get(), h.last_usable_lba.get());
    if first > last || last > last_lba {
        return Err(bad(format!(
            "usable LBAs {first}-{last} do not fit a disk whose last LBA is {last_lba}"
        )));
    }
    let esize = h.size_of_partition_entry.get();
    if esize < MIN_ENTRY_SIZE || !esize.is_power_of_two() {
        return Err(bad("impossible partition entry size".into())
            .expected("128 × 2^n")
            .found(esize));
    }
    let count = h.number_of_partition_entries.get();
    let bytes = u64::from(count) * u64::from(esize);
    if bytes > MAX_ENTRY_ARRAY {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("a partition entry array of {bytes} bytes ({count} × {esize})"),
        )
        .structure(structure)
        .offset(at)
        .expected(format!("at most {MAX_ENTRY_ARRAY} bytes")));
    }
    let elba = h.partition_entry_lba.get();
    let eat = elba.checked_mul(sector);
    match eat.and_then(|b| b.checked_add(bytes)) {
        Some(end) if elba >= 1 && end <= disk.len() => {}
        _ => {
            return Err(bad(format!(
                "the partition entry array at LBA {elba} ({bytes} bytes) lies past the end of \
                 the disk"
            )))
        }
    }
    let eat = elba * sector;
    let mut entries = vec![0u8; bytes as usize];
    disk.read_at(&mut entries, eat)?;
    let crc = crc32_with_zeroed_field(&entries, usize::MAX);
    if crc != h.partition_entry_array_crc32.get() {
        return Err(Error::corrupt(
            format!("{which} GPT partition entry array"),
            eat,
            "entry array CRC32 mismatch",
        )
        .expected(format!("{crc:#010x}"))
        .found(format!("{:#010x}", h.partition_entry_array_crc32.get())));
    }
    Ok(Some(GptCopy { header: h, entries }))
}
