//! Writing a new VHDX (FORMATS.md A.2–A.8, A.13) in the Hyper-V layout:
//!
//! | Offset | Content |
//! |---|---|
//! | 0 | file identifier, creator `vhdx <version>` |
//! | 64 KiB, 128 KiB | headers, sequence numbers 1 and 2, same GUIDs, LogGuid zero |
//! | 192 KiB, 256 KiB | two identical region tables (BAT, metadata; Required = 1) |
//! | 1 MiB | log (default 1 MiB, empty) |
//! | 1 MiB + log | BAT (entry count per A.7, rounded up to 1 MiB) |
//! | after the BAT | metadata region (1 MiB) |
//! | after the metadata | fixed disks: every payload block, FULLY_PRESENT, consecutive |
//!
//! Dynamic and differencing files end after the metadata region, all BAT entries 0
//! (NOT_PRESENT).

use super::{check_block_size, preallocate, CreateOptions, ParentFacts, MIB};
use crate::error::{Error, Result};
use crate::format::vhdx::bat::{self, PAYLOAD_FULLY_PRESENT};
use crate::format::vhdx::file_id::{self, FileIdentifier};
use crate::format::vhdx::header::{self, Header};
use crate::format::vhdx::metadata::{
    self as md, FILE_PARAMETERS, FLAG_IS_REQUIRED, FLAG_IS_VIRTUAL_DISK, HAS_PARENT,
    LEAVE_BLOCK_ALLOCATED, LOGICAL_SECTOR_SIZE, PARENT_LOCATOR, PHYSICAL_SECTOR_SIZE,
    VIRTUAL_DISK_ID, VIRTUAL_DISK_SIZE,
};
use crate::format::vhdx::parent_locator::VHDX_LOCATOR_TYPE;
use crate::format::vhdx::region::{self, BAT_GUID, METADATA_GUID};
use crate::format::vhdx::{crc32c_with_zeroed_field, Guid};
use crate::image::Image;
use crate::ops::info::DiskType;
use crate::storage::{FileStorage, StorageMut};
use zerocopy::{FromZeros, IntoBytes};

/// Largest VHDX virtual size, 64 TiB.
const MAX_SIZE: u64 = 64 << 40;
/// Default block size of fixed and dynamic disks (Hyper-V; unconfirmed).
const DEFAULT_BLOCK: u32 = 32 << 20;
/// Default block size of differencing disks (Hyper-V; unconfirmed).
const DEFAULT_DIFF_BLOCK: u32 = 2 << 20;

/// A validated VHDX to write.
#[derive(Debug)]
pub(super) struct VhdxPlan {
    disk_type: DiskType,
    size: u64,
    block_size: u32,
    logical: u32,
    physical: u32,
    log_size: u32,
    parent: Option<ParentLink>,
}

/// What a VHDX differencing disk records about its parent (the parent locator's values).
#[derive(Debug, Clone)]
pub(crate) struct ParentLink {
    /// The parent's DataWriteGuid (`parent_linkage`).
    pub(crate) linkage: Guid,
    /// `relative_path`.
    pub(crate) relative: String,
    /// `absolute_win32_path` (`\\?\` + the host's absolute path).
    pub(crate) absolute: String,
}

impl ParentLink {
    /// The link to the parent `p` (whose DataWriteGuid is `linkage`), its paths written as
    /// [`super`] describes.
    pub(crate) fn new(p: &ParentFacts, linkage: Guid) -> Self {
        ParentLink {
            linkage,
            relative: p.relative.clone(),
            absolute: if p.absolute.starts_with(r"\\?\") {
                p.absolute.clone()
            } else {
                format!(r"\\?\{}", p.absolute)
            },
        }
    }

    /// The key/value pairs of the parent locator, in the order they are written.
    pub(crate) fn pairs(&self) -> Vec<(String, String)> {
        vec![
            (
                "parent_linkage".into(),
                format!("{{{}}}", self.linkage.to_uuid()),
            ),
            ("relative_path".into(), self.relative.clone()),
            ("absolute_win32_path".into(), self.absolute.clone()),
        ]
    }
}

