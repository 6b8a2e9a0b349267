//! The two VHDX headers (MS-VHDX §2.2.2; FORMATS.md A.4), 4 KiB each at 64 KiB and 128 KiB.

use super::Guid;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// File offsets of header 1 and header 2.
pub const OFFSETS: [u64; 2] = [64 * 1024, 128 * 1024];
/// Bytes covered by the header checksum.
pub const SIZE: usize = 4096;
/// Signature `head`.
pub const SIGNATURE: [u8; 4] = *b"head";
/// Offset of the checksum field.
pub const CHECKSUM_FIELD: usize = 4;

/// A VHDX header (the full 4 KiB, reserved bytes included, since the CRC covers them).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    /// `head`.
    pub signature: [u8; 4],
    /// CRC-32C over the 4 KiB with this field zeroed.
    pub checksum: U32,
    /// Higher is newer.
    pub sequence_number: U64,
    /// Changes once per writing session.
    pub file_write_guid: Guid,
    /// Changes once per session that changes what a reader sees; children record it.
    pub data_write_guid: Guid,
    /// Nonzero when the log holds entries to replay.
    pub log_guid: Guid,
    /// Must be 0.
    pub log_version: U16,
    /// Must be 1.
    pub version: U16,
    /// Log length in bytes (multiple of 1 MiB).
    pub log_length: U32,
    /// Log offset in bytes (multiple of 1 MiB).
    pub log_offset: U64,
    /// Zero.
    pub reserved: [u8; 4016],
}
const _: () = assert!(core::mem::size_of::<Header>() == SIZE);

impl Header {
    /// The checksum computed over `bytes` (the header's 4 KiB) with the field zeroed.
    pub fn compute_checksum(bytes: &[u8; SIZE]) -> u32 {
        super::crc32c_with_zeroed_field(bytes, CHECKSUM_FIELD)
    }
}
