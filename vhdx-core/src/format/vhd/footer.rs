//! The VHD hard disk footer (VHD spec "Hard Disk Footer Format"; FORMATS.md B.2): 512 bytes at
//! the end of every VHD, copied at offset 0 in dynamic and differencing files.

use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of the footer.
pub const SIZE: usize = 512;
/// Size of the footer written by pre-2004 Virtual PC (the last reserved byte is missing).
pub const LEGACY_SIZE: usize = 511;
/// Cookie `conectix`.
pub const COOKIE: [u8; 8] = *b"conectix";
/// Offset of the checksum field.
pub const CHECKSUM_FIELD: usize = 64;
/// Features bit 1: reserved, always set.
pub const FEATURE_RESERVED: u32 = 0x2;
/// Features bit 0: temporary disk.
pub const FEATURE_TEMPORARY: u32 = 0x1;
/// DataOffset of a fixed disk (all ones; the spec text says 32 bits, tools write 64).
pub const FIXED_DATA_OFFSET: u64 = u64::MAX;

/// DiskType: no disk.
pub const DISK_TYPE_NONE: u32 = 0;
/// DiskType: fixed.
pub const DISK_TYPE_FIXED: u32 = 2;
/// DiskType: dynamic.
pub const DISK_TYPE_DYNAMIC: u32 = 3;
/// DiskType: differencing.
pub const DISK_TYPE_DIFFERENCING: u32 = 4;

/// The 512-byte VHD footer (FORMATS.md B.2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Footer {
    /// `conectix`.
    pub cookie: [u8; 8],
    /// Bit 0 temporary, bit 1 reserved (set).
    pub features: U32,
    /// 0x00010000: major version in the high 16 bits.
    pub file_format_version: U32,
    /// Absolute offset of the dynamic header; all ones for fixed disks.
    pub data_offset: U64,
    /// Creation time, seconds since 2000-01-01 UTC.
    pub timestamp: U32,
    /// Creator application (`win `, `qemu`, `vpc `, …; FORMATS.md B.3).
    pub creator_application: [u8; 4],
    /// Creator version, major:minor as u16:u16.
    pub creator_version: U32,
    /// Creator host OS (`Wi2k`, `Mac `).
    pub creator_host_os: [u8; 4],
    /// Size at creation in bytes.
    pub original_size: U64,
    /// Current virtual size in bytes.
    pub current_size: U64,
    /// CHS geometry: cylinders.
    pub cylinders: U16,
    /// CHS geometry: heads.
    pub heads: u8,
    /// CHS geometry: sectors per track.
    pub sectors_per_track: u8,
    /// 2 fixed, 3 dynamic, 4 differencing.
    pub disk_type: U32,
    /// VHD checksum of the 512 bytes with this field zeroed.
    pub checksum: U32,
    /// Disk identity (raw RFC 4122 byte order); children record it as ParentUniqueId.
    pub unique_id: [u8; 16],
    /// 1 when the VM is in a saved state.
    pub saved_state: u8,
    /// Zero.
    pub reserved: [u8; 427],
}
const _: () = assert!(core::mem::size_of::<Footer>() == SIZE);

impl Footer {
    /// The checksum computed over `bytes` (the footer's 512 bytes) with the field zeroed.
    pub fn compute_checksum(bytes: &[u8; SIZE]) -> u32 {
        super::checksum(bytes, CHECKSUM_FIELD)
    }

    /// Whether the stored checksum matches the contents.
    pub fn checksum_ok(&self) -> bool {
        let mut b = [0u8; SIZE];
        b.copy_from_slice(self.as_bytes());
        Self::compute_checksum(&b) == self.checksum.get()
    }

    /// Whether the cookie is `conectix`.
    pub fn cookie_ok(&self) -> bool {
        self.cookie == COOKIE
    }

    /// The CHS geometry fields.
    pub fn chs(&self) -> super::Chs {
        super::Chs {
            cylinders: self.cylinders.get(),
            heads: self.heads,
            sectors_per_track: self.sectors_per_track,
        }
    }
}

/// A printable form of a 4-byte code (`"win "`, `"tap\0"` shown as `tap\0`).
pub fn code_text(code: [u8; 4]) -> String {
    code.iter()
        .map(|&b| match b {
            0 => "\\0".to_string(),
            0x20..=0x7E => (b as char).to_string(),
            _ => format!("\\x{b:02x}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn checksum_round_trip() {
        let mut f = Footer::new_zeroed();
        f.cookie = COOKIE;
        f.disk_type.set(DISK_TYPE_DYNAMIC);
        f.current_size.set(100 << 20);
        assert!(!f.checksum_ok() || f.checksum.get() == 0);
        let mut b = [0u8; SIZE];
        b.copy_from_slice(f.as_bytes());
        f.checksum.set(Footer::compute_checksum(&b));
        assert!(f.checksum_ok());
        f.saved_state = 1;
        assert!(!f.checksum_ok());
    }

    #[test]
    fn codes_print() {
        assert_eq!(code_text(*b"win "), "win ");
        assert_eq!(code_text(*b"tap\0"), "tap\\0");
        assert_eq!(code_text([0xFF, b'a', b'b', b'c']), "\\xffabc");
    }
}