fn sector_size(n: Option<u32>, default: u32, what: &str) -> Result<u32> {
    let n = n.unwrap_or(default);
    if n != 512 && n != 4096 {
        return Err(Error::invalid_argument(format!(
            "the {what} sector size {n} is neither 512 nor 4096"
        )));
    }
    Ok(n)
}

pub(super) fn plan(opts: &CreateOptions, parent: Option<&ParentFacts>) -> Result<VhdxPlan> {
    let (disk_type, default_size, default_logical, default_physical, link) = match parent {
        Some(p) => {
            let Image::Vhdx(v) = &p.image else {
                return Err(Error::invalid_argument(
                    "the parent of a VHDX differencing disk must be a VHDX",
                ));
            };
            let m = v.metadata();
            let link = ParentLink::new(p, v.header().data_write_guid);
            (
                DiskType::Differencing,
                Some(m.virtual_size),
                m.logical_sector_size,
                m.physical_sector_size,
                Some(link),
            )
        }
        None => (
            opts.disk_type.unwrap_or(DiskType::Dynamic),
            None,
            512,
            4096,
            None,
        ),
    };
    let logical = sector_size(opts.logical_sector_size, default_logical, "logical")?;
    let physical = sector_size(opts.physical_sector_size, default_physical, "physical")?;
    if link.is_some() && logical != default_logical {
        return Err(Error::invalid_argument(format!(
            "the logical sector size {logical} differs from the parent's {default_logical}"
        )));
    }
    let size = opts.size.or(default_size).ok_or_else(|| {
        Error::invalid_argument("the virtual size is required (no parent to take it from)")
    })?;
    if size == 0 || size % u64::from(logical) != 0 || size > MAX_SIZE {
        return Err(Error::invalid_argument(format!(
            "the virtual size {size} must be a nonzero multiple of the logical sector size \
             {logical} and at most 64 TiB"
        )));
    }
    let block_size = opts.block_size.unwrap_or(if link.is_some() {
        DEFAULT_DIFF_BLOCK
    } else {
        DEFAULT_BLOCK
    });
    check_block_size(block_size, 1 << 20, 256 << 20)?;
    let log_size = opts.log_size.unwrap_or(1 << 20);
    if log_size == 0 || u64::from(log_size) % MIB != 0 {
        return Err(Error::invalid_argument(format!(
            "the log size {log_size} is not a nonzero multiple of 1 MiB"
        )));
    }
    Ok(VhdxPlan {
        disk_type,
        size,
        block_size,
        logical,
        physical,
        log_size,
        parent: link,
    })
}

fn overflow() -> Error {
    Error::invalid_argument("the disk is too large for its layout")
}

fn round_mib(n: u64) -> Result<u64> {
    n.checked_next_multiple_of(MIB).ok_or_else(overflow)
}

fn io(e: std::io::Error, what: &'static str) -> Error {
    Error::io(e, what)
}

/// The parent locator item holding `pairs` (MS-VHDX §2.6.2.6; FORMATS.md A.6.6): header,
/// key/value entries, then the UTF-16LE strings.
pub(crate) fn encode_parent_locator(pairs: &[(String, String)]) -> Result<Vec<u8>> {
    let mut head = Vec::new();
    head.extend_from_slice(VHDX_LOCATOR_TYPE.as_bytes());
    head.extend_from_slice(&0u16.to_le_bytes());
    head.extend_from_slice(&(pairs.len() as u16).to_le_bytes());
    let mut strings = Vec::new();
    let base = 20 + 12 * pairs.len();
    for (k, v) in pairs {
        let (k, v) = (
            crate::format::utf16::encode_le(k),
            crate::format::utf16::encode_le(v),
        );
        let too_long = || Error::invalid_argument("a parent path is too long for the locator");
        let ko = u32::try_from(base + strings.len()).map_err(|_| too_long())?;
        strings.extend_from_slice(&k);
        let vo = u32::try_from(base + strings.len()).map_err(|_| too_long())?;
        strings.extend_from_slice(&v);
        let kl = u16::try_from(k.len()).map_err(|_| too_long())?;
        let vl = u16::try_from(v.len()).map_err(|_| too_long())?;
        head.extend_from_slice(&ko.to_le_bytes());
        head.extend_from_slice(&vo.to_le_bytes());
        head.extend_from_slice(&kl.to_le_bytes());
        head.extend_from_slice(&vl.to_le_bytes());
    }
    head.extend_from_slice(&strings);
    Ok(head)
}

