//! VHDX images: open (identifier, headers, log replay, regions, metadata), the BAT, and the
//! mapping of virtual ranges to file ranges for every payload block state.

pub mod bat;
mod check;
pub mod header_write;
pub mod headers;
pub mod log;
pub mod metadata;
pub mod regions;

use crate::chain::{Locator, LocatorKind, ParentRequest};
use crate::disk::{push_segment, Layer, Segment, Source};
use crate::error::{Error, Result};
use crate::format::vhdx::bat as fb;
use crate::format::vhdx::header::Header;
use crate::format::vhdx::MIB;
use crate::image::ImageFile;
use crate::ops::info::{BlockStatsBuilder, DiskType, Format, Info, LogInfo, VhdxInfo};
use crate::report::{Finding, Report};
use crate::storage::Storage;
use bat::BatReader;
use headers::Headers;
use metadata::Metadata;
use regions::Regions;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;

pub use log::{replay_log_in_place, ReplayOutcome};

/// BAT tables up to this many entries are scanned for `info` block statistics by default.
pub const INFO_SCAN_LIMIT: u64 = 1 << 20;

/// An opened VHDX file (without its parents).
#[derive(Debug)]
pub struct Vhdx {
    name: String,
    storage: Arc<dyn Storage>,
    file_len: AtomicU64,
    headers: Headers,
    regions: Regions,
    meta: Metadata,
    bat: BatReader,
    chunk_ratio: u64,
    log: LogInfo,
    findings: Vec<Finding>,
}

impl Vhdx {
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

    /// Opens a VHDX image from `storage`. A dirty log is replayed into an in-memory overlay:
    /// the file itself is never written. `name` is used in messages.
    pub fn open(storage: Arc<dyn Storage>, name: &str) -> Result<Vhdx> {
        let mut findings = Vec::new();
        let headers = headers::read_headers(&*storage, &mut findings)?;
        let h = headers.current;
        let (storage, log) = log::open_log(storage, &h, &mut findings)?;
        let file_len = storage
            .len()
            .map_err(|e| Error::io(e, "reading the file length"))?;
        let regions = regions::read_regions(&*storage, file_len, &mut findings)?;
        check_log_placement(&h, &regions)?;
        let meta = metadata::read_metadata(&*storage, &regions.metadata, &mut findings)?;
        let chunk_ratio = fb::chunk_ratio(meta.logical_sector_size, meta.block_size);
        let entries = fb::total_entries(
            meta.virtual_size,
            meta.block_size,
            chunk_ratio,
            meta.has_parent,
        );
        let need = entries
            .checked_mul(8)
            .ok_or_else(|| Error::corrupt("VHDX BAT", regions.bat.offset, "size overflows"))?;
        if need > regions.bat.length {
            return Err(Error::corrupt(
                "VHDX BAT region",
                regions.bat.offset,
                "the BAT region is too small for the virtual size",
            )
            .expected(format!("at least {need} bytes ({entries} entries)"))
            .found(format!("{} bytes", regions.bat.length)));
        }
        Ok(Vhdx {
            name: name.to_string(),
            bat: bat::bat_reader(regions.bat.offset, entries),
            storage,
            file_len: AtomicU64::new(file_len),
            headers,
            regions,
            meta,
            chunk_ratio,
            log,
            findings,
        })
    }

    /// The decoded metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The current header.
    pub fn header(&self) -> &Header {
        &self.headers.current
    }

    /// The headers as read.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The regions.
    pub fn regions(&self) -> &Regions {
        &self.regions
    }

    /// The BAT reader.
    pub fn bat(&self) -> &BatReader {
        &self.bat
    }

    /// Payload blocks per sector-bitmap block.
    pub fn chunk_ratio(&self) -> u64 {
        self.chunk_ratio
    }

    /// The state of the log at open.
    pub fn log_info(&self) -> &LogInfo {
        &self.log
    }

