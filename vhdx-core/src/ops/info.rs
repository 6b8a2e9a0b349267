//! The information model behind `vhdx info`, `info --json` and Python `Disk.info()`: one
//! serializable struct, filled by each format, so both fronts print the same facts.

use crate::bytes::human_size_exact;
use crate::disk::{Status, VirtualDisk};
use crate::error::{Error, ErrorKind, Result};
use crate::report::Finding;
use serde::Serialize;

/// Image file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// VHDX (Hyper-V, Windows 8 and later).
    Vhdx,
    /// VHD (Virtual PC, Virtual Server, Hyper-V v1, Azure).
    Vhd,
    /// A raw disk image (no container).
    Raw,
}

impl Format {
    /// Lower-case name (`"vhdx"`, `"vhd"`, `"raw"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Vhdx => "vhdx",
            Format::Vhd => "vhd",
            Format::Raw => "raw",
        }
    }
}

/// Provisioning type of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskType {
    /// Every block preallocated.
    Fixed,
    /// Blocks allocated on first write.
    Dynamic,
    /// Holds changes against a parent disk.
    Differencing,
}

impl DiskType {
    /// Lower-case name (`"fixed"`, `"dynamic"`, `"differencing"`).
    pub fn as_str(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// State of the VHDX log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogInfo {
    /// `"clean"` (nothing to replay), `"dirty"` (a valid sequence awaits replay) or
    /// `"invalid"` (the header names a log but no valid sequence was found).
    pub state: String,
    /// Entries in the active sequence (0 when clean).
    pub entries: u64,
    /// Log GUID from the current header (all zeros when clean).
    pub guid: String,
    /// Log offset in the file.
    pub offset: u64,
    /// Log length in bytes.
    pub length: u32,
    /// Whether this open replayed the log in memory.
    pub replayed_in_memory: bool,
}

/// VHDX-specific facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VhdxInfo {
    /// Sequence number of the current header.
    pub header_sequence: u64,
    /// Which header copy is current (1 or 2).
    pub current_header: u8,
    /// FileWriteGuid of the current header.
    pub file_write_guid: String,
    /// DataWriteGuid of the current header (what children record as parent_linkage).
    pub data_write_guid: String,
    /// The log.
    pub log: LogInfo,
    /// LeaveBlockAllocated flag of the file parameters.
    pub leave_block_allocated: bool,
    /// Chunk ratio (payload blocks per sector-bitmap block).
    pub chunk_ratio: u64,
    /// BAT entries (payload and sector-bitmap).
    pub bat_entries: u64,
    /// Creator string of the file identifier, when present.
    pub creator: Option<String>,
}

/// CHS geometry recorded in a VHD footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
}

/// VHD-specific facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VhdInfo {
    /// Creator application (4 characters, e.g. `"win "`, `"qemu"`).
    pub creator_application: String,
    /// Creator version as `major.minor`.
    pub creator_version: String,
    /// Creator host OS (`"Wi2k"`, `"Mac "`).
    pub creator_host_os: String,
    /// CHS geometry.
    pub geometry: Geometry,
    /// Size at creation.
    pub original_size: u64,
    /// CurrentSize field.
    pub current_size: u64,
    /// Creation time stamp (seconds since 2000-01-01 UTC).
    pub timestamp: u32,
    /// Saved-state flag.
    pub saved_state: bool,
    /// Whether the footer at the end of the file has a valid checksum.
    pub footer_checksum_ok: bool,
    /// Which footer copy is in use (`"end"` or `"start"`).
    pub footer_used: String,
    /// Maximum BAT entries (dynamic and differencing).
    pub max_table_entries: Option<u32>,
}

/// One parent locator entry as stored in the child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocatorInfo {
    /// Key or platform code (`relative_path`, `W2ru`, `parent_unicode_name`, …).
    pub key: String,
    /// The stored value (a path, or a GUID for linkage keys).
    pub value: String,
}

