//! Free space of an ext2/3/4 file system, from its block bitmaps.
//!
//! What is read, in order: the superblock (byte 1024 of the volume), every group
//! descriptor (32 bytes, or `s_desc_size` with `64bit`; in the old contiguous table or, with
//! `meta_bg`, in the first block of each meta group), then one group's block bitmap at a
//! time, wherever its descriptor points (with `flex_bg` the bitmaps of a flex group sit
//! together in its first group). A clear bit is a free cluster (a block, or `2^n` blocks
//! with `bigalloc`).
//!
//! The map is only given when every check passes; otherwise the volume is skipped with the
//! reason, and nothing of it counts as free:
//! - the state: `needs_recovery` (a journal to replay), an error state or recorded errors,
//!   not cleanly unmounted (ext2), orphan inodes (a list or the orphan file), an external
//!   journal device, an incompat or ro_compat feature this module does not know;
//! - checksums where the file system has them: with `metadata_csum` the superblock, every
//!   group descriptor and every block bitmap read (CRC-32C); with `uninit_bg` (`gdt_csum`)
//!   every group descriptor (CRC-16);
//! - consistency: the geometry fits the volume, every descriptor points inside the file
//!   system, each group's free clusters in its bitmap equal its descriptor's count, and no
//!   superblock copy, group descriptor block, bitmap or inode table lies in a cluster the
//!   bitmap calls free.
//!
//! Groups whose bitmap was never written (`BLOCK_UNINIT`, trusted only when the descriptors
//! are checksummed, as the kernel does) are computed: every block is free except the
//! superblock copy and descriptor blocks the group carries and any group's bitmaps and inode
//! table placed in it. When that count disagrees with the descriptor, or with `bigalloc`, the
//! group is taken as wholly used (conservative: nothing of it is reported free).
//!
//! Memory: one bitmap block at a time, plus a small record per group (its descriptor's
//! pointers), whose count is bounded by the group descriptor table stored in the volume.

use super::{Halt, Skip, SkipKind};
use crate::guest::window::VolumeReader;

/// Byte offset of the superblock in the volume.
const SUPERBLOCK: u64 = 1024;
/// Superblock size.
const SB_LEN: usize = 1024;
/// `s_magic`.
const MAGIC: u16 = 0xEF53;

// Superblock fields (byte offsets; the ext4 on-disk format's `struct ext4_super_block`).
const S_INODES_PER_GROUP: usize = 0x28;
const S_BLOCKS_COUNT_LO: usize = 0x04;
const S_FIRST_DATA_BLOCK: usize = 0x14;
const S_LOG_BLOCK_SIZE: usize = 0x18;
const S_LOG_CLUSTER_SIZE: usize = 0x1C;
const S_BLOCKS_PER_GROUP: usize = 0x20;
const S_CLUSTERS_PER_GROUP: usize = 0x24;
const S_MAGIC: usize = 0x38;
const S_STATE: usize = 0x3A;
const S_REV_LEVEL: usize = 0x4C;
const S_INODE_SIZE: usize = 0x58;
const S_FEATURE_COMPAT: usize = 0x5C;
const S_FEATURE_INCOMPAT: usize = 0x60;
const S_FEATURE_RO_COMPAT: usize = 0x64;
const S_UUID: usize = 0x68;
const S_RESERVED_GDT_BLOCKS: usize = 0xCE;
const S_LAST_ORPHAN: usize = 0xE8;
const S_DESC_SIZE: usize = 0xFE;
const S_FIRST_META_BG: usize = 0x104;
const S_BLOCKS_COUNT_HI: usize = 0x150;
const S_CHECKSUM_TYPE: usize = 0x175;
const S_ERROR_COUNT: usize = 0x194;
const S_BACKUP_BGS: usize = 0x24C;
const S_CHECKSUM_SEED: usize = 0x270;
const S_CHECKSUM: usize = 0x3FC;

/// `s_state`: cleanly unmounted.
const STATE_VALID: u16 = 0x1;
/// `s_state`: errors detected.
const STATE_ERROR: u16 = 0x2;
/// `s_state`: orphans being recovered.
const STATE_ORPHAN: u16 = 0x4;