    /// Number of payload blocks.
    pub fn payload_blocks(&self) -> u64 {
        self.meta
            .virtual_size
            .div_ceil(u64::from(self.meta.block_size))
    }

    /// BAT entry of payload block `block`.
    pub fn payload_entry(&self, block: u64) -> Result<u64> {
        self.bat.entry(
            &*self.storage,
            fb::payload_bat_index(block, self.chunk_ratio),
        )
    }

    /// BAT entry of the sector bitmap of chunk `chunk`.
    pub fn bitmap_entry(&self, chunk: u64) -> Result<u64> {
        self.bat.entry(
            &*self.storage,
            fb::sector_bitmap_bat_index(chunk, self.chunk_ratio),
        )
    }

    pub(crate) fn bat_error(&self, block: u64, msg: impl Into<String>) -> Error {
        let idx = fb::payload_bat_index(block, self.chunk_ratio);
        Error::corrupt(
            "VHDX BAT entry",
            self.bat.offset() + idx * 8,
            format!("payload block {block}: {}", msg.into()),
        )
    }

    /// Validates a data block offset (FULLY/PARTIALLY_PRESENT) for reads.
    pub(crate) fn data_offset(&self, block: u64, entry: u64) -> Result<u64> {
        let off = fb::entry_offset(entry);
        if off < MIB {
            return Err(self
                .bat_error(block, "data block inside the header section")
                .expected("offset ≥ 1 MiB")
                .found(format!("{off:#x}")));
        }
        if off >= self.file_len() {
            return Err(self
                .bat_error(block, "data block lies past the end of the file")
                .expected(format!("offset < file length {:#x}", self.file_len()))
                .found(format!("{off:#x}")));
        }
        Ok(off)
    }

    /// Appends the segments of the sector range `[start, end)` (bytes within payload `block`
    /// at `block_start`) of a partially present block.
    fn resolve_partial(
        &self,
        block: u64,
        data_off: u64,
        in_block: u64,
        len: u64,
        out: &mut Vec<Segment>,
    ) -> Result<()> {
        let lss = u64::from(self.meta.logical_sector_size);
        let chunk = block / self.chunk_ratio;
        let sb = self.bitmap_entry(chunk)?;
        if fb::entry_state(sb) != fb::SB_PRESENT {
            let idx = fb::sector_bitmap_bat_index(chunk, self.chunk_ratio);
            return Err(Error::corrupt("VHDX BAT entry", self.bat.offset() + idx * 8, format!("payload block {block} is partially present but chunk {chunk} has no sector bitmap"))
                .expected("SB_BLOCK_PRESENT (6)")
                .found(fb::entry_state(sb)));
        }
        let sb_off = fb::entry_offset(sb);
        if sb_off < MIB || sb_off.checked_add(MIB).is_none_or(|e| e > self.file_len()) {
            let idx = fb::sector_bitmap_bat_index(chunk, self.chunk_ratio);
            return Err(Error::corrupt(
                "VHDX BAT entry",
                self.bat.offset() + idx * 8,
                format!("sector bitmap of chunk {chunk} lies outside the file"),
            )
            .found(format!("{sb_off:#x}")));
        }
        // Sector numbers relative to the chunk.
        let sectors_per_block = u64::from(self.meta.block_size) / lss;
        let first = (block % self.chunk_ratio) * sectors_per_block + in_block / lss;
        let last = (block % self.chunk_ratio) * sectors_per_block + (in_block + len).div_ceil(lss);
        let byte0 = first / 8;
        let byte1 = last.div_ceil(8);
        let mut bits = vec![0u8; (byte1 - byte0) as usize];
        self.storage
            .read_exact_at(&mut bits, sb_off + byte0)
            .map_err(|e| Error::read_failed("VHDX sector bitmap", sb_off + byte0, e))?;
        let mut pos = in_block; // byte position within the block
        let end = in_block + len;
        while pos < end {
            let s = (block % self.chunk_ratio) * sectors_per_block + pos / lss;
            let bit = (s - byte0 * 8) as usize;
            let present = bits[bit / 8] >> (bit % 8) & 1 == 1;
            let next = ((pos / lss) + 1) * lss;
            let n = next.min(end) - pos;
            let source = if present {
                Source::Data {
                    file_offset: data_off + pos,
                }
            } else {
                Source::Parent
            };
            push_segment(out, n, source);
            pos += n;
        }
        Ok(())
    }

