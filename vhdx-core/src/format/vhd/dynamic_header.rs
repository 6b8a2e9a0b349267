//! The VHD dynamic disk header (VHD spec "Dynamic Disk Header Format"; FORMATS.md B.6): 1024
//! bytes at the footer's DataOffset in dynamic and differencing files.

use super::parent_locator::ParentLocatorEntry;
use zerocopy::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of the header.
pub const SIZE: usize = 1024;
/// Cookie `cxsparse`.
pub const COOKIE: [u8; 8] = *b"cxsparse";
/// Offset of the checksum field.
pub const CHECKSUM_FIELD: usize = 36;
/// The only header version.
pub const HEADER_VERSION: u32 = 0x0001_0000;
/// BAT entry of an unallocated block.
pub const BAT_UNALLOCATED: u32 = 0xFFFF_FFFF;
/// Number of parent locator entries.
pub const LOCATOR_COUNT: usize = 8;

/// The 1024-byte dynamic disk header (FORMATS.md B.6).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DynamicHeader {
    /// `cxsparse`.
    pub cookie: [u8; 8],
    /// Unused; all ones.
    pub data_offset: U64,
    /// Absolute file offset of the BAT.
    pub table_offset: U64,
    /// 0x00010000.
    pub header_version: U32,
    /// Entries in the BAT.
    pub max_table_entries: U32,
    /// Data bytes per block (the sector bitmap excluded); a power-of-two number of sectors.
    pub block_size: U32,
    /// VHD checksum of the 1024 bytes with this field zeroed.
    pub checksum: U32,
    /// Differencing: the parent footer's UniqueId.
    pub parent_unique_id: [u8; 16],
    /// Differencing: the parent's modification time (seconds since 2000-01-01 UTC).
    pub parent_timestamp: U32,
    /// Zero.
    pub reserved1: U32,
    /// Differencing: the parent file name, UTF-16 big-endian, NUL padded.
    pub parent_unicode_name: [u8; 512],
    /// Parent locator entries.
    pub parent_locators: [ParentLocatorEntry; LOCATOR_COUNT],
    /// Zero.
    pub reserved2: [u8; 256],
}
const _: () = assert!(core::mem::size_of::<DynamicHeader>() == SIZE);

impl DynamicHeader {
    /// The checksum computed over `bytes` (the header's 1024 bytes) with the field zeroed.
    pub fn compute_checksum(bytes: &[u8; SIZE]) -> u32 {
        super::checksum(bytes, CHECKSUM_FIELD)
    }

    /// Whether the stored checksum matches the contents.
    pub fn checksum_ok(&self) -> bool {
        let mut b = [0u8; SIZE];
        b.copy_from_slice(self.as_bytes());
        Self::compute_checksum(&b) == self.checksum.get()
    }
}