const COMPAT_EXCLUDE_BITMAP: u32 = 0x100;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;

const INCOMPAT_COMPRESSION: u32 = 0x1;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
/// Incompat features whose block accounting this module understands: filetype, recover
/// (refused separately), meta_bg, extents, 64bit, mmp, flex_bg, ea_inode, dirdata,
/// csum_seed, largedir, inline_data, encrypt, casefold.
const INCOMPAT_KNOWN: u32 = 0x2
    | INCOMPAT_RECOVER
    | INCOMPAT_META_BG
    | 0x40
    | INCOMPAT_64BIT
    | 0x100
    | 0x200
    | 0x400
    | 0x1000
    | INCOMPAT_CSUM_SEED
    | 0x4000
    | 0x8000
    | 0x10000
    | 0x20000;

const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_HAS_SNAPSHOT: u32 = 0x80;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x10000;
/// Ro_compat features whose block accounting this module understands: sparse_super,
/// large_file, btree_dir, huge_file, gdt_csum, dir_nlink, extra_isize, quota, bigalloc,
/// metadata_csum, replica, readonly, project, shared_blocks, verity (and orphan_present,
/// refused separately).
const RO_COMPAT_KNOWN: u32 = RO_COMPAT_SPARSE_SUPER
    | 0x2
    | 0x4
    | 0x8
    | RO_COMPAT_GDT_CSUM
    | 0x20
    | 0x40
    | 0x100
    | RO_COMPAT_BIGALLOC
    | RO_COMPAT_METADATA_CSUM
    | 0x800
    | 0x1000
    | 0x2000
    | 0x4000
    | 0x8000
    | RO_COMPAT_ORPHAN_PRESENT;

// Group descriptor fields (`struct ext4_group_desc`).
const BG_BLOCK_BITMAP_LO: usize = 0x00;
const BG_INODE_BITMAP_LO: usize = 0x04;
const BG_INODE_TABLE_LO: usize = 0x08;
const BG_FREE_BLOCKS_COUNT_LO: usize = 0x0C;
const BG_FLAGS: usize = 0x12;
const BG_BLOCK_BITMAP_CSUM_LO: usize = 0x18;
const BG_CHECKSUM: usize = 0x1E;
const BG_BLOCK_BITMAP_HI: usize = 0x20;
const BG_INODE_BITMAP_HI: usize = 0x24;
const BG_INODE_TABLE_HI: usize = 0x28;
const BG_FREE_BLOCKS_COUNT_HI: usize = 0x2C;
const BG_BLOCK_BITMAP_CSUM_HI: usize = 0x38;
/// Descriptors at least this long carry the high half of the bitmap checksum.
const BG_BLOCK_BITMAP_CSUM_HI_END: u64 = 0x3A;
/// `bg_flags`: the block bitmap was never written.
const BG_BLOCK_UNINIT: u16 = 0x2;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn skip(kind: SkipKind, reason: impl Into<String>) -> Halt {
    Halt::Skip(Skip::new(kind, reason))
}

fn inconsistent(reason: impl Into<String>) -> Halt {
    skip(SkipKind::Inconsistent, reason)
}

/// CRC-32C without the final inversion, continuing from `crc` (the kernel's `ext4_chksum`).
fn crc32c_raw(crc: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!crc, data)
}

/// The CRC-16 of `uninit_bg` descriptors (polynomial 0x8005 reflected, no inversion).
fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// How group descriptors and bitmaps are checksummed.
#[derive(Debug, Clone, Copy)]
enum Csum {
    /// Neither `gdt_csum` nor `metadata_csum`: `bg_flags` are not trusted.
    None,
    /// `gdt_csum`: CRC-16 over the UUID, the group number and the descriptor.
    Crc16,
    /// `metadata_csum`: CRC-32C from this seed.
    Crc32c(u32),
}

