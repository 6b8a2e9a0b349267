//! Reading the metadata region (MS-VHDX §2.6; FORMATS.md A.6): the table, every known item,
//! and the parent locator. Items are read into buffers sized by their validated length.

use super::regions::Region;
use crate::error::{Error, Result};
use crate::format::vhdx::metadata::{self as m, MetadataTableEntry, MetadataTableHeader};
use crate::format::vhdx::parent_locator::{KeyValueEntry, ParentLocatorHeader, VHDX_LOCATOR_TYPE};
use crate::format::vhdx::Guid;
use crate::report::{Finding, Severity};
use crate::storage::{read_bytes, Storage};
use zerocopy::FromBytes;

/// One entry of the metadata table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemEntry {
    /// Item id.
    pub item_id: Guid,
    /// Offset from the region start.
    pub offset: u32,
    /// Length.
    pub length: u32,
    /// Flags.
    pub flags: u32,
}

/// The decoded metadata.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// Payload block size.
    pub block_size: u32,
    /// LeaveBlockAllocated.
    pub leave_block_allocated: bool,
    /// HasParent (differencing).
    pub has_parent: bool,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Virtual disk id.
    pub disk_id: uuid::Uuid,
    /// Logical sector size.
    pub logical_sector_size: u32,
    /// Physical sector size.
    pub physical_sector_size: u32,
    /// Parent locator key/value pairs in stored order (differencing only).
    pub parent_locator: Option<Vec<(String, String)>>,
    /// Every table entry, known or not (writers preserve unknown ones).
    pub entries: Vec<ItemEntry>,
}

const NAME: &str = "VHDX metadata table";

fn known(id: Guid) -> bool {
    [
        m::FILE_PARAMETERS,
        m::VIRTUAL_DISK_SIZE,
        m::VIRTUAL_DISK_ID,
        m::LOGICAL_SECTOR_SIZE,
        m::PHYSICAL_SECTOR_SIZE,
        m::PARENT_LOCATOR,
    ]
    .contains(&id)
}

