//! Writing a new VHD (FORMATS.md B.2–B.7).
//!
//! Creator: application `win `, host `Wi2k`, version 10.0 (0x000A0000), the values Windows
//! disk management and Hyper-V write. We choose it because all three readers that matter then
//! take the virtual size from CurrentSize: Hyper-V and libvhdi always do, and QEMU does for
//! `win ` (FORMATS.md B.3) — whereas for `vpc `/`qemu` QEMU would use the CHS product, which
//! rounds most sizes down. So the exact requested size (any multiple of 512) is what every
//! reader reports. The CHS geometry is still filled in per the VHD-spec algorithm
//! (`chs_geometry`) for BIOS-era guests.
//!
//! Layouts: fixed = data then footer; dynamic = footer copy at 0, dynamic header at 512, BAT
//! at 1536 padded to 512 bytes with 0xFFFFFFFF, footer at the end; differencing = the dynamic
//! layout plus the parent locator data (W2ru, W2ku, each in its own 512-byte-aligned area,
//! PlatformDataSpace in bytes as Windows writes it) after the BAT, then the footer.

use super::{check_block_size, now_unix, preallocate, CreateOptions, ParentFacts};
use crate::error::{Error, Result};
use crate::format::vhd::dynamic_header::{self as dh, DynamicHeader};
use crate::format::vhd::footer::{self as ft, Footer};
use crate::format::vhd::parent_locator::{PLATFORM_W2KU, PLATFORM_W2RU};
use crate::format::vhd::{chs_geometry, EPOCH_UNIX, MAX_DYNAMIC_SIZE, SECTOR};
use crate::image::Image;
use crate::ops::info::DiskType;
use crate::storage::{FileStorage, StorageMut};
use zerocopy::{FromZeros, IntoBytes};

/// Default block size (FORMATS.md B.6).
const DEFAULT_BLOCK: u32 = 2 << 20;
/// Offset of the dynamic header.
const HEADER_OFFSET: u64 = 512;
/// Offset of the BAT.
const BAT_OFFSET: u64 = 1536;

/// A validated VHD to write.
#[derive(Debug)]
pub(super) struct VhdPlan {
    disk_type: DiskType,
    size: u64,
    block_size: u32,
    parent: Option<ParentLink>,
}

/// What a VHD differencing disk records about its parent (FORMATS.md B.6).
#[derive(Debug, Clone)]
pub(crate) struct ParentLink {
    /// The parent footer's UniqueId.
    pub(crate) unique_id: [u8; 16],
    /// The parent's modification time, seconds since 2000-01-01 UTC.
    pub(crate) timestamp: u32,
    /// The parent's file name, UTF-16 big-endian (at most 512 bytes).
    pub(crate) unicode_name: Vec<u8>,
    /// The W2ru path (relative to the child's folder).
    pub(crate) relative: String,
    /// The W2ku path (absolute).
    pub(crate) absolute: String,
}

impl ParentLink {
    /// The link to the parent `p`, which must be a VHD.
    pub(crate) fn new(p: &ParentFacts) -> Result<Self> {
        let Image::Vhd(v) = &p.image else {
            return Err(Error::invalid_argument(
                "the parent of a VHD differencing disk must be a VHD",
            ));
        };
        let name: Vec<u16> = p.file_name.encode_utf16().collect();
        if name.len() > 256 {
            return Err(Error::invalid_argument(
                "the parent's file name is longer than 256 UTF-16 units",
            ));
        }
        Ok(ParentLink {
            unique_id: v.footer().unique_id,
            timestamp: u32::try_from(p.mtime_unix.saturating_sub(EPOCH_UNIX)).unwrap_or(u32::MAX),
            unicode_name: name.iter().flat_map(|u| u.to_be_bytes()).collect(),
            relative: p.relative.clone(),
            absolute: p.absolute.clone(),
        })
    }

    /// Records the parent's identity, time and name in `h` (its locator entries aside).
    pub(crate) fn apply(&self, h: &mut DynamicHeader) {
        h.parent_unique_id = self.unique_id;
        h.parent_timestamp.set(self.timestamp);
        h.parent_unicode_name.fill(0);
        h.parent_unicode_name[..self.unicode_name.len()].copy_from_slice(&self.unicode_name);
    }

    /// The locators to write, W2ru then W2ku: platform code and data (UTF-16LE).
    pub(crate) fn locators(&self) -> [([u8; 4], Vec<u8>); 2] {
        [
            (
                PLATFORM_W2RU,
                crate::format::utf16::encode_le(&self.relative),
            ),
            (
                PLATFORM_W2KU,
                crate::format::utf16::encode_le(&self.absolute),
            ),
        ]
    }
}

/// The space reserved for locator data of `len` bytes: whole sectors, at least one.
pub(crate) fn locator_space(len: usize) -> u64 {
    (len as u64).next_multiple_of(SECTOR).max(SECTOR)
}

