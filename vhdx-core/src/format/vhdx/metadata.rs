//! Metadata region: table and known items (MS-VHDX §2.6; FORMATS.md A.6).

use super::Guid;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of the metadata table at the start of the region.
pub const TABLE_SIZE: usize = 64 * 1024;
/// Signature `metadata`.
pub const SIGNATURE: [u8; 8] = *b"metadata";
/// Most entries the table may hold.
pub const MAX_ENTRIES: u16 = 2047;
/// Most user entries.
pub const MAX_USER_ENTRIES: usize = 1024;
/// Largest item.
pub const MAX_ITEM_LENGTH: u32 = 1 << 20;

/// Entry flag: user metadata.
pub const FLAG_IS_USER: u32 = 1;
/// Entry flag: belongs to the virtual disk.
pub const FLAG_IS_VIRTUAL_DISK: u32 = 2;
/// Entry flag: must be understood to open the file.
pub const FLAG_IS_REQUIRED: u32 = 4;

/// File Parameters item CAA16737-FA36-4D43-B3B6-33F0AA44E76B.
pub const FILE_PARAMETERS: Guid = Guid([
    0x37, 0x67, 0xA1, 0xCA, 0x36, 0xFA, 0x43, 0x4D, 0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B,
]);
/// Virtual Disk Size item 2FA54224-CD1B-4876-B211-5DBED83BF4B8.
pub const VIRTUAL_DISK_SIZE: Guid = Guid([
    0x24, 0x42, 0xA5, 0x2F, 0x1B, 0xCD, 0x76, 0x48, 0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8,
]);
/// Virtual Disk ID item BECA12AB-B2E6-4523-93EF-C309E000C746.
pub const VIRTUAL_DISK_ID: Guid = Guid([
    0xAB, 0x12, 0xCA, 0xBE, 0xE6, 0xB2, 0x23, 0x45, 0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46,
]);
/// Logical Sector Size item 8141BF1D-A96F-4709-BA47-F233A8FAAB5F.
pub const LOGICAL_SECTOR_SIZE: Guid = Guid([
    0x1D, 0xBF, 0x41, 0x81, 0x6F, 0xA9, 0x09, 0x47, 0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F,
]);
/// Physical Sector Size item CDA348C7-445D-4471-9CC9-E9885251C556.
pub const PHYSICAL_SECTOR_SIZE: Guid = Guid([
    0xC7, 0x48, 0xA3, 0xCD, 0x5D, 0x44, 0x71, 0x44, 0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56,
]);
/// Parent Locator item A8D35F2D-B30B-454D-ABF7-D3D84834AB0C.
pub const PARENT_LOCATOR: Guid = Guid([
    0x2D, 0x5F, 0xD3, 0xA8, 0x0B, 0xB3, 0x4D, 0x45, 0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C,
]);

/// Metadata table header (32 bytes).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct MetadataTableHeader {
    /// `metadata`.
    pub signature: [u8; 8],
    /// Zero.
    pub reserved: U16,
    /// Number of entries (≤ 2047).
    pub entry_count: U16,
    /// Zero.
    pub reserved2: [u8; 20],
}
const _: () = assert!(core::mem::size_of::<MetadataTableHeader>() == 32);

/// Metadata table entry (32 bytes).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct MetadataTableEntry {
    /// Item id.
    pub item_id: Guid,
    /// Offset from the region start (≥ 64 KiB, or 0 with length 0).
    pub offset: U32,
    /// Length (≤ 1 MiB).
    pub length: U32,
    /// IsUser, IsVirtualDisk, IsRequired bits.
    pub flags: U32,
    /// Zero.
    pub reserved2: U32,
}
const _: () = assert!(core::mem::size_of::<MetadataTableEntry>() == 32);

/// File Parameters item (8 bytes).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FileParameters {
    /// Payload block size (power of two, 1–256 MiB).
    pub block_size: U32,
    /// Bit 0 LeaveBlockAllocated, bit 1 HasParent.
    pub flags: U32,
}
const _: () = assert!(core::mem::size_of::<FileParameters>() == 8);

/// FileParameters flag: keep blocks allocated (fixed disks).
pub const LEAVE_BLOCK_ALLOCATED: u32 = 1;
/// FileParameters flag: differencing disk.
pub const HAS_PARENT: u32 = 2;

/// Virtual Disk Size item.
pub type VirtualDiskSize = U64;
/// Logical/Physical Sector Size items.
pub type SectorSize = U32;