    fn block_stats(&self) -> Result<crate::ops::info::BlockStats> {
        let mut b = BlockStatsBuilder::default();
        let bs = u64::from(self.meta.block_size);
        let blocks = self.payload_blocks();
        let cr = self.chunk_ratio;
        self.bat.for_each(&*self.storage, u64::MAX, |idx, e| {
            // Skip the interleaved sector-bitmap slots.
            if idx % (cr + 1) == cr {
                return Ok(());
            }
            let block = idx - idx / (cr + 1);
            if block >= blocks {
                return Ok(());
            }
            match fb::entry_state(e) {
                fb::PAYLOAD_FULLY_PRESENT | fb::PAYLOAD_PARTIALLY_PRESENT => {
                    b.allocated(fb::entry_offset(e), bs)
                }
                fb::PAYLOAD_ZERO
                | fb::PAYLOAD_UNMAPPED
                | fb::PAYLOAD_UNDEFINED
                | fb::PAYLOAD_UNMAPPED_V095 => b.zero(),
                _ => b.empty(),
            }
            Ok(())
        })?;
        Ok(b.finish())
    }
}

fn check_log_placement(h: &Header, regions: &Regions) -> Result<()> {
    let (off, len) = (h.log_offset.get(), u64::from(h.log_length.get()));
    if len == 0 {
        return Ok(());
    }
    let end = off
        .checked_add(len)
        .ok_or_else(|| Error::corrupt("VHDX header", 0x10000 + 72, "log end overflows"))?;
    for r in [&regions.bat, &regions.metadata]
        .into_iter()
        .chain(regions.others.iter())
    {
        if off < r.offset + r.length && r.offset < end {
            return Err(Error::corrupt(
                "VHDX log",
                off,
                format!("the log overlaps region {}", r.guid),
            )
            .found(format!(
                "log {off:#x}+{len:#x}, region {:#x}+{:#x}",
                r.offset, r.length
            )));
        }
    }
    Ok(())
}

impl Layer for Vhdx {
    fn layer_size(&self) -> u64 {
        self.meta.virtual_size
    }

    fn storage(&self) -> &dyn Storage {
        &*self.storage
    }

