//! VHD images (FORMATS.md part B): open (footer selection with the offset-0 fallback, dynamic
//! header validation, parent locators), the BAT read on demand, and the mapping of virtual
//! ranges to file ranges for fixed, dynamic and differencing disks.
//!
//! Size policy: the virtual size is the footer's CurrentSize (the rule of Hyper-V, Azure and
//! every modern writer; FORMATS.md B.3). The CHS geometry is reported by
//! [`ImageFile::info`], and `check` notes when QEMU would derive a different size from it.
//!
//! Footer policy: the end footer is used (also the legacy 511-byte one); a bad checksum is
//! tolerated with a warning. Dynamic and differencing files fall back to the copy at offset 0
//! when the end footer is missing, unusable, or fails its checksum while the copy is valid.
//! Offset 0 is never probed first: a fixed disk's payload may itself begin with a VHD.

pub mod bat;
mod check;
pub mod open;
#[cfg(test)]
mod tests;

use crate::chain::{Locator, ParentRequest};
use crate::disk::{push_segment, Layer, Segment, Source};
use crate::error::{Error, Result};
use crate::format::vhd::dynamic_header::{DynamicHeader, BAT_UNALLOCATED};
use crate::format::vhd::footer::{self as ft, Footer};
use crate::format::vhd::{bitmap_bit, MAX_DYNAMIC_SIZE, SECTOR};
use crate::image::ImageFile;
use crate::ops::info::{BlockStatsBuilder, DiskType, Format, Geometry, Info, VhdInfo};
use crate::report::{Finding, Report};
use crate::storage::Storage;
use open::{FooterCopy, Footers, Sparse};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;

/// BATs up to this many entries are scanned for `info` block statistics by default.
pub const INFO_SCAN_LIMIT: u64 = 1 << 20;

/// An opened VHD file (without its parents).
#[derive(Debug)]
pub struct Vhd {
    name: String,
    storage: Arc<dyn Storage>,
    file_len: AtomicU64,
    footers: Footers,
    size: u64,
    disk_type: DiskType,
    sparse: Option<Sparse>,
    locators: Vec<Locator>,
    findings: Vec<Finding>,
}

impl Vhd {
    /// The file length this image knows of (grown by the write path).
    pub fn file_len(&self) -> u64 {
        self.file_len.load(Ordering::Acquire)
    }

    /// Records that the write path cut the file to `len` bytes.
    pub(crate) fn set_file_len(&self, len: u64) {
        self.file_len.store(len, Ordering::Release);
    }

    /// Records that the write path grew the file to `len` bytes.
    pub(crate) fn note_file_len(&self, len: u64) {
        self.file_len.fetch_max(len, Ordering::AcqRel);
    }

    /// Opens a VHD image from `storage`; `name` is used in messages. Every field that sizes
    /// or places something is validated against the file length before it is used.
    pub fn open(storage: Arc<dyn Storage>, name: &str) -> Result<Vhd> {
        let mut findings = Vec::new();
        let file_len = storage
            .len()
            .map_err(|e| Error::io(e, "reading the file length"))?;
        let footers = open::select_footer(&*storage, file_len, &mut findings)?;
        let fr = footers.used;
        let f = &fr.footer;
        let version = f.file_format_version.get();
        if version >> 16 != 1 {
            return Err(Error::unsupported(
                "VHD footer",
                fr.offset + 12,
                "unsupported file format version",
            )
            .expected("major version 1 (0x00010000)")
            .found(format!("{version:#010x}")));
        }
        let disk_type = match f.disk_type.get() {
            ft::DISK_TYPE_FIXED => DiskType::Fixed,
            ft::DISK_TYPE_DYNAMIC => DiskType::Dynamic,
            _ => DiskType::Differencing,
        };
        let size = f.current_size.get();
        if size % SECTOR != 0 {
            return Err(Error::corrupt(
                "VHD footer",
                fr.offset + 48,
                "CurrentSize is not a multiple of 512",
            )
            .found(size));
        }
        let mut sparse = None;
        let mut locators = Vec::new();
        if disk_type == DiskType::Fixed {
            // The data runs from offset 0 up to the footer.
            if size > fr.offset {
                return Err(Error::corrupt(
                    "VHD footer",
                    fr.offset + 48,
                    "the file is too short for the fixed disk's CurrentSize",
                )
                .expected(format!("file length ≥ {}", size.saturating_add(512)))
                .found(format!("{file_len} bytes")));
            }
        } else {
            if size > MAX_DYNAMIC_SIZE {
                return Err(Error::corrupt(
                    "VHD footer",
                    fr.offset + 48,
                    "CurrentSize exceeds the 2040 GiB limit of dynamic VHDs",
                )
                .expected(format!("at most {MAX_DYNAMIC_SIZE}"))
                .found(size));
            }
            let sp = open::read_sparse(&*storage, file_len, &fr, size, &mut findings)?;
            if disk_type == DiskType::Differencing {
                locators = open::read_locators(&*storage, file_len, &sp, &mut findings);
            }
            sparse = Some(sp);
        }
        Ok(Vhd {
            name: name.to_string(),
            storage,
            file_len: AtomicU64::new(file_len),
            footers,
            size,
            disk_type,
            sparse,
            locators,
            findings,
        })
    }