/// The superblock fields the free-space map needs, checked.
#[derive(Debug)]
struct Geometry {
    block_size: u64,
    /// Blocks per cluster (1 without bigalloc).
    cluster_blocks: u64,
    blocks_count: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    clusters_per_group: u64,
    groups: u64,
    desc_size: u64,
    desc_per_block: u64,
    /// Blocks of the group descriptor table (without meta_bg: all of it).
    gdt_blocks: u64,
    reserved_gdt: u64,
    meta_bg: bool,
    first_meta_bg: u64,
    sparse_super: bool,
    sparse_super2: Option<[u64; 2]>,
    inode_table_blocks: u64,
    csum: Csum,
    uuid: [u8; 16],
}

/// One group descriptor's pointers and counts.
#[derive(Debug, Clone, Copy)]
struct Group {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    free_clusters: u64,
    block_uninit: bool,
    bitmap_csum: u32,
}

/// The free byte ranges of the ext file system in `vol`, relative to the volume, sorted and
/// merged (see the module documentation).
pub(super) fn free_ranges(vol: &VolumeReader<'_>) -> Result<Vec<(u64, u64)>, Halt> {
    let mut sb = vec![0u8; SB_LEN];
    vol.read_at(&mut sb, SUPERBLOCK)?;
    let g = geometry(&sb, vol.len())?;
    let groups = read_groups(vol, &g)?;
    let meta = metadata_extents(&g, &groups);
    let mut out = Vec::new();
    let mut bitmap = vec![0u8; g.block_size as usize];
    for (n, grp) in groups.iter().enumerate() {
        let n = n as u64;
        let first = g.first_data_block + n * g.blocks_per_group;
        let blocks = g.blocks_per_group.min(g.blocks_count - first);
        let clusters = blocks.div_ceil(g.cluster_blocks);
        let group_end = first + blocks;
        let mut runs = Vec::new();
        if grp.block_uninit && !matches!(g.csum, Csum::None) {
            uninit_runs(&g, first, blocks, grp, &meta, &mut runs);
        } else {
            let len = (g.clusters_per_group / 8) as usize;
            let at = grp.block_bitmap * g.block_size;
            vol.read_at(&mut bitmap[..len], at)?;
            check_bitmap(&g, n, grp, &bitmap[..len])?;
            let mut free = 0;
            bit_runs(&bitmap[..len], clusters as usize, |s, l| {
                free += l as u64;
                runs.push((
                    first + s as u64 * g.cluster_blocks,
                    l as u64 * g.cluster_blocks,
                ));
            });
            if free != grp.free_clusters {
                return Err(inconsistent(format!(
                    "group {n}: its block bitmap has {free} free clusters, its descriptor \
                     says {}",
                    grp.free_clusters
                )));
            }
        }
        // No metadata block may lie in a free run.
        for &(s, l) in &runs {
            let e = (s + l).min(group_end);
            let m = meta.partition_point(|&(ms, ml)| ms + ml <= s);
            if m < meta.len() && meta[m].0 < e {
                return Err(inconsistent(format!(
                    "group {n}: block {} holds file system metadata but its bitmap calls \
                     it free",
                    meta[m].0.max(s)
                )));
            }
            super::push_range(&mut out, s * g.block_size, (e - s) * g.block_size);
        }
    }
    Ok(out)
}

