//! VHD parent locator entries (VHD spec "Dynamic Disk Header Format"; FORMATS.md B.6): eight
//! 24-byte entries in the dynamic header, each pointing at locator data elsewhere in the file.

use zerocopy::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Unused slot.
pub const PLATFORM_NONE: [u8; 4] = [0; 4];
/// Deprecated relative narrow-string path.
pub const PLATFORM_WI2R: [u8; 4] = *b"Wi2r";
/// Deprecated absolute narrow-string path.
pub const PLATFORM_WI2K: [u8; 4] = *b"Wi2k";
/// Windows path relative to the child, UTF-16 little-endian.
pub const PLATFORM_W2RU: [u8; 4] = *b"W2ru";
/// Absolute Windows path, UTF-16 little-endian.
pub const PLATFORM_W2KU: [u8; 4] = *b"W2ku";
/// Mac OS alias blob.
pub const PLATFORM_MAC: [u8; 4] = *b"Mac ";
/// UTF-8 `file://` URL.
pub const PLATFORM_MACX: [u8; 4] = *b"MacX";

/// One parent locator entry (24 bytes; FORMATS.md B.6).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ParentLocatorEntry {
    /// Platform code (`W2ru`, `W2ku`, `MacX`, …; zero for an unused slot).
    pub platform_code: [u8; 4],
    /// Space reserved for the data: sectors per the spec, bytes as Microsoft tools write it.
    pub platform_data_space: U32,
    /// Bytes of locator data.
    pub platform_data_length: U32,
    /// Zero.
    pub reserved: U32,
    /// Absolute file offset of the locator data.
    pub platform_data_offset: U64,
}
const _: () = assert!(core::mem::size_of::<ParentLocatorEntry>() == 24);

impl ParentLocatorEntry {
    /// Whether the slot is in use.
    pub fn is_used(&self) -> bool {
        self.platform_code != PLATFORM_NONE
    }

    /// The space reserved for the data in bytes. Older writers store it in sectors, newer
    /// ones (Microsoft's tools, blktap) in bytes; values below 512 are taken as sectors.
    pub fn data_space_bytes(&self) -> u64 {
        let space = u64::from(self.platform_data_space.get());
        if space < 512 {
            space * 512
        } else {
            space
        }
    }
}
