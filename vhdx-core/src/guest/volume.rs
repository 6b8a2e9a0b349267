//! Which file system (or other content) a volume holds, from its magic bytes:
//! the OEM id of the boot sector (NTFS `NTFS    `, BitLocker `-FVE-FS-`, exFAT `EXFAT   `,
//! ReFS `ReFS` with `FSRS`), the FAT BIOS parameter block (FAT12/16/32 told apart by the
//! cluster count, as the FAT specification orders), the ext2/3/4 superblock (magic 0xEF53 at
//! byte 1080; the feature flags decide the generation, as blkid does), and the Linux swap
//! signature at the end of the first page.

use super::window::VolumeReader;
use crate::error::Result;
use serde::Serialize;
use std::fmt;

/// What a volume holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// NTFS.
    Ntfs,
    /// A BitLocker-encrypted volume (`-FVE-FS-`).
    BitLocker,
    /// ReFS.
    Refs,
    /// FAT12.
    Fat12,
    /// FAT16.
    Fat16,
    /// FAT32.
    Fat32,
    /// exFAT.
    ExFat,
    /// ext2 (no journal).
    Ext2,
    /// ext3 (a journal, no ext4 features).
    Ext3,
    /// ext4 (extents, 64-bit, flex_bg or another ext4 feature).
    Ext4,
    /// Linux swap.
    Swap,
    /// Nothing recognised (empty, encrypted by something else, another file system).
    Unknown,
}