/// Checks the superblock and derives the geometry; a skip for anything not understood or
/// not clean.
fn geometry(sb: &[u8], volume_len: u64) -> Result<Geometry, Halt> {
    if u16_at(sb, S_MAGIC) != MAGIC {
        return Err(skip(
            SkipKind::NotSupported,
            "no ext superblock (magic 0xEF53) at byte 1024",
        ));
    }
    let rev = u32_at(sb, S_REV_LEVEL);
    let (compat, incompat, ro) = if rev == 0 {
        (0, 0, 0)
    } else {
        (
            u32_at(sb, S_FEATURE_COMPAT),
            u32_at(sb, S_FEATURE_INCOMPAT),
            u32_at(sb, S_FEATURE_RO_COMPAT),
        )
    };
    if incompat & INCOMPAT_RECOVER != 0 {
        return Err(skip(
            SkipKind::NeedsRecovery,
            "the journal needs recovery (needs_recovery): the bitmaps on disk may be stale",
        ));
    }
    if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        return Err(skip(
            SkipKind::NotSupported,
            "an external journal device, not a file system",
        ));
    }
    let unknown = incompat & !INCOMPAT_KNOWN | incompat & INCOMPAT_COMPRESSION;
    if unknown != 0 {
        return Err(skip(
            SkipKind::UnsupportedFeature,
            format!("incompat features {unknown:#x} are not understood"),
        ));
    }
    let unknown = ro & !RO_COMPAT_KNOWN | ro & RO_COMPAT_HAS_SNAPSHOT;
    if unknown != 0 || compat & COMPAT_EXCLUDE_BITMAP != 0 {
        return Err(skip(
            SkipKind::UnsupportedFeature,
            format!(
                "ro_compat features {unknown:#x} (or snapshot exclude bitmaps) are not \
                 understood"
            ),
        ));
    }
    let state = u16_at(sb, S_STATE);
    if state & STATE_ERROR != 0 || u32_at(sb, S_ERROR_COUNT) != 0 {
        return Err(skip(
            SkipKind::NotClean,
            "the file system recorded errors (run e2fsck)",
        ));
    }
    if state & STATE_VALID == 0 || state & STATE_ORPHAN != 0 {
        return Err(skip(
            SkipKind::NotClean,
            "the file system was not cleanly unmounted",
        ));
    }
    if u32_at(sb, S_LAST_ORPHAN) != 0 || ro & RO_COMPAT_ORPHAN_PRESENT != 0 {
        return Err(skip(
            SkipKind::NotClean,
            "orphan inodes are waiting to be released",
        ));
    }
    let metadata_csum = ro & RO_COMPAT_METADATA_CSUM != 0;
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[S_UUID..S_UUID + 16]);
    let csum = if metadata_csum {
        if sb[S_CHECKSUM_TYPE] != 1 {
            return Err(skip(
                SkipKind::UnsupportedFeature,
                format!(
                    "checksum type {} (only 1, CRC-32C, is known)",
                    sb[S_CHECKSUM_TYPE]
                ),
            ));
        }
        let want = u32_at(sb, S_CHECKSUM);
        let got = crc32c_raw(!0, &sb[..S_CHECKSUM]);
        if want != got {
            return Err(inconsistent(format!(
                "superblock checksum mismatch (stored {want:#010x}, computed {got:#010x})"
            )));
        }
        Csum::Crc32c(if incompat & INCOMPAT_CSUM_SEED != 0 {
            u32_at(sb, S_CHECKSUM_SEED)
        } else {
            crc32c_raw(!0, &uuid)
        })
    } else if ro & RO_COMPAT_GDT_CSUM != 0 {
        Csum::Crc16
    } else {
        Csum::None
    };
    let log_block = u32_at(sb, S_LOG_BLOCK_SIZE);
    if log_block > 6 {
        return Err(inconsistent(format!(
            "block size 2^(10+{log_block}) is larger than 64 KiB"
        )));
    }
    let block_size = 1024u64 << log_block;
    let bigalloc = ro & RO_COMPAT_BIGALLOC != 0;
    let log_cluster = u32_at(sb, S_LOG_CLUSTER_SIZE);
    let cluster_blocks = if bigalloc {
        // Clusters of 2^(log_cluster - log_block) blocks, at most 2^29 bytes... kept sane.
        if log_cluster < log_block || log_cluster - log_block > 16 {
            return Err(inconsistent(format!(
                "cluster size 2^(10+{log_cluster}) with blocks of {block_size} bytes"
            )));
        }
        1u64 << (log_cluster - log_block)
    } else {
        1
    };
    let blocks_per_group = u64::from(u32_at(sb, S_BLOCKS_PER_GROUP));
    let clusters_per_group = u64::from(u32_at(sb, S_CLUSTERS_PER_GROUP));
    let bits = 8 * block_size;
    if clusters_per_group == 0
        || clusters_per_group > bits
        || clusters_per_group % 8 != 0
        || Some(blocks_per_group) != clusters_per_group.checked_mul(cluster_blocks)
    {
        return Err(inconsistent(format!(
            "{blocks_per_group} blocks and {clusters_per_group} clusters per group do not fit \
             one bitmap block of {block_size} bytes"
        )));
    }
    let mut blocks_count = u64::from(u32_at(sb, S_BLOCKS_COUNT_LO));
    if incompat & INCOMPAT_64BIT != 0 {
        blocks_count |= u64::from(u32_at(sb, S_BLOCKS_COUNT_HI)) << 32;
    }
    let first_data_block = u64::from(u32_at(sb, S_FIRST_DATA_BLOCK));
    if first_data_block > 1 || (first_data_block == 1 && block_size != 1024) {
        return Err(inconsistent(format!(
            "first data block {first_data_block} with blocks of {block_size} bytes"
        )));
    }
    if blocks_count <= first_data_block {
        return Err(inconsistent(format!("{blocks_count} blocks")));
    }
    match blocks_count.checked_mul(block_size) {
        Some(bytes) if bytes <= volume_len => {}
        _ => {
            return Err(inconsistent(format!(
                "the file system ({blocks_count} blocks of {block_size} bytes) is larger \
                 than its volume ({volume_len} bytes)"
            )))
        }
    }
    let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
    let desc_size = if incompat & INCOMPAT_64BIT != 0 {
        let d = u64::from(u16_at(sb, S_DESC_SIZE));
        if !(64..=1024).contains(&d) || !d.is_power_of_two() || d > block_size {
            return Err(inconsistent(format!("group descriptor size {d}")));
        }
        d
    } else {
        32
    };
    let desc_per_block = block_size / desc_size;
    let gdt_blocks = groups.div_ceil(desc_per_block);
    let meta_bg = incompat & INCOMPAT_META_BG != 0;
    let first_meta_bg = if meta_bg {
        u64::from(u32_at(sb, S_FIRST_META_BG))
    } else {
        gdt_blocks
    };
    if first_meta_bg > gdt_blocks {
        return Err(inconsistent(format!(
            "first meta_bg {first_meta_bg} past the {gdt_blocks} descriptor blocks"
        )));
    }
    let inode_size = if rev == 0 {
        128
    } else {
        u64::from(u16_at(sb, S_INODE_SIZE))
    };
    let inodes_per_group = u64::from(u32_at(sb, S_INODES_PER_GROUP));
    if inode_size < 128 || !inode_size.is_power_of_two() || inode_size > block_size {
        return Err(inconsistent(format!("inode size {inode_size}")));
    }
    let inode_table_blocks = (inodes_per_group * inode_size).div_ceil(block_size);
    if inode_table_blocks > blocks_per_group {
        return Err(inconsistent(format!(
            "{inodes_per_group} inodes per group do not fit a group"
        )));
    }
    let sparse_super2 = (compat & COMPAT_SPARSE_SUPER2 != 0).then(|| {
        [
            u64::from(u32_at(sb, S_BACKUP_BGS)),
            u64::from(u32_at(sb, S_BACKUP_BGS + 4)),
        ]
    });
    Ok(Geometry {
        block_size,
        cluster_blocks,
        blocks_count,
        first_data_block,
        blocks_per_group,
        clusters_per_group,
        groups,
        desc_size,
        desc_per_block,
        gdt_blocks,
        reserved_gdt: u64::from(u16_at(sb, S_RESERVED_GDT_BLOCKS)),
        meta_bg,
        first_meta_bg,
        sparse_super: ro & RO_COMPAT_SPARSE_SUPER != 0,
        sparse_super2,
        inode_table_blocks,
        csum,
        uuid,
    })
}

