//! VHDX log structures (MS-VHDX §2.3; FORMATS.md A.10).
//!
//! The log is a circular buffer of 4 KiB sectors. An *entry* is one or more descriptor
//! sectors (the first starts with an [`EntryHeader`], followed by 32-byte descriptors) and then
//! one [`DataSector`] per [`DataDescriptor`], in descriptor order. All integers are
//! little-endian; these types only describe bytes and do no I/O.

use super::Guid;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The log's unit: entries, descriptor sectors and data sectors are 4 KiB.
pub const SECTOR: usize = 4096;
/// Signature of an entry header, `loge`.
pub const ENTRY_SIGNATURE: [u8; 4] = *b"loge";
/// Signature of a zero descriptor, `zero`.
pub const ZERO_SIGNATURE: [u8; 4] = *b"zero";
/// Signature of a data descriptor, `desc`.
pub const DATA_DESC_SIGNATURE: [u8; 4] = *b"desc";
/// Signature of a data sector, `data`.
pub const DATA_SIGNATURE: [u8; 4] = *b"data";
/// Offset of the checksum field in the entry header (the CRC covers the whole entry).
pub const CHECKSUM_FIELD: usize = 4;
/// Size of the entry header.
pub const ENTRY_HEADER_SIZE: usize = 64;
/// Size of one descriptor.
pub const DESCRIPTOR_SIZE: usize = 32;
/// Descriptors per descriptor sector (the first sector holds the header plus 126 of them).
pub const DESCRIPTORS_PER_SECTOR: u64 = (SECTOR / DESCRIPTOR_SIZE) as u64;
/// Bytes of a data sector that carry target bytes 8..4092.
pub const DATA_PAYLOAD: usize = 4084;

/// Number of descriptor sectors an entry with `descriptor_count` descriptors occupies:
/// `ceil((count + 2) / 128)`, the header taking the room of two descriptors.
pub fn descriptor_sectors(descriptor_count: u32) -> u64 {
    (u64::from(descriptor_count) + 2).div_ceil(DESCRIPTORS_PER_SECTOR)
}

/// The 64-byte header at the start of every log entry.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct EntryHeader {
    /// `loge`.
    pub signature: [u8; 4],
    /// CRC-32C over the whole entry (EntryLength bytes) with this field zeroed.
    pub checksum: U32,
    /// Length of the entry in bytes: a nonzero multiple of 4 KiB, at most the log length.
    pub entry_length: U32,
    /// Log-relative offset of the first entry of the sequence this entry ends.
    pub tail: U32,
    /// Nonzero; each entry of a sequence is the previous one plus one.
    pub sequence_number: U64,
    /// Number of descriptors (zero and data) in the entry; may be 0.
    pub descriptor_count: U32,
    /// Zero.
    pub reserved: U32,
    /// Must equal the LogGuid of the current header.
    pub log_guid: Guid,
    /// A file size known to be stable on disk when the entry was written (multiple of 1 MiB).
    pub flushed_file_offset: U64,
    /// A file size enclosing every allocated structure (multiple of 1 MiB).
    pub last_file_offset: U64,
}
const _: () = assert!(core::mem::size_of::<EntryHeader>() == ENTRY_HEADER_SIZE);

/// A zero descriptor: `ZeroLength` bytes at `FileOffset` become zero.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ZeroDescriptor {
    /// `zero`.
    pub signature: [u8; 4],
    /// Zero.
    pub reserved: U32,
    /// Bytes to zero; a multiple of 4 KiB.
    pub zero_length: U64,
    /// Where the zeroing starts; a multiple of 4 KiB.
    pub file_offset: U64,
    /// The entry's sequence number.
    pub sequence_number: U64,
}
const _: () = assert!(core::mem::size_of::<ZeroDescriptor>() == DESCRIPTOR_SIZE);

/// A data descriptor: one 4 KiB sector at `FileOffset` is replaced by
/// `LeadingBytes ‖ data sector bytes 8..4092 ‖ TrailingBytes`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DataDescriptor {
    /// `desc`.
    pub signature: [u8; 4],
    /// Bytes 4092..4096 of the target sector.
    pub trailing_bytes: [u8; 4],
    /// Bytes 0..8 of the target sector.
    pub leading_bytes: [u8; 8],
    /// The target sector; a multiple of 4 KiB.
    pub file_offset: U64,
    /// The entry's sequence number.
    pub sequence_number: U64,
}
const _: () = assert!(core::mem::size_of::<DataDescriptor>() == DESCRIPTOR_SIZE);

/// A data sector: bytes 8..4092 of one target sector, framed by the split sequence number.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DataSector {
    /// `data`.
    pub signature: [u8; 4],
    /// Upper 32 bits of the entry's sequence number.
    pub sequence_high: U32,
    /// Bytes 8..4092 of the target sector.
    pub data: [u8; DATA_PAYLOAD],
    /// Lower 32 bits of the entry's sequence number.
    pub sequence_low: U32,
}
const _: () = assert!(core::mem::size_of::<DataSector>() == SECTOR);

impl DataSector {
    /// The sequence number recorded in the sector, `(high << 32) | low`.
    pub fn sequence_number(&self) -> u64 {
        (u64::from(self.sequence_high.get()) << 32) | u64::from(self.sequence_low.get())
    }
}

impl std::fmt::Debug for DataSector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataSector")
            .field("signature", &self.signature)
            .field("sequence_number", &self.sequence_number())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_sector_counts() {
        assert_eq!(descriptor_sectors(0), 1);
        assert_eq!(descriptor_sectors(126), 1);
        assert_eq!(descriptor_sectors(127), 2);
        assert_eq!(descriptor_sectors(254), 2);
        assert_eq!(descriptor_sectors(255), 3);
        assert_eq!(
            descriptor_sectors(u32::MAX),
            (u64::from(u32::MAX) + 2).div_ceil(128)
        );
    }
}