    /// The footer copies as found.
    pub fn footers(&self) -> &Footers {
        &self.footers
    }

    /// The dynamic header and BAT (dynamic and differencing disks).
    pub fn sparse(&self) -> Option<&Sparse> {
        self.sparse.as_ref()
    }

    /// The footer in use.
    pub fn footer(&self) -> &Footer {
        &self.footers.used.footer
    }

    /// Which footer copy is in use.
    pub fn footer_copy(&self) -> FooterCopy {
        self.footers.which
    }

    /// The dynamic header (dynamic and differencing disks).
    pub fn dynamic_header(&self) -> Option<&DynamicHeader> {
        self.sparse.as_ref().map(|s| &s.header)
    }

    /// The BAT reader (dynamic and differencing disks).
    pub fn bat(&self) -> Option<&bat::BatReader> {
        self.sparse.as_ref().map(|s| &s.bat)
    }

    /// Data bytes per block (dynamic and differencing disks).
    pub fn block_size(&self) -> Option<u32> {
        self.sparse.as_ref().map(|s| s.block_size)
    }

    /// The decoded parent locators, in lookup order (differencing disks).
    pub fn locators(&self) -> &[Locator] {
        &self.locators
    }

    /// File offset of the data of `block` whose BAT entry is `entry`, checked so that the part
    /// of the block inside the virtual disk lies inside the file.
    pub(crate) fn block_data_offset(&self, sp: &Sparse, block: u64, entry: u32) -> Result<u64> {
        let bs = u64::from(sp.block_size);
        let bitmap_off = u64::from(entry) * SECTOR;
        let data_off = bitmap_off + sp.bitmap_bytes; // < 2^41 + 2^16: no overflow
        let used = bs.min(self.size.saturating_sub(block.saturating_mul(bs)));
        let end = data_off + used;
        if end > self.file_len() {
            return Err(Error::corrupt(
                "VHD BAT entry",
                sp.bat.entry_offset(block),
                format!("block {block} lies past the end of the file"),
            )
            .expected(format!(
                "bitmap + data ending at or before the file length {:#x}",
                self.file_len()
            ))
            .found(format!("block at sector {entry:#x}, ending at {end:#x}")));
        }
        Ok(data_off)
    }

    /// Segments of `[in_block, in_block + len)` of a differencing block, from its sector
    /// bitmap: present sectors are data in this file, the others come from the parent.
    fn resolve_bitmap(
        &self,
        sp: &Sparse,
        data_off: u64,
        in_block: u64,
        len: u64,
        out: &mut Vec<Segment>,
    ) -> Result<()> {
        let bitmap_off = data_off - sp.bitmap_bytes;
        let first = in_block / SECTOR;
        let last = (in_block + len).div_ceil(SECTOR); // exclusive
        let b0 = first / 8;
        let b1 = last.div_ceil(8);
        // At most BlockSize / 4096 ≤ 64 KiB, bounded by the BlockSize cap.
        let mut bits = vec![0u8; (b1 - b0) as usize];
        self.storage
            .read_exact_at(&mut bits, bitmap_off + b0)
            .map_err(|e| Error::read_failed("VHD sector bitmap", bitmap_off + b0, e))?;
        let bit = |s: u64| bitmap_bit(&bits, s - b0 * 8);
        let stop = in_block + len;
        let mut p = in_block;
        while p < stop {
            let s = p / SECTOR;
            let present = bit(s);
            let mut s2 = s + 1;
            while s2 < last && bit(s2) == present {
                s2 += 1;
            }
            let run_end = (s2 * SECTOR).min(stop);
            let source = if present {
                Source::Data {
                    file_offset: data_off + p,
                }
            } else {
                Source::Parent
            };
            push_segment(out, run_end - p, source);
            p = run_end;
        }
        Ok(())
    }

    fn block_stats(&self, sp: &Sparse) -> Result<crate::ops::info::BlockStats> {
        let mut b = BlockStatsBuilder::default();
        let bs = u64::from(sp.block_size);
        sp.bat.for_each(&*self.storage, sp.blocks, |_, e| {
            if e == BAT_UNALLOCATED {
                b.empty();
            } else {
                // The bitmap is counted with its block so back-to-back blocks read as
                // contiguous; allocated_bytes is corrected to data bytes below.
                b.allocated(u64::from(e) * SECTOR, sp.bitmap_bytes + bs);
            }
            Ok(())
        })?;
        let mut s = b.finish();
        s.allocated_bytes = s.allocated_blocks.saturating_mul(bs);
        Ok(s)
    }
}

