//! VHDX parent locator item (MS-VHDX §2.6.2.6; FORMATS.md A.6.6): a header, key/value entries,
//! and UTF-16LE strings addressed by offset from the item start.

use super::Guid;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Locator type of VHDX parents B04AEFB7-D19E-4A81-B789-25B8E9445913.
pub const VHDX_LOCATOR_TYPE: Guid = Guid([
    0xB7, 0xEF, 0x4A, 0xB0, 0x9E, 0xD1, 0x81, 0x4A, 0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13,
]);

/// Parent locator header (20 bytes).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ParentLocatorHeader {
    /// Locator type.
    pub locator_type: Guid,
    /// Zero.
    pub reserved: U16,
    /// Number of key/value entries.
    pub key_value_count: U16,
}
const _: () = assert!(core::mem::size_of::<ParentLocatorHeader>() == 20);

/// Parent locator key/value entry (12 bytes).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct KeyValueEntry {
    /// Key offset from the item start.
    pub key_offset: U32,
    /// Value offset from the item start.
    pub value_offset: U32,
    /// Key length in bytes.
    pub key_length: U16,
    /// Value length in bytes.
    pub value_length: U16,
}
const _: () = assert!(core::mem::size_of::<KeyValueEntry>() == 12);
