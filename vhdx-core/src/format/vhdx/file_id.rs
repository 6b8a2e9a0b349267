//! File type identifier (MS-VHDX §2.2.1; FORMATS.md A.3) at offset 0.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Offset of the file type identifier.
pub const OFFSET: u64 = 0;
/// Bytes of the identifier that carry data (signature + creator).
pub const SIZE: usize = 520;
/// Signature `vhdxfile`.
pub const SIGNATURE: [u8; 8] = *b"vhdxfile";

/// The file type identifier: signature and an optional UTF-16LE creator string.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FileIdentifier {
    /// `vhdxfile`.
    pub signature: [u8; 8],
    /// Creator, UTF-16LE, NUL-padded; diagnostic only.
    pub creator: [u8; 512],
}
const _: () = assert!(core::mem::size_of::<FileIdentifier>() == SIZE);

impl FileIdentifier {
    /// The creator string, up to the first NUL (lossy).
    pub fn creator(&self) -> Option<String> {
        let s = crate::format::utf16::decode_le(&self.creator);
        (!s.is_empty()).then_some(s)
    }
}
