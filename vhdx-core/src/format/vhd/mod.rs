//! VHD on-disk structures (VHD spec; FORMATS.md part B). All integers big-endian.
//!
//! Only layouts, constants and pure helpers live here: the checksum (B.1), the CHS geometry
//! algorithm (B.4) and the sector-bitmap size (B.7). Validation and I/O are in [`crate::vhd`].

pub mod dynamic_header;
pub mod footer;
pub mod parent_locator;

/// Bytes per VHD sector (FORMATS.md B.1).
pub const SECTOR: u64 = 512;

/// Largest dynamic/differencing virtual size: 2040 GiB = 0xFF000000 sectors (FORMATS.md B.8).
pub const MAX_DYNAMIC_SIZE: u64 = 0xFF00_0000 * SECTOR;

/// Largest CHS geometry: 65535 cylinders × 16 heads × 255 sectors per track (FORMATS.md B.4).
pub const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;

/// Unix time of the VHD epoch, 2000-01-01 00:00:00 UTC (FORMATS.md B.1).
pub const EPOCH_UNIX: u64 = 946_684_800;

/// The VHD checksum of `data` (FORMATS.md B.1): the bitwise NOT of the wrapping u32 sum of
/// every byte, computed as if the 4-byte checksum field at `field` were zero.
pub fn checksum(data: &[u8], field: usize) -> u32 {
    let skip = field..field.saturating_add(4);
    let sum = data
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

/// A cylinder/head/sector geometry as stored in the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chs {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
}

impl Chs {
    /// Sectors the geometry addresses (C × H × S).
    pub fn sectors(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }
}

/// The VHD-spec CHS geometry for a disk of `total_sectors` 512-byte sectors (FORMATS.md B.4).
///
/// All divisions truncate, so the product never exceeds `total_sectors` (QEMU instead searches
/// upwards for a geometry covering the requested size when it creates an image).
pub fn chs_geometry(total_sectors: u64) -> Chs {
    let total = total_sectors.min(MAX_CHS_SECTORS);
    let (spt, heads, cth) = if total >= 65535 * 16 * 63 {
        (255u64, 16u64, total / 255)
    } else {
        let mut spt = 17u64;
        let mut cth = total / spt;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
        (spt, heads, cth)
    };
    // Clamping keeps every value in range: cth / heads ≤ 65535, heads ≤ 16, spt ≤ 255.
    Chs {
        cylinders: u16::try_from(cth / heads).unwrap_or(u16::MAX),
        heads: u8::try_from(heads).unwrap_or(u8::MAX),
        sectors_per_track: u8::try_from(spt).unwrap_or(u8::MAX),
    }
}

/// Bytes of the sector bitmap in front of each data block of `block_size` bytes:
/// `round_up(ceil(spb / 8), 512)` with spb = `block_size / 512` (FORMATS.md B.7).
pub fn bitmap_bytes(block_size: u32) -> u64 {
    let spb = u64::from(block_size) / SECTOR;
    spb.div_ceil(8).div_ceil(SECTOR) * SECTOR
}