impl Layer for Vhd {
    fn layer_size(&self) -> u64 {
        self.size
    }

    fn storage(&self) -> &dyn Storage {
        &*self.storage
    }

    fn resolve(&self, offset: u64, length: u64, out: &mut Vec<Segment>) -> Result<()> {
        let Some(sp) = &self.sparse else {
            // Fixed: the file starts with the disk, byte for byte.
            push_segment(
                out,
                length,
                Source::Data {
                    file_offset: offset,
                },
            );
            return Ok(());
        };
        let bs = u64::from(sp.block_size);
        let differencing = self.disk_type == DiskType::Differencing;
        let end = offset.checked_add(length).ok_or_else(|| {
            Error::invalid_argument(format!("range {offset:#x}+{length:#x} overflows"))
        })?;
        let mut pos = offset;
        while pos < end {
            let block = pos / bs;
            let in_block = pos % bs;
            let n = (bs - in_block).min(end - pos);
            let entry = sp.bat.entry(&*self.storage, block)?;
            if entry == BAT_UNALLOCATED {
                // Zeros in a dynamic disk (no parent), the parent's data in a differencing one.
                push_segment(out, n, Source::Parent);
            } else {
                let data_off = self.block_data_offset(sp, block, entry)?;
                if differencing {
                    self.resolve_bitmap(sp, data_off, in_block, n, out)?;
                } else {
                    // Dynamic disks: sectors whose bitmap bit is 0 are never written and hold
                    // zeros on disk, so the whole block is read from the file, as QEMU does
                    // (FORMATS.md B.7).
                    push_segment(
                        out,
                        n,
                        Source::Data {
                            file_offset: data_off + in_block,
                        },
                    );
                }
            }
            pos += n;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    /// Every block is checked to lie inside the file before it is read, so a short read is
    /// an error, never silent zeros.
    fn tolerate_short_data(&self) -> bool {
        false
    }
}

impl ImageFile for Vhd {
    fn format(&self) -> Format {
        Format::Vhd
    }

    fn disk_type(&self) -> DiskType {
        self.disk_type
    }

    fn logical_sector_size(&self) -> u32 {
        512
    }

    fn physical_sector_size(&self) -> u32 {
        512
    }

    fn parent_request(&self) -> Option<ParentRequest> {
        if self.disk_type != DiskType::Differencing {
            return None;
        }
        let h = self.dynamic_header()?;
        Some(ParentRequest {
            locators: self.locators.clone(),
            expected: vec![Uuid::from_bytes(h.parent_unique_id)],
            id_name: "UniqueId",
            format: Format::Vhd,
            logical_sector_size: 512,
        })
    }

    fn linkage_id(&self) -> Uuid {
        Uuid::from_bytes(self.footer().unique_id)
    }

    fn findings(&self) -> Vec<Finding> {
        self.findings.clone()
    }

    fn info(&self, scan: bool) -> Result<Info> {
        let f = self.footer();
        let mut info = Info::new(Format::Vhd, self.disk_type, self.size, self.file_len());
        info.disk_id = Some(format!("{{{}}}", self.linkage_id()));
        let v = f.creator_version.get();
        info.vhd = Some(VhdInfo {
            creator_application: ft::code_text(f.creator_application),
            creator_version: format!("{}.{}", v >> 16, v & 0xFFFF),
            creator_host_os: ft::code_text(f.creator_host_os),
            geometry: Geometry {
                cylinders: f.cylinders.get(),
                heads: f.heads,
                sectors_per_track: f.sectors_per_track,
            },
            original_size: f.original_size.get(),
            current_size: f.current_size.get(),
            timestamp: f.timestamp.get(),
            saved_state: f.saved_state != 0,
            footer_checksum_ok: self.footers.end.is_some_and(|e| e.checksum_ok),
            footer_used: match self.footers.which {
                FooterCopy::End => "end".into(),
                FooterCopy::Start => "start".into(),
            },
            max_table_entries: self
                .sparse
                .as_ref()
                .map(|s| s.header.max_table_entries.get()),
        });
        match &self.sparse {
            Some(sp) => {
                info.block_size = Some(sp.block_size);
                if scan || sp.blocks <= INFO_SCAN_LIMIT {
                    info.block_stats = Some(self.block_stats(sp)?);
                } else {
                    info.block_stats_note = Some(format!(
                        "not scanned: the BAT has {} entries; pass --scan (Python: scan=True) \
                         to count allocated blocks",
                        sp.blocks
                    ));
                }
            }
            None => {
                info.block_stats_note = Some(
                    "a fixed VHD has no block table: every byte of the disk is stored in the file"
                        .into(),
                );
            }
        }
        info.warnings = self.findings.clone();
        Ok(info)
    }

    fn check(&self, report: &mut Report) {
        check::check(self, report);
    }
}
