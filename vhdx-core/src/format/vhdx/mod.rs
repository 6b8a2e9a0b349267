//! VHDX on-disk structures (MS-VHDX; FORMATS.md part A). All integers little-endian.

pub mod bat;
pub mod file_id;
pub mod header;
pub mod log;
pub mod metadata;
pub mod parent_locator;
pub mod region;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// 1 MiB: the alignment unit of every VHDX object after the header section.
pub const MIB: u64 = 1 << 20;

/// A GUID in Microsoft mixed-endian byte order (Data1..Data3 little-endian).
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(transparent)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID as a [`uuid::Uuid`].
    pub fn to_uuid(self) -> uuid::Uuid {
        uuid::Uuid::from_bytes_le(self.0)
    }

    /// The on-disk form of `u`.
    pub fn from_uuid(u: uuid::Uuid) -> Self {
        Guid(u.to_bytes_le())
    }

    /// Whether all 16 bytes are zero.
    pub fn is_nil(self) -> bool {
        self.0 == [0; 16]
    }
}

impl std::fmt::Debug for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{{}}}", self.to_uuid())
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{{}}}", self.to_uuid())
    }
}

/// CRC-32C of `data` computed as if the 4-byte checksum field at `field` were zero.
pub fn crc32c_with_zeroed_field(data: &[u8], field: usize) -> u32 {
    let (before, rest) = data.split_at(field.min(data.len()));
    let after = rest.get(4..).unwrap_or(&[]);
    let c = crc32c::crc32c(before);
    let c = crc32c::crc32c_append(c, &[0u8; 4][..rest.len().min(4)]);
    crc32c::crc32c_append(c, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let mut d = b"abcdXXXXefgh".to_vec();
        let c = crc32c_with_zeroed_field(&d, 4);
        d[4..8].fill(0);
        assert_eq!(c, crc32c::crc32c(&d));
    }

    #[test]
    fn guid_byte_order() {
        // FORMATS.md A.1: the BAT region GUID's text and stored forms.
        let g = Guid([
            0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD,
            0x4A, 0x08,
        ]);
        assert_eq!(
            g.to_uuid().to_string().to_uppercase(),
            "2DC27766-F623-4200-9D64-115E9BFD4A08"
        );
    }
}