/// Whether sector `index` of a block is marked present in its bitmap `bits` (MSB first:
/// sector 0 is bit 0x80 of byte 0; FORMATS.md B.7). Out-of-range indexes read as absent.
pub fn bitmap_bit(bits: &[u8], index: u64) -> bool {
    usize::try_from(index / 8)
        .ok()
        .and_then(|i| bits.get(i))
        .is_some_and(|b| b & (0x80 >> (index % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_known_bytes() {
        // Sum 1+2+3 = 6 with the field (bytes 3..7) skipped; NOT 6 = 0xFFFFFFF9.
        let d = [1u8, 2, 3, 0xAA, 0xBB, 0xCC, 0xDD];
        assert_eq!(checksum(&d, 3), 0xFFFF_FFF9);
        assert_eq!(checksum(&[], 0), 0xFFFF_FFFF);
        // A field at the very end, partly past the data.
        assert_eq!(checksum(&[1, 1, 9], 2), !2);
    }

    #[test]
    fn checksum_of_a_footer() {
        // A zero footer with cookie and disk type 3: sum of "conectix" bytes + 3.
        let mut f = [0u8; 512];
        f[..8].copy_from_slice(b"conectix");
        f[63] = 3;
        f[64..68].copy_from_slice(&[0xFF; 4]); // ignored
        let sum: u32 = b"conectix".iter().map(|&b| u32::from(b)).sum::<u32>() + 3;
        assert_eq!(checksum(&f, 64), !sum);
    }

    fn chs(c: u16, h: u8, s: u8) -> Chs {
        Chs {
            cylinders: c,
            heads: h,
            sectors_per_track: s,
        }
    }

    #[test]
    fn chs_examples_worked_by_hand() {
        // 100 MiB = 204800 sectors: cth = 204800/17 = 12047, heads = ceil(12047/1024) = 12,
        // cylinders = 12047/12 = 1003.
        assert_eq!(chs_geometry(204_800), chs(1003, 12, 17));
        // 4 MiB = 8192: cth = 481, heads 1 → 4, cylinders 120 (fat-differential.vhd).
        assert_eq!(chs_geometry(8192), chs(120, 4, 17));
        // 8228 sectors: cth = 484, cylinders 121 (ext2.vhd); 204 sectors → 3/4/17 (image.vhd).
        assert_eq!(chs_geometry(8228), chs(121, 4, 17));
        assert_eq!(chs_geometry(204), chs(3, 4, 17));
        // 300000: cth17 = 17647 → 18 heads > 16 → spt 31, cth = 9677 < 16384, cyl = 604.
        assert_eq!(chs_geometry(300_000), chs(604, 16, 31));
        // 1 GiB = 2097152: spt 17 → 121 heads; spt 31 → cth 67650 ≥ 16384; spt 63 →
        // cth 33288, cylinders 2080.
        assert_eq!(chs_geometry(2_097_152), chs(2080, 16, 63));
        // At and above 65535·16·63 sectors the geometry switches to 255 sectors per track.
        // 66059280 / 255 = 259056 → 16191 cylinders; one sector less stays at 63 spt
        // (cth = 66059279 / 63 = 1048559 → 65534 cylinders).
        assert_eq!(chs_geometry(65535 * 16 * 63), chs(16191, 16, 255));
        assert_eq!(chs_geometry(65535 * 16 * 63 - 1), chs(65534, 16, 63));
        // Clamped at the maximum.
        assert_eq!(chs_geometry(u64::MAX), chs(65535, 16, 255));
        assert_eq!(chs_geometry(0), chs(0, 4, 17));
        for t in [1u64, 17, 1000, 204_800, 300_000, 2_097_152, 70_000_000] {
            assert!(chs_geometry(t).sectors() <= t, "{t}");
        }
    }

    #[test]
    fn qemu_round_up_of_100_mib() {
        // QEMU re-runs the algorithm on growing totals until C·H·S covers the request
        // (FORMATS.md B.4): 100 MiB becomes 1004/12/17 = 104 865 792 bytes.
        let want = 204_800u64;
        let mut t = want;
        let g = loop {
            let g = chs_geometry(t);
            if g.sectors() >= want {
                break g;
            }
            t += 1;
        };
        assert_eq!(g, chs(1004, 12, 17));
        assert_eq!(g.sectors() * 512, 104_865_792);
    }

    #[test]
    fn bitmap_sizes_and_bits() {
        assert_eq!(bitmap_bytes(2 << 20), 512);
        assert_eq!(bitmap_bytes(512 << 10), 512);
        assert_eq!(bitmap_bytes(512), 512);
        assert_eq!(bitmap_bytes(8 << 20), 2048);
        let bits = [0b1000_0001u8, 0x40];
        assert!(bitmap_bit(&bits, 0));
        assert!(!bitmap_bit(&bits, 1));
        assert!(bitmap_bit(&bits, 7));
        assert!(bitmap_bit(&bits, 9));
        assert!(!bitmap_bit(&bits, 16));
        assert!(!bitmap_bit(&bits, u64::MAX));
    }
}
