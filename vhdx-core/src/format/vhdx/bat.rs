//! Block allocation table entries and index arithmetic (MS-VHDX §2.5; FORMATS.md A.7).
//!
//! The BAT interleaves one sector-bitmap entry after every `chunk_ratio` payload entries, in
//! every disk type. [`payload_bat_index`] is the one place that maps a payload block number
//! to its BAT index; [`sector_bitmap_bat_index`] does the same for a chunk's bitmap entry.

/// Payload block state: not present (dynamic default; differencing: read the parent).
pub const PAYLOAD_NOT_PRESENT: u8 = 0;
/// Payload block state: undefined content.
pub const PAYLOAD_UNDEFINED: u8 = 1;
/// Payload block state: reads as zeros.
pub const PAYLOAD_ZERO: u8 = 2;
/// Payload block state: unmapped (trimmed).
pub const PAYLOAD_UNMAPPED: u8 = 3;
/// Payload block state from the v0.95 draft, still treated as unmapped by QEMU.
pub const PAYLOAD_UNMAPPED_V095: u8 = 5;
/// Payload block state: the whole block is in the file.
pub const PAYLOAD_FULLY_PRESENT: u8 = 6;
/// Payload block state: some sectors in the file, per the sector bitmap (differencing only).
pub const PAYLOAD_PARTIALLY_PRESENT: u8 = 7;
/// Sector-bitmap entry state: no bitmap block.
pub const SB_NOT_PRESENT: u8 = 0;
/// Sector-bitmap entry state: bitmap block present.
pub const SB_PRESENT: u8 = 6;

/// Sectors one sector-bitmap block describes (2^23: one bit per sector of a 1 MiB block).
pub const SECTORS_PER_BITMAP: u64 = 1 << 23;
/// Mask of the reserved bits 3–19.
pub const RESERVED_MASK: u64 = 0x000F_FFF8;

/// The state field (bits 0–2) of an entry.
pub fn entry_state(entry: u64) -> u8 {
    (entry & 7) as u8
}

/// The file offset (bits 20–63, in bytes) of an entry.
pub fn entry_offset(entry: u64) -> u64 {
    entry & 0xFFFF_FFFF_FFF0_0000
}

/// An entry with `state` at byte `offset` (which must be 1 MiB aligned).
pub fn make_entry(state: u8, offset: u64) -> u64 {
    (offset & 0xFFFF_FFFF_FFF0_0000) | u64::from(state & 7)
}

/// Payload blocks per chunk: `2^23 × logical_sector_size / block_size`.
pub fn chunk_ratio(logical_sector_size: u32, block_size: u32) -> u64 {
    SECTORS_PER_BITMAP * u64::from(logical_sector_size) / u64::from(block_size)
}

/// BAT index of payload block `block`: the payload entries of each chunk are followed by the
/// chunk's sector-bitmap entry, so every full chunk before `block` adds one slot.
pub fn payload_bat_index(block: u64, chunk_ratio: u64) -> u64 {
    block + block / chunk_ratio
}

/// BAT index of the sector-bitmap entry of chunk `chunk`.
pub fn sector_bitmap_bat_index(chunk: u64, chunk_ratio: u64) -> u64 {
    chunk * (chunk_ratio + 1) + chunk_ratio
}

/// Number of BAT entries a disk needs (FORMATS.md A.7): payload blocks plus interleaved
/// bitmap entries; a differencing disk also has the bitmap entry of its last chunk.
pub fn total_entries(
    virtual_size: u64,
    block_size: u32,
    chunk_ratio: u64,
    differencing: bool,
) -> u64 {
    let payload = virtual_size.div_ceil(u64::from(block_size));
    if payload == 0 {
        return 0;
    }
    if differencing {
        payload.div_ceil(chunk_ratio) * (chunk_ratio + 1)
    } else {
        payload + (payload - 1) / chunk_ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ratio_table() {
        // FORMATS.md A.7 table.
        for (bs, c512, c4k) in [
            (1u32 << 20, 4096, 32768),
            (2 << 20, 2048, 16384),
            (8 << 20, 512, 4096),
            (32 << 20, 128, 1024),
            (256 << 20, 16, 128),
        ] {
            assert_eq!(chunk_ratio(512, bs), c512);
            assert_eq!(chunk_ratio(4096, bs), c4k);
        }
    }

    #[test]
    fn index_at_chunk_boundaries() {
        let cr = 4096;
        assert_eq!(payload_bat_index(0, cr), 0);
        assert_eq!(payload_bat_index(cr - 1, cr), cr - 1);
        // The SB slot of chunk 0 sits at index cr, so block cr lands one past it.
        assert_eq!(sector_bitmap_bat_index(0, cr), cr);
        assert_eq!(payload_bat_index(cr, cr), cr + 1);
        assert_eq!(payload_bat_index(2 * cr - 1, cr), 2 * cr);
        assert_eq!(sector_bitmap_bat_index(1, cr), 2 * cr + 1);
        assert_eq!(payload_bat_index(2 * cr, cr), 2 * cr + 2);
        // Every payload index and SB index is distinct and dense.
        let mut seen = std::collections::BTreeSet::new();
        let cr = 8;
        for b in 0..40 {
            assert!(seen.insert(payload_bat_index(b, cr)));
        }
        for c in 0..5 {
            assert!(seen.insert(sector_bitmap_bat_index(c, cr)));
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            (0..45).collect::<Vec<_>>()
        );
    }

    #[test]
    fn entry_counts() {
        // FORMATS.md A.7 example: 100 MiB, 8 MiB blocks, 512 B sectors.
        let cr = chunk_ratio(512, 8 << 20);
        assert_eq!(total_entries(100 << 20, 8 << 20, cr, false), 13);
        assert_eq!(total_entries(100 << 20, 8 << 20, cr, true), 513);
        // 5000 MiB at 1 MiB blocks: index 4096 is the SB slot, so 5000 payload + 1 SB.
        let cr = chunk_ratio(512, 1 << 20);
        assert_eq!(total_entries(5000 << 20, 1 << 20, cr, false), 5001);
        // Exactly one full chunk: no trailing SB entry for non-differencing disks.
        assert_eq!(total_entries(4 << 30, 1 << 20, cr, false), 4096);
        assert_eq!(total_entries(4 << 30, 1 << 20, cr, true), 4097);
    }

    #[test]
    fn entry_fields() {
        let e = make_entry(PAYLOAD_FULLY_PRESENT, 5 << 20);
        assert_eq!(entry_state(e), 6);
        assert_eq!(entry_offset(e), 5 << 20);
    }
}