impl Geometry {
    /// Whether group `g` carries a copy of the superblock (and, outside meta_bg, of the
    /// descriptor table): group 0; with sparse_super2 the two groups it names; without
    /// sparse_super every group; else groups 1 and the powers of 3, 5 and 7.
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if let Some(b) = self.sparse_super2 {
            return g == b[0] || g == b[1];
        }
        if g == 1 || !self.sparse_super {
            return true;
        }
        [3u64, 5, 7].iter().any(|&p| {
            let mut x = p;
            while x < g {
                x *= p;
            }
            x == g
        })
    }

    /// First block of group `g`.
    fn group_first(&self, g: u64) -> u64 {
        self.first_data_block + g * self.blocks_per_group
    }

    /// Block number of descriptor block `nr`: in the contiguous table after the primary
    /// superblock, or with meta_bg (from `first_meta_bg` on) in the first group of meta
    /// group `nr`, after its superblock copy.
    fn descriptor_block(&self, nr: u64) -> u64 {
        let sb_block = 1024 / self.block_size;
        if !self.meta_bg || nr < self.first_meta_bg {
            return sb_block + 1 + nr;
        }
        let g = nr * self.desc_per_block;
        let mut at = self.group_first(g) + u64::from(self.has_super(g));
        if nr == 0 && self.block_size == 1024 && self.first_data_block == 0 {
            at += 1;
        }
        at
    }

    /// The blocks before the descriptor copies of group `g` and the copies themselves: the
    /// superblock copy, the old-style table (and its reserved growth blocks), or the group's
    /// meta_bg descriptor block. As `(first block, count)`, possibly empty.
    fn base_metadata(&self, g: u64) -> (u64, u64) {
        let first = self.group_first(g);
        let sup = u64::from(self.has_super(g));
        let mut n = sup;
        if !self.meta_bg || g / self.desc_per_block < self.first_meta_bg {
            if sup == 1 {
                n += if self.meta_bg {
                    self.first_meta_bg
                } else {
                    self.gdt_blocks + self.reserved_gdt
                };
            }
        } else {
            let r = g % self.desc_per_block;
            if r == 0 || r == 1 || r == self.desc_per_block - 1 {
                n += 1;
            }
        }
        if g == 0 {
            // Everything from block 0: the boot block, and with 1 KiB blocks but no first
            // data block (bigalloc) the superblock in block 1, one block later.
            let shifted = self.block_size == 1024 && self.first_data_block == 0;
            return (0, first + n + u64::from(shifted));
        }
        (first, n)
    }
}