/// The metadata region (1 MiB).
fn metadata_region(p: &VhdxPlan) -> Result<Vec<u8>> {
    let mut region = vec![0u8; MIB as usize];
    let mut flags = 0u32;
    if p.disk_type == DiskType::Fixed {
        flags |= LEAVE_BLOCK_ALLOCATED;
    }
    if p.parent.is_some() {
        flags |= HAS_PARENT;
    }
    let mut file_params = Vec::with_capacity(8);
    file_params.extend_from_slice(&p.block_size.to_le_bytes());
    file_params.extend_from_slice(&flags.to_le_bytes());
    let disk_id = Guid::from_uuid(uuid::Uuid::new_v4());
    let mut items: Vec<(Guid, Vec<u8>, u32)> = vec![
        (FILE_PARAMETERS, file_params, FLAG_IS_REQUIRED),
        (
            VIRTUAL_DISK_SIZE,
            p.size.to_le_bytes().to_vec(),
            FLAG_IS_VIRTUAL_DISK | FLAG_IS_REQUIRED,
        ),
        (
            VIRTUAL_DISK_ID,
            disk_id.as_bytes().to_vec(),
            FLAG_IS_VIRTUAL_DISK | FLAG_IS_REQUIRED,
        ),
        (
            LOGICAL_SECTOR_SIZE,
            p.logical.to_le_bytes().to_vec(),
            FLAG_IS_VIRTUAL_DISK | FLAG_IS_REQUIRED,
        ),
        (
            PHYSICAL_SECTOR_SIZE,
            p.physical.to_le_bytes().to_vec(),
            FLAG_IS_VIRTUAL_DISK | FLAG_IS_REQUIRED,
        ),
    ];
    if let Some(link) = &p.parent {
        items.push((
            PARENT_LOCATOR,
            encode_parent_locator(&link.pairs())?,
            FLAG_IS_REQUIRED,
        ));
    }
    region[..8].copy_from_slice(&md::SIGNATURE);
    region[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
    let mut at = md::TABLE_SIZE;
    for (i, (id, data, flags)) in items.iter().enumerate() {
        let e = 32 + 32 * i;
        let end = at
            .checked_add(data.len())
            .filter(|&end| end <= region.len())
            .ok_or_else(|| Error::invalid_argument("the metadata does not fit its region"))?;
        region[e..e + 16].copy_from_slice(id.as_bytes());
        region[e + 16..e + 20].copy_from_slice(&(at as u32).to_le_bytes());
        region[e + 20..e + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
        region[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
        region[at..end].copy_from_slice(data);
        // Keep items 8-byte aligned.
        at = end.next_multiple_of(8);
    }
    Ok(region)
}

pub(super) fn write(storage: &FileStorage, p: &VhdxPlan) -> Result<()> {
    let differencing = p.parent.is_some();
    let cr = bat::chunk_ratio(p.logical, p.block_size);
    let total = bat::total_entries(p.size, p.block_size, cr, differencing);
    let payload_blocks = p.size.div_ceil(u64::from(p.block_size));
    let log_offset = MIB;
    let bat_offset = log_offset
        .checked_add(u64::from(p.log_size))
        .ok_or_else(overflow)?;
    let bat_len = round_mib(total.checked_mul(8).ok_or_else(overflow)?)?.max(MIB);
    let bat_len32 = u32::try_from(bat_len).map_err(|_| overflow())?;
    let meta_offset = bat_offset.checked_add(bat_len).ok_or_else(overflow)?;
    let data_offset = meta_offset.checked_add(MIB).ok_or_else(overflow)?;
    let fixed = p.disk_type == DiskType::Fixed;
    let file_len = if fixed {
        payload_blocks
            .checked_mul(u64::from(p.block_size))
            .and_then(|n| n.checked_add(data_offset))
            .ok_or_else(overflow)?
    } else {
        data_offset
    };

    if fixed {
        preallocate(storage, file_len)?;
    } else {
        storage
            .set_len(file_len)
            .map_err(|e| io(e, "setting the length of the new disk"))?;
    }

    // File identifier.
    let mut fid = FileIdentifier::new_zeroed();
    fid.signature = file_id::SIGNATURE;
    let creator = crate::format::utf16::encode_le(&format!("vhdx {}", env!("CARGO_PKG_VERSION")));
    let n = creator.len().min(fid.creator.len() - 2);
    fid.creator[..n].copy_from_slice(&creator[..n]);
    storage
        .write_all_at(fid.as_bytes(), file_id::OFFSET)
        .map_err(|e| io(e, "writing the file identifier"))?;

    // Headers: identical bodies, sequence numbers 1 and 2.
    let file_write_guid = Guid::from_uuid(uuid::Uuid::new_v4());
    let data_write_guid = Guid::from_uuid(uuid::Uuid::new_v4());
    for (i, off) in header::OFFSETS.iter().enumerate() {
        let mut h = Header::new_zeroed();
        h.signature = header::SIGNATURE;
        h.sequence_number.set(i as u64 + 1);
        h.file_write_guid = file_write_guid;
        h.data_write_guid = data_write_guid;
        h.version.set(1);
        h.log_length.set(p.log_size);
        h.log_offset.set(log_offset);
        let mut bytes = [0u8; header::SIZE];
        bytes.copy_from_slice(h.as_bytes());
        h.checksum.set(Header::compute_checksum(&bytes));
        storage
            .write_all_at(h.as_bytes(), *off)
            .map_err(|e| io(e, "writing a header"))?;
    }

    // Region tables.
    let mut rt = vec![0u8; region::SIZE];
    rt[..4].copy_from_slice(&region::SIGNATURE);
    rt[8..12].copy_from_slice(&2u32.to_le_bytes());
    for (i, (guid, off, len)) in [
        (BAT_GUID, bat_offset, bat_len32),
        (METADATA_GUID, meta_offset, MIB as u32),
    ]
    .into_iter()
    .enumerate()
    {
        let e = 16 + 32 * i;
        rt[e..e + 16].copy_from_slice(guid.as_bytes());
        rt[e + 16..e + 24].copy_from_slice(&off.to_le_bytes());
        rt[e + 24..e + 28].copy_from_slice(&len.to_le_bytes());
        rt[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes());
    }
    let crc = crc32c_with_zeroed_field(&rt, region::CHECKSUM_FIELD);
    rt[4..8].copy_from_slice(&crc.to_le_bytes());
    for off in region::OFFSETS {
        storage
            .write_all_at(&rt, off)
            .map_err(|e| io(e, "writing a region table"))?;
    }

    // Metadata region.
    storage
        .write_all_at(&metadata_region(p)?, meta_offset)
        .map_err(|e| io(e, "writing the metadata region"))?;

    // BAT: fixed disks point every payload entry at its block; the rest stay zero.
    if fixed {
        const CHUNK_ENTRIES: u64 = 1 << 17; // 1 MiB of entries per write
        let mut buf = Vec::with_capacity(CHUNK_ENTRIES as usize * 8);
        let mut index = 0u64;
        while index < total {
            buf.clear();
            let end = total.min(index + CHUNK_ENTRIES);
            for i in index..end {
                // Index i is a payload entry unless it is a chunk's bitmap slot.
                let entry = if (i + 1) % (cr + 1) == 0 {
                    0
                } else {
                    let block = i - i / (cr + 1);
                    let off = block
                        .checked_mul(u64::from(p.block_size))
                        .and_then(|o| o.checked_add(data_offset))
                        .ok_or_else(overflow)?;
                    bat::make_entry(PAYLOAD_FULLY_PRESENT, off)
                };
                buf.extend_from_slice(&entry.to_le_bytes());
            }
            storage
                .write_all_at(&buf, bat_offset + index * 8)
                .map_err(|e| io(e, "writing the BAT"))?;
            index = end;
        }
    }
    Ok(())
}