/// A differencing disk's link to its parent, and what became of it on open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParentInfo {
    /// Locators as stored.
    pub locators: Vec<LocatorInfo>,
    /// Identifiers the parent must carry (VHDX parent_linkage(2) / VHD parent unique id).
    pub expected_ids: Vec<String>,
    /// `"ok"`, `"not_found"`, `"linkage_mismatch"`, `"ignored_mismatch"`, `"refused"`,
    /// `"error"`, or `"not_opened"`.
    pub status: String,
    /// The path the parent was opened from, when found.
    pub resolved_path: Option<String>,
    /// The parent's actual identifier, when opened.
    pub actual_id: Option<String>,
    /// Every candidate path tried, in order.
    pub tried: Vec<String>,
    /// The error that stopped the parent from opening, if any.
    pub error: Option<String>,
}

/// One disk of the opened chain, nearest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainEntry {
    /// Path of the image.
    pub path: String,
    /// Format.
    pub format: Format,
    /// Type.
    pub disk_type: DiskType,
}

/// Allocation statistics from a scan of the block table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BlockStats {
    /// Payload blocks the virtual disk spans.
    pub total_blocks: u64,
    /// Blocks with data in this file (fully or partially present).
    pub allocated_blocks: u64,
    /// Blocks explicitly marked zero.
    pub zero_blocks: u64,
    /// Bytes of payload data the allocated blocks hold in the file.
    pub allocated_bytes: u64,
    /// Percentage of allocated blocks that do not directly follow the previous allocated
    /// block in the file (0 = perfectly sequential).
    pub fragmentation_percent: f64,
}

/// What one image of a chain gives the virtual disk (see [`ChainUsage`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LevelUsage {
    /// Chain depth: 0 = the disk itself, 1 = its parent, and so on.
    pub depth: u32,
    /// Path of the image.
    pub path: String,
    /// Bytes of the virtual disk whose data is read from this image.
    pub data_bytes: u64,
    /// Bytes that read as zeros because this image marks them zero (VHDX ZERO, UNMAPPED or
    /// UNDEFINED blocks), hiding any deeper image.
    pub zero_bytes: u64,
}

/// Where the bytes of a differencing disk are read from, over the whole chain. Only the
/// allocation is consulted (block tables and sector bitmaps), never the payload. The data
/// and zero bytes of every level plus `unallocated_bytes` add up to the virtual size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainUsage {
    /// One entry per image of the chain, this disk first.
    pub levels: Vec<LevelUsage>,
    /// Bytes whose data is read from parent files (depth 1 and deeper): what compacting
    /// this disk cannot give back and merging the chain can.
    pub parent_data_bytes: u64,
    /// Bytes that read as zeros because some level marks them zero.
    pub zero_bytes: u64,
    /// Bytes no image of the chain holds (they read as zeros).
    pub unallocated_bytes: u64,
    /// What the parent bytes mean for reclaiming space, in a sentence.
    pub note: String,
}

/// Tallies where each byte of `disk` is read from; `paths` names the chain's images, this
/// disk first. Reads only allocation ([`VirtualDisk::visit_extents`]), never payload.
pub fn chain_usage(disk: &dyn VirtualDisk, paths: Vec<String>) -> Result<ChainUsage> {
    let mut levels: Vec<LevelUsage> = paths
        .into_iter()
        .zip(0u32..)
        .map(|(path, depth)| LevelUsage {
            depth,
            path,
            data_bytes: 0,
            zero_bytes: 0,
        })
        .collect();
    let mut unallocated_bytes = 0u64;
    disk.visit_extents(0, disk.size(), &mut |e| {
        let depth = match e.status {
            Status::Data { depth, .. } | Status::Zero { depth } => depth,
            Status::Unallocated => {
                unallocated_bytes += e.length;
                return Ok(());
            }
        };
        let n = levels.len();
        let level = levels.get_mut(depth as usize).ok_or_else(|| {
            Error::new(
                ErrorKind::Corrupt,
                format!("internal: an extent at depth {depth} of a chain of {n} images"),
            )
        })?;
        match e.status {
            Status::Data { .. } => level.data_bytes += e.length,
            _ => level.zero_bytes += e.length,
        }
        Ok(())
    })?;
    let parent_data_bytes = levels.iter().skip(1).map(|l| l.data_bytes).sum();
    let note = if parent_data_bytes == 0 {
        "no byte of the virtual disk is read from parent files".to_string()
    } else {
        format!(
            "{} of the virtual disk are read from parent files; compacting this disk cannot \
             reclaim them, only merging the chain can",
            human_size_exact(parent_data_bytes)
        )
    };
    Ok(ChainUsage {
        zero_bytes: levels.iter().map(|l| l.zero_bytes).sum(),
        levels,
        parent_data_bytes,
        unallocated_bytes,
        note,
    })
}