/// Reads and checks every group descriptor.
fn read_groups(vol: &VolumeReader<'_>, g: &Geometry) -> Result<Vec<Group>, Halt> {
    // The table is stored in the volume: `groups` is bounded by what the volume holds.
    let table_bytes = g.groups.checked_mul(g.desc_size);
    if table_bytes.is_none_or(|b| b > vol.len()) {
        return Err(inconsistent(format!(
            "{} group descriptors do not fit the volume",
            g.groups
        )));
    }
    let mut out = Vec::with_capacity(g.groups as usize);
    let mut block = vec![0u8; g.block_size as usize];
    let ds = g.desc_size as usize;
    for nr in 0..g.gdt_blocks {
        let at = g.descriptor_block(nr);
        if at >= g.blocks_count {
            return Err(inconsistent(format!(
                "group descriptor block {nr} at block {at} lies past the file system"
            )));
        }
        vol.read_at(&mut block, at * g.block_size)?;
        for i in 0..g.desc_per_block {
            let n = nr * g.desc_per_block + i;
            if n >= g.groups {
                break;
            }
            let d = &block[i as usize * ds..(i as usize + 1) * ds];
            check_descriptor(g, n, d)?;
            let wide = ds >= 64;
            let hi = |at: usize| {
                if wide {
                    u64::from(u32_at(d, at)) << 32
                } else {
                    0
                }
            };
            let grp = Group {
                block_bitmap: u64::from(u32_at(d, BG_BLOCK_BITMAP_LO)) | hi(BG_BLOCK_BITMAP_HI),
                inode_bitmap: u64::from(u32_at(d, BG_INODE_BITMAP_LO)) | hi(BG_INODE_BITMAP_HI),
                inode_table: u64::from(u32_at(d, BG_INODE_TABLE_LO)) | hi(BG_INODE_TABLE_HI),
                free_clusters: u64::from(u16_at(d, BG_FREE_BLOCKS_COUNT_LO))
                    | if wide {
                        u64::from(u16_at(d, BG_FREE_BLOCKS_COUNT_HI)) << 16
                    } else {
                        0
                    },
                block_uninit: u16_at(d, BG_FLAGS) & BG_BLOCK_UNINIT != 0,
                bitmap_csum: u32::from(u16_at(d, BG_BLOCK_BITMAP_CSUM_LO))
                    | if g.desc_size >= BG_BLOCK_BITMAP_CSUM_HI_END {
                        u32::from(u16_at(d, BG_BLOCK_BITMAP_CSUM_HI)) << 16
                    } else {
                        0
                    },
            };
            let inside = |b: u64, len: u64| b >= g.first_data_block && b + len <= g.blocks_count;
            if !inside(grp.block_bitmap, 1)
                || !inside(grp.inode_bitmap, 1)
                || !inside(grp.inode_table, g.inode_table_blocks)
            {
                return Err(inconsistent(format!(
                    "group {n}: its bitmaps or inode table lie outside the file system"
                )));
            }
            out.push(grp);
        }
    }
    Ok(out)
}