pub(super) fn plan(opts: &CreateOptions, parent: Option<&ParentFacts>) -> Result<VhdPlan> {
    if let Some(n) = opts.logical_sector_size {
        if n != 512 {
            return Err(Error::invalid_argument(format!(
                "a VHD has 512-byte sectors; the logical sector size {n} is not possible"
            )));
        }
    }
    if let Some(n) = opts.physical_sector_size {
        if n != 512 && n != 4096 {
            return Err(Error::invalid_argument(format!(
                "the physical sector size {n} is neither 512 nor 4096"
            )));
        }
    }
    let (disk_type, default_size, link) = match parent {
        Some(p) => {
            // (A VHD parent: `ParentLink::new` refuses any other.)
            let link = ParentLink::new(p)?;
            let size = p.image.file().layer_size();
            (DiskType::Differencing, Some(size), Some(link))
        }
        None => (opts.disk_type.unwrap_or(DiskType::Dynamic), None, None),
    };
    let size = opts.size.or(default_size).ok_or_else(|| {
        Error::invalid_argument("the virtual size is required (no parent to take it from)")
    })?;
    if size == 0 || size % SECTOR != 0 || size > MAX_DYNAMIC_SIZE {
        return Err(Error::invalid_argument(format!(
            "the virtual size {size} must be a nonzero multiple of 512 and at most 2040 GiB"
        )));
    }
    if disk_type == DiskType::Fixed && opts.block_size.is_some() {
        return Err(Error::invalid_argument(
            "a fixed VHD has no blocks; do not give a block size",
        ));
    }
    let block_size = opts.block_size.unwrap_or(DEFAULT_BLOCK);
    check_block_size(block_size, 4096, 256 << 20)?;
    Ok(VhdPlan {
        disk_type,
        size,
        block_size,
        parent: link,
    })
}

fn io(e: std::io::Error, what: &'static str) -> Error {
    Error::io(e, what)
}

fn overflow() -> Error {
    Error::invalid_argument("the disk is too large for its layout")
}

fn footer(p: &VhdPlan) -> Footer {
    let mut f = Footer::new_zeroed();
    f.cookie = ft::COOKIE;
    f.features.set(ft::FEATURE_RESERVED);
    f.file_format_version.set(0x0001_0000);
    f.data_offset.set(if p.disk_type == DiskType::Fixed {
        ft::FIXED_DATA_OFFSET
    } else {
        HEADER_OFFSET
    });
    f.timestamp
        .set(u32::try_from(now_unix().saturating_sub(EPOCH_UNIX)).unwrap_or(u32::MAX));
    f.creator_application = *b"win ";
    f.creator_version.set(0x000A_0000);
    f.creator_host_os = *b"Wi2k";
    f.original_size.set(p.size);
    f.current_size.set(p.size);
    let chs = chs_geometry(p.size / SECTOR);
    f.cylinders.set(chs.cylinders);
    f.heads = chs.heads;
    f.sectors_per_track = chs.sectors_per_track;
    f.disk_type.set(match p.disk_type {
        DiskType::Fixed => ft::DISK_TYPE_FIXED,
        DiskType::Dynamic => ft::DISK_TYPE_DYNAMIC,
        DiskType::Differencing => ft::DISK_TYPE_DIFFERENCING,
    });
    f.unique_id = *uuid::Uuid::new_v4().as_bytes();
    let mut b = [0u8; ft::SIZE];
    b.copy_from_slice(f.as_bytes());
    f.checksum.set(Footer::compute_checksum(&b));
    f
}

pub(super) fn write(storage: &FileStorage, p: &VhdPlan) -> Result<()> {
    let f = footer(p);
    if p.disk_type == DiskType::Fixed {
        let len = p.size.checked_add(SECTOR).ok_or_else(overflow)?;
        preallocate(storage, len)?;
        storage
            .write_all_at(f.as_bytes(), p.size)
            .map_err(|e| io(e, "writing the footer"))?;
        return Ok(());
    }
    let entries = p.size.div_ceil(u64::from(p.block_size));
    let entries32 = u32::try_from(entries).map_err(|_| overflow())?;
    let bat_len = entries
        .checked_mul(4)
        .and_then(|n| n.checked_next_multiple_of(SECTOR))
        .ok_or_else(overflow)?;
    let bat_bytes = usize::try_from(bat_len).map_err(|_| overflow())?;
    let mut end = BAT_OFFSET.checked_add(bat_len).ok_or_else(overflow)?;

    let mut h = DynamicHeader::new_zeroed();
    h.cookie = dh::COOKIE;
    h.data_offset.set(u64::MAX);
    h.table_offset.set(BAT_OFFSET);
    h.header_version.set(dh::HEADER_VERSION);
    h.max_table_entries.set(entries32);
    h.block_size.set(p.block_size);
    let mut locator_data: Vec<(u64, Vec<u8>)> = Vec::new();
    if let Some(link) = &p.parent {
        link.apply(&mut h);
        for (i, (code, data)) in link.locators().into_iter().enumerate() {
            let space = locator_space(data.len());
            let len32 = u32::try_from(data.len()).map_err(|_| overflow())?;
            let space32 = u32::try_from(space).map_err(|_| overflow())?;
            let e = &mut h.parent_locators[i];
            e.platform_code = code;
            e.platform_data_space.set(space32);
            e.platform_data_length.set(len32);
            e.platform_data_offset.set(end);
            locator_data.push((end, data));
            end = end.checked_add(space).ok_or_else(overflow)?;
        }
    }
    let mut hb = [0u8; dh::SIZE];
    hb.copy_from_slice(h.as_bytes());
    h.checksum.set(DynamicHeader::compute_checksum(&hb));

    let file_len = end.checked_add(SECTOR).ok_or_else(overflow)?;
    storage
        .set_len(file_len)
        .map_err(|e| io(e, "setting the length of the new disk"))?;
    storage
        .write_all_at(f.as_bytes(), 0)
        .map_err(|e| io(e, "writing the footer copy"))?;
    storage
        .write_all_at(h.as_bytes(), HEADER_OFFSET)
        .map_err(|e| io(e, "writing the dynamic header"))?;
    storage
        .write_all_at(&vec![0xFFu8; bat_bytes], BAT_OFFSET)
        .map_err(|e| io(e, "writing the BAT"))?;
    for (off, data) in &locator_data {
        storage
            .write_all_at(data, *off)
            .map_err(|e| io(e, "writing a parent locator"))?;
    }
    storage
        .write_all_at(f.as_bytes(), end)
        .map_err(|e| io(e, "writing the footer"))?;
    Ok(())
}
