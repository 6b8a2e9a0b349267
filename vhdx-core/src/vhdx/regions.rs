//! Reading the region table (MS-VHDX §2.2.3; FORMATS.md A.5): copy 1, falling back to copy 2
//! when copy 1 is damaged (reported). Unknown required regions refuse the open; unknown
//! optional ones are kept so writers can preserve them.

use crate::error::{Error, Result};
use crate::format::vhdx::region::{self, RegionTableEntry, RegionTableHeader};
use crate::format::vhdx::{Guid, MIB};
use crate::report::{Finding, Severity};
use crate::storage::{read_bytes, Storage};
use zerocopy::FromBytes;

/// A region's place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Region type.
    pub guid: Guid,
    /// File offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// Required bit.
    pub required: bool,
}

/// The regions of a file.
#[derive(Debug, Clone)]
pub struct Regions {
    /// The BAT region.
    pub bat: Region,
    /// The metadata region.
    pub metadata: Region,
    /// Other (optional, unknown) regions, preserved untouched.
    pub others: Vec<Region>,
    /// Which copy was used (0 or 1).
    pub copy_used: usize,
}

fn parse(buf: &[u8], which: usize, file_len: u64) -> Result<Regions> {
    let base = region::OFFSETS[which];
    let name = if which == 0 {
        "VHDX region table 1"
    } else {
        "VHDX region table 2"
    };
    let (hdr, _) = RegionTableHeader::read_from_prefix(buf)
        .map_err(|_| Error::corrupt(name, base, "short"))?;
    if hdr.signature != region::SIGNATURE {
        return Err(Error::corrupt(name, base, "bad signature")
            .expected("\"regi\"")
            .found(format!("{:02x?}", hdr.signature)));
    }
    let computed = crate::format::vhdx::crc32c_with_zeroed_field(buf, region::CHECKSUM_FIELD);
    if computed != hdr.checksum.get() {
        return Err(Error::corrupt(name, base, "bad CRC-32C checksum")
            .expected(format!("{computed:#010x}"))
            .found(format!("{:#010x}", hdr.checksum.get())));
    }
    let count = hdr.entry_count.get();
    if count > region::MAX_ENTRIES {
        return Err(Error::corrupt(name, base + 8, "too many entries")
            .expected(format!("at most {}", region::MAX_ENTRIES))
            .found(count));
    }
    let mut bat = None;
    let mut meta = None;
    let mut others = Vec::new();
    let mut all: Vec<Region> = Vec::new();
    for i in 0..count as usize {
        let eoff = 16 + 32 * i;
        let at = base + eoff as u64;
        let (e, _) = RegionTableEntry::read_from_prefix(&buf[eoff..])
            .map_err(|_| Error::corrupt(name, at, "short"))?;
        let r = Region {
            guid: e.guid,
            offset: e.file_offset.get(),
            length: u64::from(e.length.get()),
            required: e.required.get() & 1 != 0,
        };
        if r.offset % MIB != 0 || r.offset < MIB || r.length % MIB != 0 {
            return Err(Error::corrupt(
                name,
                at,
                "region not aligned to 1 MiB or inside the header section",
            )
            .expected("1 MiB-aligned offset ≥ 1 MiB and length")
            .found(format!("offset {:#x}, length {:#x}", r.offset, r.length)));
        }
        let end = r
            .offset
            .checked_add(r.length)
            .ok_or_else(|| Error::corrupt(name, at, "region end overflows"))?;
        if end > file_len && (r.guid == region::BAT_GUID || r.guid == region::METADATA_GUID) {
            return Err(
                Error::corrupt(name, at, "region extends past the end of the file")
                    .expected(format!("end ≤ {file_len:#x}"))
                    .found(format!("end {end:#x}")),
            );
        }
        for o in &all {
            if o.guid == r.guid {
                return Err(Error::corrupt(
                    name,
                    at,
                    format!("duplicate region {}", r.guid),
                ));
            }
            if r.offset < o.offset + o.length && o.offset < end {
                return Err(Error::corrupt(
                    name,
                    at,
                    format!("region {} overlaps region {}", r.guid, o.guid),
                ));
            }
        }
        all.push(r);
        if r.guid == region::BAT_GUID {
            bat = Some(r);
        } else if r.guid == region::METADATA_GUID {
            meta = Some(r);
        } else if r.required {
            return Err(Error::unsupported(
                name,
                at,
                format!("unknown region {} is marked required", r.guid),
            ));
        } else {
            others.push(r);
        }
    }
    let bat = bat.ok_or_else(|| Error::corrupt(name, base, "no BAT region"))?;
    let metadata = meta.ok_or_else(|| Error::corrupt(name, base, "no metadata region"))?;
    if metadata.length == 0 || bat.length == 0 {
        return Err(Error::corrupt(name, base, "empty BAT or metadata region"));
    }
    Ok(Regions {
        bat,
        metadata,
        others,
        copy_used: which,
    })
}

/// Reads and validates the region table.
pub fn read_regions(
    storage: &dyn Storage,
    file_len: u64,
    findings: &mut Vec<Finding>,
) -> Result<Regions> {
    let mut first_err = None;
    for which in 0..2 {
        let buf = read_bytes(
            storage,
            region::OFFSETS[which],
            region::SIZE,
            "VHDX region table",
        )?;
        match parse(&buf, which, file_len) {
            Ok(r) => {
                if let Some(e) = first_err {
                    findings.push(Finding::from_error(Severity::Warning, &e));
                } else {
                    // Compare with copy 2 for the report.
                    if let Ok(b2) = read_bytes(
                        storage,
                        region::OFFSETS[1],
                        region::SIZE,
                        "VHDX region table 2",
                    ) {
                        match parse(&b2, 1, file_len) {
                            Ok(_) if b2[4..] != buf[4..] => findings.push(Finding::new(
                                Severity::Warning,
                                "VHDX region table 2",
                                Some(region::OFFSETS[1]),
                                "copy 2 differs from copy 1",
                            )),
                            Err(e) => findings.push(Finding::from_error(Severity::Warning, &e)),
                            _ => {}
                        }
                    }
                }
                return Ok(r);
            }
            // An unknown required region is a property of the file, not damage to one copy.
            Err(e) if e.kind() == crate::ErrorKind::Unsupported => return Err(e),
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                } else {
                    return Err(first_err.unwrap_or(e));
                }
            }
        }
    }
    Err(first_err
        .unwrap_or_else(|| Error::corrupt("VHDX region table", region::OFFSETS[0], "unreadable")))
}