/// Verifies descriptor `n`'s checksum, where the file system keeps one.
fn check_descriptor(g: &Geometry, n: u64, d: &[u8]) -> Result<(), Halt> {
    let stored = u16_at(d, BG_CHECKSUM);
    let group = (n as u32).to_le_bytes();
    let computed = match g.csum {
        Csum::None => return Ok(()),
        Csum::Crc32c(seed) => {
            let mut c = crc32c_raw(seed, &group);
            c = crc32c_raw(c, &d[..BG_CHECKSUM]);
            c = crc32c_raw(c, &[0, 0]);
            c = crc32c_raw(c, &d[BG_CHECKSUM + 2..]);
            (c & 0xFFFF) as u16
        }
        Csum::Crc16 => {
            let mut c = crc16(!0, &g.uuid);
            c = crc16(c, &group);
            c = crc16(c, &d[..BG_CHECKSUM]);
            if d.len() > BG_CHECKSUM + 2 {
                c = crc16(c, &d[BG_CHECKSUM + 2..]);
            }
            c
        }
    };
    if computed != stored {
        return Err(inconsistent(format!(
            "group {n}: descriptor checksum mismatch (stored {stored:#06x}, computed \
             {computed:#06x})"
        )));
    }
    Ok(())
}

/// Verifies a block bitmap's checksum (metadata_csum).
fn check_bitmap(g: &Geometry, n: u64, grp: &Group, bitmap: &[u8]) -> Result<(), Halt> {
    let Csum::Crc32c(seed) = g.csum else {
        return Ok(());
    };
    let mut computed = crc32c_raw(seed, bitmap);
    if g.desc_size < BG_BLOCK_BITMAP_CSUM_HI_END {
        computed &= 0xFFFF;
    }
    if computed != grp.bitmap_csum {
        return Err(inconsistent(format!(
            "group {n}: block bitmap checksum mismatch (stored {:#010x}, computed \
             {computed:#010x})",
            grp.bitmap_csum
        )));
    }
    Ok(())
}

/// Every block that holds file system metadata outside the files: each group's base
/// metadata (superblock and descriptor copies, reserved descriptor blocks), block and inode
/// bitmaps and inode table. Sorted by first block, as `(first block, count)`, merged where
/// they touch or overlap.
fn metadata_extents(g: &Geometry, groups: &[Group]) -> Vec<(u64, u64)> {
    let mut v = Vec::with_capacity(groups.len() * 4);
    for (n, grp) in groups.iter().enumerate() {
        let (s, l) = g.base_metadata(n as u64);
        if l > 0 {
            v.push((s, l));
        }
        v.push((grp.block_bitmap, 1));
        v.push((grp.inode_bitmap, 1));
        if g.inode_table_blocks > 0 {
            v.push((grp.inode_table, g.inode_table_blocks));
        }
    }
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, l) in v {
        match out.last_mut() {
            Some(last) if s <= last.0 + last.1 => {
                last.1 = last.1.max(s + l - last.0);
            }
            _ => out.push((s, l)),
        }
    }
    out
}