/// Parses a parent locator item (FORMATS.md D.7).
pub fn parse_parent_locator(item: &[u8], at: u64) -> Result<Vec<(String, String)>> {
    const S: &str = "VHDX parent locator";
    let (h, _) = ParentLocatorHeader::read_from_prefix(item)
        .map_err(|_| Error::corrupt(S, at, "item shorter than the locator header"))?;
    if h.locator_type != VHDX_LOCATOR_TYPE {
        return Err(Error::unsupported(S, at, "unknown locator type")
            .expected(VHDX_LOCATOR_TYPE)
            .found(h.locator_type));
    }
    let count = usize::from(h.key_value_count.get());
    if 20 + 12 * count > item.len() {
        return Err(
            Error::corrupt(S, at + 18, "key/value entries pass the end of the item")
                .expected(format!("at most {} entries", (item.len() - 20) / 12))
                .found(count),
        );
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(count);
    for k in 0..count {
        let eoff = 20 + 12 * k;
        let (e, _) = KeyValueEntry::read_from_prefix(&item[eoff..])
            .map_err(|_| Error::corrupt(S, at + eoff as u64, "short entry"))?;
        let slice = |off: u32, len: u16, what: &str| -> Result<&[u8]> {
            let (off, len) = (off as usize, usize::from(len));
            if off == 0
                || len == 0
                || len % 2 != 0
                || off.checked_add(len).is_none_or(|end| end > item.len())
            {
                return Err(Error::corrupt(
                    S,
                    at + eoff as u64,
                    format!("entry {k}: {what} outside the item, empty or odd-sized"),
                )
                .found(format!(
                    "offset {off}, length {len}, item length {}",
                    item.len()
                )));
            }
            Ok(&item[off..off + len])
        };
        let key =
            crate::format::utf16::decode_le(slice(e.key_offset.get(), e.key_length.get(), "key")?);
        let value = crate::format::utf16::decode_le(slice(
            e.value_offset.get(),
            e.value_length.get(),
            "value",
        )?);
        if out.iter().any(|(kk, _)| *kk == key) {
            return Err(Error::corrupt(
                S,
                at + eoff as u64,
                format!("duplicate key {key:?}"),
            ));
        }
        out.push((key, value));
    }
    let linkage = out.iter().find(|(k, _)| k == "parent_linkage");
    match linkage {
        None => return Err(Error::corrupt(S, at, "no parent_linkage key")),
        Some((_, v)) => {
            if parse_guid_text(v).is_none() {
                return Err(Error::corrupt(S, at, "parent_linkage is not a GUID").found(v));
            }
        }
    }
    if !out.iter().any(|(k, _)| {
        matches!(
            k.as_str(),
            "relative_path" | "volume_path" | "absolute_win32_path"
        )
    }) {
        return Err(Error::corrupt(
            S,
            at,
            "no path key (relative_path, volume_path or absolute_win32_path)",
        ));
    }
    Ok(out)
}

/// Parses `{GUID}` or `GUID` text, any case.
pub fn parse_guid_text(s: &str) -> Option<uuid::Uuid> {
    let t = s.trim().trim_start_matches('{').trim_end_matches('}');
    uuid::Uuid::parse_str(t).ok()
}

/// Reads and validates the metadata table and items.
pub fn read_metadata(
    storage: &dyn Storage,
    region: &Region,
    findings: &mut Vec<Finding>,
) -> Result<Metadata> {
    let base = region.offset;
    if region.length < m::TABLE_SIZE as u64 {
        return Err(Error::corrupt(
            NAME,
            base,
            "metadata region smaller than its table",
        ));
    }
    let table = read_bytes(storage, base, m::TABLE_SIZE, "VHDX metadata table")?;
    let (h, _) = MetadataTableHeader::read_from_prefix(&table[..])
        .map_err(|_| Error::corrupt(NAME, base, "short"))?;
    if h.signature != m::SIGNATURE {
        return Err(Error::corrupt(NAME, base, "bad signature")
            .expected("\"metadata\"")
            .found(format!("{:02x?}", h.signature)));
    }
    let count = h.entry_count.get();
    if count > m::MAX_ENTRIES {
        return Err(Error::corrupt(NAME, base + 10, "too many entries")
            .expected(format!("at most {}", m::MAX_ENTRIES))
            .found(count));
    }
    if h.reserved.get() != 0 || h.reserved2 != [0; 20] {
        findings.push(Finding::new(
            Severity::Warning,
            NAME,
            Some(base),
            "reserved header fields are not zero",
        ));
    }
    let mut entries: Vec<ItemEntry> = Vec::with_capacity(usize::from(count));
    let mut user = 0usize;
    for i in 0..usize::from(count) {
        let eoff = 32 + 32 * i;
        let at = base + eoff as u64;
        let (e, _) = MetadataTableEntry::read_from_prefix(&table[eoff..])
            .map_err(|_| Error::corrupt(NAME, at, "short"))?;
        let it = ItemEntry {
            item_id: e.item_id,
            offset: e.offset.get(),
            length: e.length.get(),
            flags: e.flags.get(),
        };
        if it.flags & !7 != 0 {
            findings.push(Finding::new(
                Severity::Warning,
                NAME,
                Some(at),
                format!(
                    "item {}: reserved flag bits set ({:#x})",
                    it.item_id, it.flags
                ),
            ));
        }
        if it.flags & m::FLAG_IS_USER != 0 {
            user += 1;
        }
        if it.length == 0 {
            if it.offset != 0 {
                return Err(Error::corrupt(
                    NAME,
                    at,
                    format!("item {}: empty item with a nonzero offset", it.item_id),
                )
                .found(it.offset));
            }
        } else {
            let end = u64::from(it.offset) + u64::from(it.length);
            if (it.offset as usize) < m::TABLE_SIZE
                || it.length > m::MAX_ITEM_LENGTH
                || end > region.length
            {
                return Err(Error::corrupt(
                    NAME,
                    at,
                    format!(
                        "item {} lies outside the metadata region or overlaps the table",
                        it.item_id
                    ),
                )
                .expected(format!(
                    "offset ≥ 64 KiB, length ≤ 1 MiB, end ≤ {:#x}",
                    region.length
                ))
                .found(format!("offset {:#x}, length {:#x}", it.offset, it.length)));
            }
            for o in &entries {
                let oend = u64::from(o.offset) + u64::from(o.length);
                if o.length != 0 && u64::from(it.offset) < oend && u64::from(o.offset) < end {
                    return Err(Error::corrupt(
                        NAME,
                        at,
                        format!("item {} overlaps item {}", it.item_id, o.item_id),
                    ));
                }
            }
        }
        if entries
            .iter()
            .any(|o| o.item_id == it.item_id && (o.flags & 1) == (it.flags & 1))
        {
            return Err(Error::corrupt(
                NAME,
                at,
                format!("duplicate item {}", it.item_id),
            ));
        }
        let is_user = it.flags & m::FLAG_IS_USER != 0;
        if !is_user && !known(it.item_id) && it.flags & m::FLAG_IS_REQUIRED != 0 {
            return Err(Error::unsupported(
                NAME,
                at,
                format!("unknown metadata item {} is marked required", it.item_id),
            ));
        }
        entries.push(it);
    }
    if user > m::MAX_USER_ENTRIES {
        return Err(Error::corrupt(NAME, base, "too many user metadata entries")
            .expected("at most 1024")
            .found(user));
    }
    let item =
        |id: Guid, name: &'static str, want: Option<usize>| -> Result<Option<(Vec<u8>, u64)>> {
            let Some(e) = entries
                .iter()
                .find(|e| e.item_id == id && e.flags & m::FLAG_IS_USER == 0)
            else {
                return Ok(None);
            };
            let at = base + u64::from(e.offset);
            if let Some(w) = want {
                if e.length as usize != w {
                    return Err(Error::corrupt(name, at, "wrong item length")
                        .expected(w)
                        .found(e.length));
                }
            }
            Ok(Some((
                read_bytes(storage, at, e.length as usize, name)?,
                at,
            )))
        };
    let need = |v: Option<(Vec<u8>, u64)>, name: &'static str| -> Result<(Vec<u8>, u64)> {
        v.ok_or_else(|| Error::corrupt(NAME, base, format!("required item {name} is missing")))
    };
    let (fp, fp_at) = need(
        item(m::FILE_PARAMETERS, "VHDX file parameters", Some(8))?,
        "file parameters",
    )?;
    let block_size = u32::from_le_bytes([fp[0], fp[1], fp[2], fp[3]]);
    let flags = u32::from_le_bytes([fp[4], fp[5], fp[6], fp[7]]);
    if !block_size.is_power_of_two() || !(1 << 20..=256 << 20).contains(&block_size) {
        return Err(
            Error::corrupt("VHDX file parameters", fp_at, "invalid block size")
                .expected("a power of two from 1 MiB to 256 MiB")
                .found(block_size),
        );
    }
    if flags & !3 != 0 {
        findings.push(Finding::new(
            Severity::Warning,
            "VHDX file parameters",
            Some(fp_at + 4),
            format!("reserved flag bits set ({flags:#x})"),
        ));
    }
    let (vs, vs_at) = need(
        item(m::VIRTUAL_DISK_SIZE, "VHDX virtual disk size", Some(8))?,
        "virtual disk size",
    )?;
    let virtual_size = u64::from_le_bytes(
        vs[..8]
            .try_into()
            .map_err(|_| Error::corrupt(NAME, vs_at, "short"))?,
    );
    let (id, _) = need(
        item(m::VIRTUAL_DISK_ID, "VHDX virtual disk id", Some(16))?,
        "virtual disk id",
    )?;
    let disk_id = uuid::Uuid::from_bytes_le(
        id[..16]
            .try_into()
            .map_err(|_| Error::corrupt(NAME, base, "short"))?,
    );
    let sector = |g: Guid, name: &'static str| -> Result<u32> {
        let (b, at) = need(item(g, name, Some(4))?, name)?;
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if v != 512 && v != 4096 {
            return Err(Error::corrupt(name, at, "invalid sector size")
                .expected("512 or 4096")
                .found(v));
        }
        Ok(v)
    };
    let logical_sector_size = sector(m::LOGICAL_SECTOR_SIZE, "VHDX logical sector size")?;
    let physical_sector_size = sector(m::PHYSICAL_SECTOR_SIZE, "VHDX physical sector size")?;
    if virtual_size == 0
        || virtual_size % u64::from(logical_sector_size) != 0
        || virtual_size > 64 << 40
    {
        return Err(
            Error::corrupt("VHDX virtual disk size", vs_at, "invalid virtual size")
                .expected(format!(
                    "a nonzero multiple of {logical_sector_size} up to 64 TiB"
                ))
                .found(virtual_size),
        );
    }
    let has_parent = flags & m::HAS_PARENT != 0;
    let parent_locator = if has_parent {
        let (pl, at) = item(m::PARENT_LOCATOR, "VHDX parent locator", None)?.ok_or_else(|| {
            Error::corrupt(
                NAME,
                base,
                "a differencing disk (HasParent) without a parent locator",
            )
        })?;
        Some(parse_parent_locator(&pl, at)?)
    } else {
        None
    };
    Ok(Metadata {
        block_size,
        leave_block_allocated: flags & m::LEAVE_BLOCK_ALLOCATED != 0,
        has_parent,
        virtual_size,
        disk_id,
        logical_sector_size,
        physical_sector_size,
        parent_locator,
        entries,
    })
}
