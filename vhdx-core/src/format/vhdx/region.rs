//! Region tables (MS-VHDX §2.2.3; FORMATS.md A.5), 64 KiB each at 192 KiB and 256 KiB.

use super::Guid;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// File offsets of the two copies.
pub const OFFSETS: [u64; 2] = [192 * 1024, 256 * 1024];
/// Size of one copy (covered by the checksum).
pub const SIZE: usize = 64 * 1024;
/// Signature `regi`.
pub const SIGNATURE: [u8; 4] = *b"regi";
/// Offset of the checksum field.
pub const CHECKSUM_FIELD: usize = 4;
/// Most entries a table may hold.
pub const MAX_ENTRIES: u32 = 2047;

/// BAT region GUID 2DC27766-F623-4200-9D64-115E9BFD4A08.
pub const BAT_GUID: Guid = Guid([
    0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08,
]);
/// Metadata region GUID 8B7CA206-4790-4B9A-B8FE-575F050F886E.
pub const METADATA_GUID: Guid = Guid([
    0x06, 0xA2, 0x7C, 0x8B, 0x90, 0x47, 0x9A, 0x4B, 0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E,
]);

/// Region table header (16 bytes).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RegionTableHeader {
    /// `regi`.
    pub signature: [u8; 4],
    /// CRC-32C over the 64 KiB table with this field zeroed.
    pub checksum: U32,
    /// Number of entries (≤ 2047).
    pub entry_count: U32,
    /// Zero.
    pub reserved: U32,
}
const _: () = assert!(core::mem::size_of::<RegionTableHeader>() == 16);

/// Region table entry (32 bytes).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RegionTableEntry {
    /// Region type.
    pub guid: Guid,
    /// File offset (1 MiB multiple, ≥ 1 MiB).
    pub file_offset: U64,
    /// Length (1 MiB multiple).
    pub length: U32,
    /// Bit 0: required.
    pub required: U32,
}
const _: () = assert!(core::mem::size_of::<RegionTableEntry>() == 32);