    fn resolve(&self, offset: u64, length: u64, out: &mut Vec<Segment>) -> Result<()> {
        let bs = u64::from(self.meta.block_size);
        let diff = self.meta.has_parent;
        let mut pos = offset;
        let end = offset + length;
        while pos < end {
            let block = pos / bs;
            let in_block = pos % bs;
            let n = (bs - in_block).min(end - pos);
            let entry = self.payload_entry(block)?;
            let source = match fb::entry_state(entry) {
                fb::PAYLOAD_FULLY_PRESENT => Source::Data {
                    file_offset: self.data_offset(block, entry)? + in_block,
                },
                fb::PAYLOAD_PARTIALLY_PRESENT => {
                    if !diff {
                        return Err(self
                            .bat_error(block, "partially present block in a disk without a parent")
                            .expected("a state valid for fixed/dynamic disks")
                            .found("PAYLOAD_BLOCK_PARTIALLY_PRESENT (7)"));
                    }
                    let data_off = self.data_offset(block, entry)?;
                    self.resolve_partial(block, data_off, in_block, n, out)?;
                    pos += n;
                    continue;
                }
                // NOT_PRESENT: the parent's data in a differencing disk; unallocated (zeros)
                // otherwise.
                fb::PAYLOAD_NOT_PRESENT => Source::Parent,
                // ZERO must read zeros; UNDEFINED and UNMAPPED may read anything, and zeros
                // never leak old or parent data. They hide the parent in differencing disks.
                fb::PAYLOAD_ZERO
                | fb::PAYLOAD_UNDEFINED
                | fb::PAYLOAD_UNMAPPED
                | fb::PAYLOAD_UNMAPPED_V095 => Source::Zero,
                s => {
                    return Err(self
                        .bat_error(block, "reserved block state")
                        .expected("0, 1, 2, 3, 6 or 7")
                        .found(s))
                }
            };
            push_segment(out, n, source);
            pos += n;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

impl ImageFile for Vhdx {
    fn format(&self) -> Format {
        Format::Vhdx
    }

    fn disk_type(&self) -> DiskType {
        if self.meta.has_parent {
            DiskType::Differencing
        } else if self.meta.leave_block_allocated {
            DiskType::Fixed
        } else {
            DiskType::Dynamic
        }
    }

    fn logical_sector_size(&self) -> u32 {
        self.meta.logical_sector_size
    }

    fn physical_sector_size(&self) -> u32 {
        self.meta.physical_sector_size
    }

    fn parent_request(&self) -> Option<ParentRequest> {
        let pl = self.meta.parent_locator.as_ref()?;
        let get = |k: &str| pl.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
        let mut locators = Vec::new();
        for (key, kind) in [
            ("relative_path", LocatorKind::Relative),
            ("volume_path", LocatorKind::Absolute),
            ("absolute_win32_path", LocatorKind::Absolute),
        ] {
            if let Some(v) = get(key) {
                locators.push(Locator {
                    key: key.into(),
                    value: v,
                    kind,
                });
            }
        }
        for (k, v) in pl {
            if !locators.iter().any(|l| l.key == *k) {
                locators.push(Locator {
                    key: k.clone(),
                    value: v.clone(),
                    kind: LocatorKind::Other,
                });
            }
        }
        let expected = ["parent_linkage", "parent_linkage2"]
            .iter()
            .filter_map(|k| get(k).and_then(|v| metadata::parse_guid_text(&v)))
            .collect();
        Some(ParentRequest {
            locators,
            expected,
            id_name: "DataWriteGuid",
            format: Format::Vhdx,
            logical_sector_size: self.meta.logical_sector_size,
        })
    }

    fn linkage_id(&self) -> Uuid {
        self.headers.current.data_write_guid.to_uuid()
    }

    fn findings(&self) -> Vec<Finding> {
        self.findings.clone()
    }

    fn info(&self, scan: bool) -> Result<Info> {
        let mut info = Info::new(
            Format::Vhdx,
            self.disk_type(),
            self.meta.virtual_size,
            self.file_len(),
        );
        info.block_size = Some(self.meta.block_size);
        info.logical_sector_size = self.meta.logical_sector_size;
        info.physical_sector_size = self.meta.physical_sector_size;
        info.disk_id = Some(format!("{{{}}}", self.meta.disk_id));
        let h = &self.headers.current;
        info.vhdx = Some(VhdxInfo {
            header_sequence: h.sequence_number.get(),
            current_header: self.headers.current_index as u8 + 1,
            file_write_guid: h.file_write_guid.to_string(),
            data_write_guid: h.data_write_guid.to_string(),
            log: self.log.clone(),
            leave_block_allocated: self.meta.leave_block_allocated,
            chunk_ratio: self.chunk_ratio,
            bat_entries: self.bat.len(),
            creator: self.headers.creator.clone(),
        });
        if scan || self.bat.len() <= INFO_SCAN_LIMIT {
            info.block_stats = Some(self.block_stats()?);
        } else {
            info.block_stats_note = Some(format!(
                "not scanned: the BAT has {} entries; pass --scan (Python: scan=True) to count allocated blocks",
                self.bat.len()
            ));
        }
        info.warnings = self.findings.clone();
        Ok(info)
    }

    fn check(&self, report: &mut Report) {
        check::check(self, report);
    }
}