impl VolumeKind {
    /// Lower-case name, as serialized (`ntfs`, `bitlocker`, `fat32`, `ext4`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeKind::Ntfs => "ntfs",
            VolumeKind::BitLocker => "bitlocker",
            VolumeKind::Refs => "refs",
            VolumeKind::Fat12 => "fat12",
            VolumeKind::Fat16 => "fat16",
            VolumeKind::Fat32 => "fat32",
            VolumeKind::ExFat => "exfat",
            VolumeKind::Ext2 => "ext2",
            VolumeKind::Ext3 => "ext3",
            VolumeKind::Ext4 => "ext4",
            VolumeKind::Swap => "swap",
            VolumeKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for VolumeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bytes read from the start of a volume for detection: the largest swap page size.
const PROBE: usize = 64 * 1024;
/// Page sizes at whose end a swap signature may sit.
const SWAP_PAGES: [usize; 4] = [4096, 8192, 16384, 65536];

/// Offset of the ext superblock.
pub const EXT_SUPERBLOCK: usize = 1024;
/// The ext superblock magic.
pub const EXT_MAGIC: u16 = 0xEF53;
/// ext compat feature: has a journal.
pub const EXT_COMPAT_HAS_JOURNAL: u32 = 0x4;
/// ext2 incompat features (filetype, needs_recovery, meta_bg): anything else is ext4.
const EXT2_3_INCOMPAT: u32 = 0x2 | 0x4 | 0x10;
/// ext2 ro_compat features (sparse_super, large_file, btree_dir): anything else is ext4.
const EXT2_3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4;

/// Detects what the volume in `window` holds.
pub fn detect(window: &VolumeReader<'_>) -> Result<VolumeKind> {
    let mut head = vec![0u8; PROBE.min(window.len() as usize)];
    let n = window.read_some_at(&mut head, 0)?;
    head.truncate(n);
    Ok(detect_bytes(&head))
}

/// Detects the content from the first bytes of a volume (up to 64 KiB; fewer when the
/// volume is smaller).
pub fn detect_bytes(head: &[u8]) -> VolumeKind {
    if let Some(sector) = head.get(..512).and_then(|s| <&[u8; 512]>::try_from(s).ok()) {
        if let Some(k) = boot_sector_kind(sector) {
            return k;
        }
    }
    if let Some(k) = ext_kind(head) {
        return k;
    }
    for page in SWAP_PAGES {
        if let Some(sig) = head.get(page - 10..page) {
            if sig == b"SWAPSPACE2" || sig == b"SWAP-SPACE" {
                return VolumeKind::Swap;
            }
        }
    }
    VolumeKind::Unknown
}

/// What a boot sector at the start of a volume says it is: NTFS, BitLocker, exFAT, ReFS or
/// FAT. `None` for anything else (an MBR, an ext volume, zeros).
pub fn boot_sector_kind(s: &[u8; 512]) -> Option<VolumeKind> {
    match &s[3..11] {
        b"NTFS    " => return Some(VolumeKind::Ntfs),
        b"-FVE-FS-" => return Some(VolumeKind::BitLocker),
        b"EXFAT   " => return Some(VolumeKind::ExFat),
        b"ReFS\0\0\0\0" if &s[16..20] == b"FSRS" => return Some(VolumeKind::Refs),
        _ => {}
    }
    fat_kind(s)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// FAT by the BIOS parameter block: a jump instruction, sane geometry, and the type from
/// the count of data clusters (< 4085 FAT12, < 65525 FAT16, else FAT32).
fn fat_kind(s: &[u8; 512]) -> Option<VolumeKind> {
    let jump = (s[0] == 0xEB && s[2] == 0x90) || s[0] == 0xE9;
    let bps = u32::from(u16_at(s, 11));
    let spc = u32::from(s[13]);
    let reserved = u32::from(u16_at(s, 14));
    let fats = u32::from(s[16]);
    let root_entries = u32::from(u16_at(s, 17));
    let total16 = u32::from(u16_at(s, 19));
    let media = s[21];
    let fat16 = u32::from(u16_at(s, 22));
    let total32 = u32_at(s, 32);
    let fat32 = u32_at(s, 36);
    if !jump
        || !matches!(bps, 512 | 1024 | 2048 | 4096)
        || !spc.is_power_of_two()
        || reserved == 0
        || !(1..=4).contains(&fats)
        || !(media == 0xF0 || media >= 0xF8)
    {
        return None;
    }
    let fat_size = if fat16 != 0 { fat16 } else { fat32 };
    let total = if total16 != 0 { total16 } else { total32 };
    if fat_size == 0 || total == 0 {
        return None;
    }
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let meta =
        u64::from(reserved) + u64::from(fats) * u64::from(fat_size) + u64::from(root_sectors);
    let data = u64::from(total).checked_sub(meta)?;
    let clusters = data / u64::from(spc);
    Some(if clusters < 4085 {
        VolumeKind::Fat12
    } else if clusters < 65525 {
        VolumeKind::Fat16
    } else {
        VolumeKind::Fat32
    })
}

/// ext2/3/4 by the superblock magic and its feature flags.
fn ext_kind(head: &[u8]) -> Option<VolumeKind> {
    let sb = head.get(EXT_SUPERBLOCK..EXT_SUPERBLOCK + 1024)?;
    if u16_at(sb, 56) != EXT_MAGIC {
        return None;
    }
    let rev = u32_at(sb, 0x4C);
    let (compat, incompat, ro_compat) = if rev == 0 {
        (0, 0, 0)
    } else {
        (u32_at(sb, 0x5C), u32_at(sb, 0x60), u32_at(sb, 0x64))
    };
    Some(
        if incompat & !EXT2_3_INCOMPAT != 0 || ro_compat & !EXT2_3_RO_COMPAT != 0 {
            VolumeKind::Ext4
        } else if compat & EXT_COMPAT_HAS_JOURNAL != 0 {
            VolumeKind::Ext3
        } else {
            VolumeKind::Ext2
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(oem: &[u8; 8]) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0..3].copy_from_slice(&[0xEB, 0x52, 0x90]);
        b[3..11].copy_from_slice(oem);
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    fn fat(total: u32, spc: u8, fat_size: u16, root: u16) -> Vec<u8> {
        let mut b = boot(b"mkfs.fat");
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = spc;
        b[14..16].copy_from_slice(&1u16.to_le_bytes());
        b[16] = 2;
        b[17..19].copy_from_slice(&root.to_le_bytes());
        b[21] = 0xF8;
        if fat_size != 0 {
            b[22..24].copy_from_slice(&fat_size.to_le_bytes());
        } else {
            b[36..40].copy_from_slice(&1000u32.to_le_bytes());
        }
        b[32..36].copy_from_slice(&total.to_le_bytes());
        b
    }

    fn ext(compat: u32, incompat: u32, ro: u32) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        let sb = &mut b[1024..2048];
        sb[56..58].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        sb[0x4C..0x50].copy_from_slice(&1u32.to_le_bytes());
        sb[0x5C..0x60].copy_from_slice(&compat.to_le_bytes());
        sb[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        sb[0x64..0x68].copy_from_slice(&ro.to_le_bytes());
        b
    }

    #[test]
    fn table() {
        let mut refs = boot(b"ReFS\0\0\0\0");
        refs[16..20].copy_from_slice(b"FSRS");
        let mut swap = vec![0u8; 8192];
        swap[4086..4096].copy_from_slice(b"SWAPSPACE2");
        let mut swap16k = vec![0u8; 65536];
        swap16k[16384 - 10..16384].copy_from_slice(b"SWAP-SPACE");
        let cases: Vec<(Vec<u8>, VolumeKind)> = vec![
            (boot(b"NTFS    "), VolumeKind::Ntfs),
            (boot(b"-FVE-FS-"), VolumeKind::BitLocker),
            (boot(b"EXFAT   "), VolumeKind::ExFat),
            (refs, VolumeKind::Refs),
            (boot(b"ReFS\0\0\0\0"), VolumeKind::Unknown),
            (fat(8000, 4, 6, 512), VolumeKind::Fat12),
            (fat(100_000, 4, 400, 512), VolumeKind::Fat16),
            (fat(200_000, 1, 0, 0), VolumeKind::Fat32),
            (fat(10, 1, 400, 512), VolumeKind::Unknown), // metadata larger than the volume
            (ext(0, 0x2, 0x3), VolumeKind::Ext2),
            (ext(0x4, 0x2, 0x3), VolumeKind::Ext3),
            (ext(0x4, 0x2 | 0x40, 0x3), VolumeKind::Ext4),
            (ext(0x4, 0x2, 0x3 | 0x400), VolumeKind::Ext4),
            (ext(0, 0x2 | 0x200, 0), VolumeKind::Ext4),
            (swap, VolumeKind::Swap),
            (swap16k, VolumeKind::Swap),
            (vec![0u8; 4096], VolumeKind::Unknown),
            (vec![0u8; 3], VolumeKind::Unknown),
            (Vec::new(), VolumeKind::Unknown),
        ];
        for (i, (bytes, want)) in cases.iter().enumerate() {
            assert_eq!(detect_bytes(bytes), *want, "case {i}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(VolumeKind::BitLocker.to_string(), "bitlocker");
        assert_eq!(
            serde_json::to_string(&VolumeKind::ExFat).unwrap(),
            "\"exfat\""
        );
        assert_eq!(
            serde_json::to_string(&VolumeKind::Fat32).unwrap(),
            "\"fat32\""
        );
    }
}