/// Everything `vhdx info` reports about an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Info {
    /// Path of the image, when opened from a file.
    pub path: Option<String>,
    /// Format.
    pub format: Format,
    /// Type.
    pub disk_type: DiskType,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Block size in bytes (dynamic and differencing; VHDX fixed too).
    pub block_size: Option<u32>,
    /// Logical sector size.
    pub logical_sector_size: u32,
    /// Physical sector size.
    pub physical_sector_size: u32,
    /// Size of the image file.
    pub file_size: u64,
    /// Bytes the host file system has allocated to the file (less than `file_size` when the
    /// file is sparse), when the platform tells.
    pub host_allocated_bytes: Option<u64>,
    /// Block allocation statistics; `None` when the scan was skipped (see `block_stats_note`).
    pub block_stats: Option<BlockStats>,
    /// Why `block_stats` is missing, when it is.
    pub block_stats_note: Option<String>,
    /// Disk identifier (VHDX Virtual Disk ID, VHD UniqueId).
    pub disk_id: Option<String>,
    /// VHDX details.
    pub vhdx: Option<VhdxInfo>,
    /// VHD details.
    pub vhd: Option<VhdInfo>,
    /// Parent link, for differencing disks.
    pub parent: Option<ParentInfo>,
    /// The opened chain, this disk first.
    pub chain: Vec<ChainEntry>,
    /// Where the virtual disk's bytes are read from, level by level (differencing disks);
    /// `None` when not computed (see `chain_usage_note`).
    pub chain_usage: Option<ChainUsage>,
    /// Why `chain_usage` is missing for a differencing disk, and how to get it.
    pub chain_usage_note: Option<String>,
    /// What the guest sees: the partition table and the volumes with their file systems
    /// (through the chain); `None` when it cannot be read (see `guest_note`).
    pub guest: Option<crate::guest::GuestLayout>,
    /// Why `guest` is missing, when it is.
    pub guest_note: Option<String>,
    /// Problems tolerated on open.
    pub warnings: Vec<Finding>,
}

impl Info {
    /// An info record with the common fields set and the optional ones empty.
    pub fn new(format: Format, disk_type: DiskType, virtual_size: u64, file_size: u64) -> Self {
        Info {
            path: None,
            format,
            disk_type,
            virtual_size,
            block_size: None,
            logical_sector_size: 512,
            physical_sector_size: 512,
            file_size,
            host_allocated_bytes: None,
            block_stats: None,
            block_stats_note: None,
            disk_id: None,
            vhdx: None,
            vhd: None,
            parent: None,
            chain: Vec::new(),
            chain_usage: None,
            chain_usage_note: None,
            guest: None,
            guest_note: None,
            warnings: Vec::new(),
        }
    }
}

/// Accumulates [`BlockStats`] from blocks visited in virtual order.
#[derive(Debug, Default)]
pub struct BlockStatsBuilder {
    total: u64,
    allocated: u64,
    zero: u64,
    bytes: u64,
    discontiguous: u64,
    last_end: Option<u64>,
}

impl BlockStatsBuilder {
    /// Counts one block that holds no data in this file.
    pub fn empty(&mut self) {
        self.total += 1;
    }

    /// Counts one block explicitly marked zero.
    pub fn zero(&mut self) {
        self.total += 1;
        self.zero += 1;
    }

    /// Counts one block stored at `file_offset`, `len` bytes long.
    pub fn allocated(&mut self, file_offset: u64, len: u64) {
        self.total += 1;
        self.allocated += 1;
        self.bytes += len;
        if let Some(end) = self.last_end {
            if end != file_offset {
                self.discontiguous += 1;
            }
        }
        self.last_end = Some(file_offset.saturating_add(len));
    }

    /// The statistics so far.
    pub fn finish(&self) -> BlockStats {
        let frag = if self.allocated > 1 {
            100.0 * self.discontiguous as f64 / (self.allocated - 1) as f64
        } else {
            0.0
        };
        BlockStats {
            total_blocks: self.total,
            allocated_blocks: self.allocated,
            zero_blocks: self.zero,
            allocated_bytes: self.bytes,
            fragmentation_percent: (frag * 100.0).round() / 100.0,
        }
    }
}