/// The free runs of a group whose bitmap was never written: all of it but the metadata
/// in it, as blocks. Taken as wholly used (no runs) with bigalloc or when the count
/// disagrees with the descriptor.
fn uninit_runs(
    g: &Geometry,
    first: u64,
    blocks: u64,
    grp: &Group,
    meta: &[(u64, u64)],
    runs: &mut Vec<(u64, u64)>,
) {
    if g.cluster_blocks != 1 {
        return;
    }
    let end = first + blocks;
    let mut pos = first;
    let mut found = Vec::new();
    let start = meta.partition_point(|&(s, l)| s + l <= first);
    for &(s, l) in &meta[start..] {
        if s >= end {
            break;
        }
        if s > pos {
            found.push((pos, s - pos));
        }
        pos = pos.max(s + l);
    }
    if pos < end {
        found.push((pos, end - pos));
    }
    let free: u64 = found.iter().map(|r| r.1).sum();
    if free == grp.free_clusters {
        runs.extend(found);
    }
}

/// Calls `f(start, len)` for every run of clear bits among the first `nbits` of `bitmap`
/// (bit `i` is bit `i % 8` of byte `i / 8`), in order.
pub(super) fn bit_runs(bitmap: &[u8], nbits: usize, mut f: impl FnMut(usize, usize)) {
    let nbits = nbits.min(bitmap.len() * 8);
    let mut i = 0;
    let mut run: Option<usize> = None;
    while i < nbits {
        if i % 8 == 0 && i + 8 <= nbits {
            let b = bitmap[i / 8];
            if b == 0xFF {
                if let Some(s) = run.take() {
                    f(s, i - s);
                }
                i += 8;
                continue;
            }
            if b == 0 {
                run.get_or_insert(i);
                i += 8;
                continue;
            }
        }
        let used = bitmap[i / 8] >> (i % 8) & 1 == 1;
        match (used, run) {
            (true, Some(s)) => {
                f(s, i - s);
                run = None;
            }
            (false, None) => run = Some(i),
            _ => {}
        }
        i += 1;
    }
    if let Some(s) = run {
        f(s, nbits - s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_bit_runs() {
        let mut runs = Vec::new();
        bit_runs(&[0b1111_0001, 0x00, 0xFF, 0x7F], 32, |s, l| {
            runs.push((s, l))
        });
        assert_eq!(runs, vec![(1, 3), (8, 8), (31, 1)]);
        runs.clear();
        bit_runs(&[0x00, 0x00], 12, |s, l| runs.push((s, l)));
        assert_eq!(runs, vec![(0, 12)]);
        runs.clear();
        bit_runs(&[0xFF], 100, |s, l| runs.push((s, l)));
        assert!(runs.is_empty());
    }

    #[test]
    fn crcs() {
        // CRC-16/ARC of "123456789" (initial 0, reflected 0x8005) is 0xBB3D.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
        // The standard CRC-32C check value, through the raw form.
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn backup_groups() {
        let sb = {
            let mut b = vec![0u8; SB_LEN];
            b[S_MAGIC..S_MAGIC + 2].copy_from_slice(&MAGIC.to_le_bytes());
            b[S_REV_LEVEL] = 1;
            b[S_STATE] = 1;
            b[S_FEATURE_RO_COMPAT] = RO_COMPAT_SPARSE_SUPER as u8;
            b[S_LOG_BLOCK_SIZE] = 2;
            b[S_BLOCKS_PER_GROUP..S_BLOCKS_PER_GROUP + 4].copy_from_slice(&32768u32.to_le_bytes());
            b[S_CLUSTERS_PER_GROUP..S_CLUSTERS_PER_GROUP + 4]
                .copy_from_slice(&32768u32.to_le_bytes());
            b[S_BLOCKS_COUNT_LO..S_BLOCKS_COUNT_LO + 4]
                .copy_from_slice(&(1u32 << 20).to_le_bytes());
            b[S_INODE_SIZE] = 0; // 256
            b[S_INODE_SIZE + 1] = 1;
            b[S_INODES_PER_GROUP..S_INODES_PER_GROUP + 4].copy_from_slice(&8192u32.to_le_bytes());
            b
        };
        let g = geometry(&sb, 4 << 30).unwrap();
        let with: Vec<u64> = (0..32).filter(|&n| g.has_super(n)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27]);
        assert_eq!(g.groups, 32);
        assert_eq!(g.descriptor_block(0), 1);
        assert!(matches!(
            geometry(&sb, 1 << 30),
            Err(Halt::Skip(Skip {
                kind: SkipKind::Inconsistent,
                ..
            }))
        ));
    }
}
