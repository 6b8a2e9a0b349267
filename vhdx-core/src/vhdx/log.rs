//! The VHDX log (MS-VHDX §2.3; FORMATS.md A.10, A.11, Part D 9): detecting a dirty log,
//! finding and validating the active sequence, and replaying it — into an in-memory
//! [`Overlay`] for read-only opens ([`open_log`]), or onto the file itself
//! ([`replay_onto_file`], [`replay_log_in_place`]).
//!
//! Every field read from the file is checked before use: the log placement against the file
//! length, each entry's length against the log length, descriptor counts against the entry
//! length, and every target range with checked arithmetic. At most one entry is held in
//! memory at a time while scanning (an entry is never longer than the log), and the scan
//! tries at most `LogLength / 4096` start positions.

use super::header_write::HeaderWriter;
use super::headers;
use crate::error::{Error, Result};
use crate::format::vhdx::header::Header;
use crate::format::vhdx::log as fl;
use crate::format::vhdx::{crc32c_with_zeroed_field, Guid, MIB};
use crate::ops::info::LogInfo;
use crate::report::{Finding, Severity};
use crate::storage::{FileStorage, Overlay, Storage, StorageMut};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// The log's sector size as a file-offset quantity.
const SECTOR: u64 = fl::SECTOR as u64;

/// Log writes may not touch the file identifier and the two headers: the identifier is never
/// rewritten and headers are never updated through the log (FORMATS.md A.4).
const PROTECTED_END: u64 = 192 * 1024;

/// Files larger than this (256 TiB, four times the largest virtual disk) are not plausible;
/// log entries claiming such sizes or targets are treated as invalid, so a crafted log cannot
/// make a replay create an enormous file.
const MAX_PLAUSIBLE_FILE: u64 = 1 << 48;

/// One validated log entry (its position and header fields; descriptors are re-read when
/// the entry is replayed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEntry {
    /// Offset of the entry relative to the start of the log.
    pub position: u64,
    /// EntryLength in bytes.
    pub length: u64,
    /// SequenceNumber.
    pub sequence_number: u64,
    /// Tail: log-relative offset of the first entry of the sequence this entry ends.
    pub tail: u64,
    /// FlushedFileOffset.
    pub flushed_file_offset: u64,
    /// LastFileOffset.
    pub last_file_offset: u64,
    /// Number of descriptors.
    pub descriptor_count: u32,
}

/// The active sequence of a log: valid entries with consecutive sequence numbers, from the
/// one the head's Tail names to the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSequence {
    /// The entries, oldest (tail) first, head last; never empty.
    pub entries: Vec<LogEntry>,
}

impl LogSequence {
    /// The newest entry.
    pub fn head(&self) -> Option<&LogEntry> {
        self.entries.last()
    }
}

/// One update carried by a log entry, as written by [`encode_entry`] or applied by a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogWrite<'a> {
    /// A whole 4 KiB sector at `file_offset` (a data descriptor and its data sector).
    Data {
        /// Target file offset (multiple of 4 KiB).
        file_offset: u64,
        /// The complete new contents of the sector.
        sector: &'a [u8; fl::SECTOR],
    },
    /// `length` zero bytes at `file_offset` (a zero descriptor).
    Zero {
        /// Target file offset (multiple of 4 KiB).
        file_offset: u64,
        /// Bytes to zero (multiple of 4 KiB).
        length: u64,
    },
}

/// What [`replay_onto_file`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// The log state found: `"clean"` (nothing to do, the file was not touched), `"dirty"`
    /// (a valid sequence was replayed) or `"invalid"` (the header named a log without a
    /// valid sequence; nothing was replayed but the LogGuid was cleared).
    pub state: String,
    /// Entries replayed.
    pub entries: u64,
    /// File length before the replay.
    pub file_len_before: u64,
    /// File length after the replay.
    pub file_len_after: u64,
    /// The FileWriteGuid stamped on both headers, when the headers were rewritten.
    pub file_write_guid: Option<Guid>,
}

/// Where the log lives and which GUID its entries must carry.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    offset: u64,
    length: u64,
    guid: Guid,
    file_len: u64,
}

/// A descriptor of a validated entry.
#[derive(Debug, Clone, Copy)]
enum Desc {
    Zero {
        file_offset: u64,
        length: u64,
    },
    Data {
        file_offset: u64,
        /// Index of the data sector within the entry.
        sector: usize,
        leading: [u8; 8],
        trailing: [u8; 4],
    },
}

fn round_up_mib(v: u64) -> Option<u64> {
    v.checked_next_multiple_of(MIB)
}

/// Checks where the log lives (FORMATS.md Part D 3) and returns its geometry.
fn geometry(h: &Header, file_len: u64) -> Result<Geometry> {
    let offset = h.log_offset.get();
    let length = u64::from(h.log_length.get());
    // The errors name the log at the offset the current header gives for it.
    if h.log_version.get() != 0 {
        return Err(Error::unsupported(
            "VHDX log",
            offset,
            "unknown log version in the current header",
        )
        .expected(0)
        .found(h.log_version.get()));
    }
    if length == 0 || length % MIB != 0 {
        return Err(Error::corrupt(
            "VHDX log",
            offset,
            "the header names a log but its length is not a positive multiple of 1 MiB",
        )
        .found(length));
    }
    if offset < MIB || offset % MIB != 0 {
        return Err(Error::corrupt(
            "VHDX log",
            offset,
            "the log offset is not a multiple of 1 MiB past the header section",
        )
        .found(format!("{offset:#x}")));
    }
    let end = offset
        .checked_add(length)
        .ok_or_else(|| Error::corrupt("VHDX log", offset, "log end overflows"))?;
    if end > file_len {
        return Err(
            Error::corrupt("VHDX log", offset, "the log lies past the end of the file")
                .expected(format!("log end ≤ file length {file_len:#x}"))
                .found(format!("log end {end:#x}")),
        );
    }
    Ok(Geometry {
        offset,
        length,
        guid: h.log_guid,
        file_len,
    })
}

/// Reads `buf.len()` bytes (≤ the log length) of the circular log from log position `pos`,
/// wrapping to the start of the log at its end.
fn read_log(storage: &dyn Storage, g: &Geometry, pos: u64, buf: &mut [u8]) -> Result<()> {
    let first = (g.length - pos).min(buf.len() as u64) as usize;
    let (a, b) = buf.split_at_mut(first);
    let off = g.offset + pos;
    storage
        .read_exact_at(a, off)
        .map_err(|e| Error::read_failed("VHDX log", off, e))?;
    if !b.is_empty() {
        storage
            .read_exact_at(b, g.offset)
            .map_err(|e| Error::read_failed("VHDX log", g.offset, e))?;
    }
    Ok(())
}

/// Validates a complete entry (`buf` holds exactly EntryLength bytes) at log position `pos`.
/// Returns why it is invalid otherwise.
fn validate_entry(
    buf: &[u8],
    pos: u64,
    g: &Geometry,
) -> std::result::Result<(LogEntry, Vec<Desc>), &'static str> {
    let (h, _) = fl::EntryHeader::read_from_prefix(buf).map_err(|_| "short entry")?;
    let e = check_header(&h, pos, g)?;
    if buf.len() as u64 != e.length {
        return Err("entry length mismatch");
    }
    let sectors = e.length / SECTOR;
    let desc_sectors = fl::descriptor_sectors(e.descriptor_count);
    if desc_sectors > sectors {
        return Err("descriptors do not fit in the entry");
    }
    let limit = round_up_mib(e.last_file_offset)
        .ok_or("LastFileOffset overflows")?
        .max(g.file_len);
    let log_end = g.offset + g.length;
    let mut descs = Vec::with_capacity(e.descriptor_count as usize);
    let mut data_sector = desc_sectors;
    for i in 0..e.descriptor_count as usize {
        let at = fl::ENTRY_HEADER_SIZE + i * fl::DESCRIPTOR_SIZE;
        let raw = buf
            .get(at..at + fl::DESCRIPTOR_SIZE)
            .ok_or("descriptor past the entry")?;
        let sig: [u8; 4] = raw[..4].try_into().map_err(|_| "descriptor")?;
        let (desc, target_len) = if sig == fl::ZERO_SIGNATURE {
            let (d, _) = fl::ZeroDescriptor::read_from_prefix(raw).map_err(|_| "descriptor")?;
            if d.sequence_number.get() != e.sequence_number {
                return Err("zero descriptor sequence number mismatch");
            }
            let length = d.zero_length.get();
            if length % SECTOR != 0 {
                return Err("zero descriptor length not a multiple of 4 KiB");
            }
            (
                Desc::Zero {
                    file_offset: d.file_offset.get(),
                    length,
                },
                length,
            )
        } else if sig == fl::DATA_DESC_SIGNATURE {
            let (d, _) = fl::DataDescriptor::read_from_prefix(raw).map_err(|_| "descriptor")?;
            if d.sequence_number.get() != e.sequence_number {
                return Err("data descriptor sequence number mismatch");
            }
            if data_sector >= sectors {
                return Err("more data descriptors than data sectors");
            }
            let s_at = (data_sector * SECTOR) as usize;
            let s_raw = buf.get(s_at..s_at + fl::SECTOR).ok_or("data sector")?;
            let (s, _) = fl::DataSector::read_from_prefix(s_raw).map_err(|_| "data sector")?;
            if s.signature != fl::DATA_SIGNATURE {
                return Err("bad data sector signature");
            }
            if s.sequence_number() != e.sequence_number {
                return Err("data sector sequence number mismatch");
            }
            let desc = Desc::Data {
                file_offset: d.file_offset.get(),
                sector: data_sector as usize,
                leading: d.leading_bytes,
                trailing: d.trailing_bytes,
            };
            data_sector += 1;
            (desc, SECTOR)
        } else {
            return Err("unknown descriptor signature");
        };
        let file_offset = match desc {
            Desc::Zero { file_offset, .. } | Desc::Data { file_offset, .. } => file_offset,
        };
        if file_offset % SECTOR != 0 {
            return Err("descriptor file offset not a multiple of 4 KiB");
        }
        let end = file_offset
            .checked_add(target_len)
            .ok_or("descriptor target range overflows")?;
        if target_len > 0 {
            if file_offset < PROTECTED_END {
                return Err("descriptor targets the file identifier or the headers");
            }
            if file_offset < log_end && g.offset < end {
                return Err("descriptor targets the log itself");
            }
            if end > limit {
                return Err("descriptor targets bytes past LastFileOffset and the file end");
            }
        }
        descs.push(desc);
    }
    let stored = h.checksum.get();
    if crc32c_with_zeroed_field(buf, fl::CHECKSUM_FIELD) != stored {
        return Err("bad CRC-32C checksum");
    }
    Ok((e, descs))
}

/// The checks possible on the entry header alone.
fn check_header(
    h: &fl::EntryHeader,
    pos: u64,
    g: &Geometry,
) -> std::result::Result<LogEntry, &'static str> {
    if h.signature != fl::ENTRY_SIGNATURE {
        return Err("bad entry signature");
    }
    let length = u64::from(h.entry_length.get());
    if length == 0 || length % SECTOR != 0 || length > g.length {
        return Err("bad entry length");
    }
    let seq = h.sequence_number.get();
    if seq == 0 {
        return Err("zero sequence number");
    }
    if h.log_guid != g.guid {
        return Err("log GUID differs from the header's");
    }
    let tail = u64::from(h.tail.get());
    if tail % SECTOR != 0 || tail >= g.length {
        return Err("bad tail");
    }
    let dc = h.descriptor_count.get();
    if fl::descriptor_sectors(dc) > length / SECTOR {
        return Err("descriptor count does not fit in the entry");
    }
    let (flushed, last) = (h.flushed_file_offset.get(), h.last_file_offset.get());
    if flushed > MAX_PLAUSIBLE_FILE || last > MAX_PLAUSIBLE_FILE {
        return Err("implausible FlushedFileOffset or LastFileOffset");
    }
    Ok(LogEntry {
        position: pos,
        length,
        sequence_number: seq,
        tail,
        flushed_file_offset: flushed,
        last_file_offset: last,
        descriptor_count: dc,
    })
}

/// A validated entry with its bytes and descriptors, or why the bytes are not a valid entry.
type Validated = std::result::Result<(LogEntry, Vec<u8>, Vec<Desc>), &'static str>;

/// Reads and validates the entry at log position `pos`. `Ok(Err(reason))` when there is no
/// valid entry there; `Err` only for I/O failures.
fn read_entry(storage: &dyn Storage, g: &Geometry, pos: u64) -> Result<Validated> {
    let mut first = [0u8; fl::ENTRY_HEADER_SIZE];
    read_log(storage, g, pos, &mut first)?;
    let h = match fl::EntryHeader::read_from_bytes(&first) {
        Ok(h) => h,
        Err(_) => return Ok(Err("short entry")),
    };
    let e = match check_header(&h, pos, g) {
        Ok(e) => e,
        Err(r) => return Ok(Err(r)),
    };
    // Bounded by the log length (checked above), which lies inside the file.
    let mut buf = vec![0u8; e.length as usize];
    read_log(storage, g, pos, &mut buf)?;
    Ok(validate_entry(&buf, pos, g).map(|(e, d)| (e, buf, d)))
}

/// Finds the active sequence (FORMATS.md A.10 "Finding the active sequence"): runs of
/// chained valid entries, complete when the head's Tail is one of the run's entries; the
/// complete run with the highest head sequence number wins.
fn find_sequence(storage: &dyn Storage, g: &Geometry) -> Result<Option<LogSequence>> {
    let positions = g.length / SECTOR;
    let mut cache: HashMap<u64, Option<LogEntry>> = HashMap::new();
    let mut incomplete: HashSet<u64> = HashSet::new();
    let mut entry_at = |p: u64| -> Result<Option<LogEntry>> {
        if let Some(e) = cache.get(&p) {
            return Ok(*e);
        }
        let e = read_entry(storage, g, p)?.ok().map(|(e, _, _)| e);
        cache.insert(p, e);
        Ok(e)
    };
    let mut candidate: Option<LogSequence> = None;
    let mut pos = 0u64;
    for _ in 0..positions {
        let mut complete = false;
        let mut total = 0u64;
        if !incomplete.contains(&pos) {
            let mut run: Vec<LogEntry> = Vec::new();
            let mut p = pos;
            let mut capped = false;
            while let Some(e) = entry_at(p)? {
                if let Some(last) = run.last() {
                    if last.sequence_number.checked_add(1) != Some(e.sequence_number) {
                        break;
                    }
                }
                if total + e.length > g.length {
                    capped = true;
                    break;
                }
                total += e.length;
                p = (p + e.length) % g.length;
                run.push(e);
            }
            if let Some(head) = run.last() {
                if let Some(i) = run.iter().position(|e| e.position == head.tail) {
                    complete = true;
                    let better = candidate
                        .as_ref()
                        .and_then(|c| c.head())
                        .is_none_or(|c| head.sequence_number > c.sequence_number);
                    if better {
                        candidate = Some(LogSequence {
                            entries: run[i..].to_vec(),
                        });
                    }
                } else if !capped {
                    // A later start inside this run stops at the same place, so it ends at
                    // the same head with the same Tail and cannot be complete either.
                    incomplete.extend(run.iter().skip(1).map(|e| e.position));
                }
            }
        }
        let next = if complete { pos + total } else { pos + SECTOR };
        if next >= g.length {
            break;
        }
        pos = next;
    }
    Ok(candidate)
}

/// The result of looking at the log of a file: its geometry and active sequence.
#[derive(Debug)]
struct Scan {
    geometry: Geometry,
    sequence: Option<LogSequence>,
}

/// Validates the placement, finds the active sequence and checks the file against the head's
/// FlushedFileOffset. Only for a nonzero LogGuid.
fn scan(storage: &dyn Storage, h: &Header) -> Result<Scan> {
    let file_len = storage
        .len()
        .map_err(|e| Error::io(e, "reading the file length"))?;
    let g = geometry(h, file_len)?;
    let sequence = find_sequence(storage, &g)?;
    if let Some(head) = sequence.as_ref().and_then(|s| s.head()) {
        if file_len < head.flushed_file_offset {
            return Err(Error::corrupt(
                "VHDX log",
                g.offset + head.position,
                "the file is truncated: it is shorter than the log's FlushedFileOffset",
            )
            .expected(format!("at least {} bytes", head.flushed_file_offset))
            .found(format!("{file_len} bytes")));
        }
    }
    Ok(Scan {
        geometry: g,
        sequence,
    })
}

/// Calls `apply` for every update of `seq`, tail to head, descriptors in order. Each entry is
/// read and validated again, one at a time.
fn for_each_write(
    storage: &dyn Storage,
    g: &Geometry,
    seq: &LogSequence,
    apply: &mut dyn FnMut(LogWrite<'_>) -> Result<()>,
) -> Result<()> {
    let mut sector = [0u8; fl::SECTOR];
    for want in &seq.entries {
        let (e, buf, descs) = read_entry(storage, g, want.position)?.map_err(|why| {
            Error::corrupt(
                "VHDX log entry",
                g.offset + want.position,
                format!("the entry became invalid while replaying: {why}"),
            )
        })?;
        if e != *want {
            return Err(Error::corrupt(
                "VHDX log entry",
                g.offset + want.position,
                "the entry changed while replaying",
            ));
        }
        for d in descs {
            match d {
                Desc::Zero {
                    file_offset,
                    length,
                } => apply(LogWrite::Zero {
                    file_offset,
                    length,
                })?,
                Desc::Data {
                    file_offset,
                    sector: idx,
                    leading,
                    trailing,
                } => {
                    let at = idx * fl::SECTOR;
                    let src = buf.get(at..at + fl::SECTOR).ok_or_else(|| {
                        Error::corrupt("VHDX log entry", g.offset + want.position, "data sector")
                    })?;
                    sector[..8].copy_from_slice(&leading);
                    sector[8..4092].copy_from_slice(&src[8..4092]);
                    sector[4092..].copy_from_slice(&trailing);
                    apply(LogWrite::Data {
                        file_offset,
                        sector: &sector,
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// Finds the active sequence of the log of a file whose current header is `h` (`None` when
/// the LogGuid is nil or no valid sequence exists). Errors for a misplaced log or a file
/// shorter than the head's FlushedFileOffset.
pub fn active_sequence(storage: &dyn Storage, h: &Header) -> Result<Option<LogSequence>> {
    if h.log_guid.is_nil() {
        return Ok(None);
    }
    Ok(scan(storage, h)?.sequence)
}

/// Detects a dirty log and replays it into an overlay; returns the storage to read through.
///
/// - LogGuid nil: the log is clean, nothing is read, `storage` is returned as is.
/// - A valid active sequence: it is applied tail to head into an [`Overlay`] over `storage`
///   whose length is then grown to at least the head's LastFileOffset (rounded up to 1 MiB);
///   the overlay is returned and the file is not modified.
/// - LogGuid set but no valid sequence: opened without replay (as QEMU does), with a warning.
pub fn open_log(
    storage: Arc<dyn Storage>,
    h: &Header,
    findings: &mut Vec<Finding>,
) -> Result<(Arc<dyn Storage>, LogInfo)> {
    let mut info = LogInfo {
        state: "clean".into(),
        entries: 0,
        guid: h.log_guid.to_string(),
        offset: h.log_offset.get(),
        length: h.log_length.get(),
        replayed_in_memory: false,
    };
    if h.log_guid.is_nil() {
        return Ok((storage, info));
    }
    let s = scan(&*storage, h)?;
    let g = s.geometry;
    let Some(seq) = s.sequence else {
        info.state = "invalid".into();
        findings.push(Finding::new(
            Severity::Warning,
            "VHDX log",
            Some(g.offset),
            format!(
                "the header names log {} but the log holds no valid entry sequence; \
                 nothing was replayed (QEMU opens such files the same way)",
                h.log_guid
            ),
        ));
        return Ok((storage, info));
    };
    let mut overlay =
        Overlay::new(storage.clone()).map_err(|e| Error::io(e, "reading the file length"))?;
    for_each_write(&*storage, &g, &seq, &mut |w| {
        match w {
            LogWrite::Data {
                file_offset,
                sector,
            } => overlay.write(file_offset, sector),
            LogWrite::Zero {
                file_offset,
                length,
            } => overlay.write_zeroes(file_offset, length),
        }
        Ok(())
    })?;
    if let Some(head) = seq.head() {
        let target = round_up_mib(head.last_file_offset).unwrap_or(head.last_file_offset);
        let len = overlay
            .len()
            .map_err(|e| Error::io(e, "reading the file length"))?;
        if len < target {
            overlay.set_len(target);
        }
    }
    let n = seq.entries.len() as u64;
    info.state = "dirty".into();
    info.entries = n;
    info.replayed_in_memory = true;
    findings.push(Finding::new(
        Severity::Info,
        "VHDX log",
        Some(g.offset),
        format!(
            "dirty log with {n} entr{} replayed in memory; the file was not modified",
            if n == 1 { "y" } else { "ies" }
        ),
    ));
    Ok((Arc::new(overlay), info))
}

/// A read-only view of a writable storage (so the readers, which take `&dyn Storage`, can
/// work on it).
#[derive(Debug)]
struct ReadView<'a>(&'a dyn StorageMut);

impl Storage for ReadView<'_> {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn as_bytes(&self) -> Option<&[u8]> {
        self.0.as_bytes()
    }
}

/// Replays a dirty log onto the file itself and marks the log empty (FORMATS.md A.10
/// "Replay", A.4 header update protocol, A.11 ordering):
///
/// 1. both headers are rewritten with a fresh FileWriteGuid for this session (the LogGuid is
///    kept, so a crash here leaves the log replayable);
/// 2. every update of the active sequence is written, tail to head, then flushed;
/// 3. the file is extended to the head's LastFileOffset rounded up to 1 MiB if shorter, and
///    flushed;
/// 4. both headers are rewritten with LogGuid = 0.
///
/// A clean log (nil LogGuid) leaves the file untouched. A LogGuid without a valid sequence is
/// cleared (steps 1 and 4) without replaying anything. The DataWriteGuid is kept: replaying
/// does not change what a reader that honours the log sees, and changing it would orphan
/// differencing children.
pub fn replay_onto_file(storage: &dyn StorageMut) -> Result<ReplayOutcome> {
    let view = ReadView(storage);
    let mut findings = Vec::new();
    let hs = headers::read_headers(&view, &mut findings)?;
    let h = hs.current;
    let file_len_before = view
        .len()
        .map_err(|e| Error::io(e, "reading the file length"))?;
    let mut outcome = ReplayOutcome {
        state: "clean".into(),
        entries: 0,
        file_len_before,
        file_len_after: file_len_before,
        file_write_guid: None,
    };
    if h.log_guid.is_nil() {
        return Ok(outcome);
    }
    let s = scan(&view, &h)?;
    let mut w = HeaderWriter::new(&hs);
    w.update_both(storage, |_| {})?;
    outcome.file_write_guid = Some(w.file_write_guid());
    outcome.state = "invalid".into();
    if let Some(seq) = &s.sequence {
        for_each_write(&view, &s.geometry, seq, &mut |u| {
            match u {
                LogWrite::Data {
                    file_offset,
                    sector,
                } => storage.write_all_at(sector, file_offset),
                LogWrite::Zero {
                    file_offset,
                    length,
                } => storage.write_zeroes_at(file_offset, length),
            }
            .map_err(|e| Error::io(e, "writing a replayed log update").offset(file_offset_of(&u)))
        })?;
        storage
            .sync()
            .map_err(|e| Error::io(e, "flushing the replayed log"))?;
        if let Some(head) = seq.head() {
            let target = round_up_mib(head.last_file_offset).unwrap_or(head.last_file_offset);
            let len = view
                .len()
                .map_err(|e| Error::io(e, "reading the file length"))?;
            if len < target {
                storage
                    .set_len(target)
                    .map_err(|e| Error::io(e, "extending the file to LastFileOffset"))?;
                storage
                    .sync()
                    .map_err(|e| Error::io(e, "flushing the file length"))?;
            }
        }
        outcome.state = "dirty".into();
        outcome.entries = seq.entries.len() as u64;
    }
    w.update_both(storage, |h| h.log_guid = Guid::default())?;
    outcome.file_len_after = view
        .len()
        .map_err(|e| Error::io(e, "reading the file length"))?;
    Ok(outcome)
}

fn file_offset_of(w: &LogWrite<'_>) -> u64 {
    match *w {
        LogWrite::Data { file_offset, .. } | LogWrite::Zero { file_offset, .. } => file_offset,
    }
}

/// Opens the VHDX file at `path` read-write and replays its log onto it with
/// [`replay_onto_file`]. The caller must make sure nothing else has the file open.
pub fn replay_log_in_place(path: &Path) -> Result<ReplayOutcome> {
    let f = FileStorage::open_rw(path)
        .map_err(|e| Error::io(e, "cannot open the file for reading and writing").in_file(path))?;
    replay_onto_file(&f).map_err(|e| e.in_file(path))
}

/// Encodes one log entry (descriptors, then one data sector per data write) with its
/// checksum. `tail` is the log-relative offset of the first entry of the sequence the entry
/// ends. Errors when an offset or length is not a multiple of 4 KiB or the entry would not
/// fit a u32 length.
pub fn encode_entry(
    log_guid: Guid,
    sequence_number: u64,
    tail: u32,
    flushed_file_offset: u64,
    last_file_offset: u64,
    writes: &[LogWrite<'_>],
) -> Result<Vec<u8>> {
    let count = u32::try_from(writes.len())
        .map_err(|_| Error::invalid_argument("too many log descriptors"))?;
    let desc_sectors = fl::descriptor_sectors(count);
    let data_sectors = writes
        .iter()
        .filter(|w| matches!(w, LogWrite::Data { .. }))
        .count() as u64;
    let length = (desc_sectors + data_sectors) * SECTOR;
    let length32 = u32::try_from(length)
        .map_err(|_| Error::invalid_argument("log entry longer than 4 GiB"))?;
    let mut buf = vec![0u8; length as usize];
    let mut hdr = fl::EntryHeader::new_zeroed();
    hdr.signature = fl::ENTRY_SIGNATURE;
    hdr.entry_length.set(length32);
    hdr.tail.set(tail);
    hdr.sequence_number.set(sequence_number);
    hdr.descriptor_count.set(count);
    hdr.log_guid = log_guid;
    hdr.flushed_file_offset.set(flushed_file_offset);
    hdr.last_file_offset.set(last_file_offset);
    buf[..fl::ENTRY_HEADER_SIZE].copy_from_slice(hdr.as_bytes());
    let mut data_idx = desc_sectors as usize;
    for (i, w) in writes.iter().enumerate() {
        let at = fl::ENTRY_HEADER_SIZE + i * fl::DESCRIPTOR_SIZE;
        match *w {
            LogWrite::Zero {
                file_offset,
                length,
            } => {
                if file_offset % SECTOR != 0 || length % SECTOR != 0 {
                    return Err(Error::invalid_argument(
                        "log zero range not aligned to 4 KiB",
                    ));
                }
                let mut d = fl::ZeroDescriptor::new_zeroed();
                d.signature = fl::ZERO_SIGNATURE;
                d.zero_length.set(length);
                d.file_offset.set(file_offset);
                d.sequence_number.set(sequence_number);
                buf[at..at + fl::DESCRIPTOR_SIZE].copy_from_slice(d.as_bytes());
            }
            LogWrite::Data {
                file_offset,
                sector,
            } => {
                if file_offset % SECTOR != 0 {
                    return Err(Error::invalid_argument(
                        "log data sector not aligned to 4 KiB",
                    ));
                }
                let mut d = fl::DataDescriptor::new_zeroed();
                d.signature = fl::DATA_DESC_SIGNATURE;
                d.trailing_bytes.copy_from_slice(&sector[4092..]);
                d.leading_bytes.copy_from_slice(&sector[..8]);
                d.file_offset.set(file_offset);
                d.sequence_number.set(sequence_number);
                buf[at..at + fl::DESCRIPTOR_SIZE].copy_from_slice(d.as_bytes());
                let mut s = fl::DataSector::new_zeroed();
                s.signature = fl::DATA_SIGNATURE;
                s.sequence_high.set((sequence_number >> 32) as u32);
                s.sequence_low.set(sequence_number as u32);
                s.data.copy_from_slice(&sector[8..4092]);
                let s_at = data_idx * fl::SECTOR;
                buf[s_at..s_at + fl::SECTOR].copy_from_slice(s.as_bytes());
                data_idx += 1;
            }
        }
    }
    let crc = crc32c_with_zeroed_field(&buf, fl::CHECKSUM_FIELD);
    buf[fl::CHECKSUM_FIELD..fl::CHECKSUM_FIELD + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use crate::ErrorKind;

    const LOG_OFF: u64 = MIB;
    const LOG_LEN: u64 = MIB;
    const GUID: Guid = Guid([0x5A; 16]);

    /// A 4 MiB "file" with a log at 1 MiB (1 MiB long) and a current header naming it.
    fn file() -> MemStorage {
        let m = MemStorage::new(vec![0u8; 4 << 20]);
        m.write_all_at(b"vhdxfile", 0).unwrap();
        let h = header(GUID);
        m.write_all_at(h.as_bytes(), crate::format::vhdx::header::OFFSETS[0])
            .unwrap();
        m
    }

    fn header(guid: Guid) -> Header {
        let mut h = Header::new_zeroed();
        h.signature = crate::format::vhdx::header::SIGNATURE;
        h.version.set(1);
        h.sequence_number.set(7);
        h.log_guid = guid;
        h.log_offset.set(LOG_OFF);
        h.log_length.set(LOG_LEN as u32);
        let crc = Header::compute_checksum(h.as_bytes().try_into().unwrap());
        h.checksum.set(crc);
        h
    }

    fn geom(m: &MemStorage) -> Geometry {
        Geometry {
            offset: LOG_OFF,
            length: LOG_LEN,
            guid: GUID,
            file_len: m.len().unwrap(),
        }
    }

    /// Writes `entry` at log position `pos`, wrapping at the end of the log.
    fn put(m: &MemStorage, pos: u64, entry: &[u8]) {
        for (i, s) in entry.chunks(fl::SECTOR).enumerate() {
            let p = (pos + i as u64 * SECTOR) % LOG_LEN;
            m.write_all_at(s, LOG_OFF + p).unwrap();
        }
    }

    fn sector(fill: u8) -> [u8; fl::SECTOR] {
        let mut s = [fill; fl::SECTOR];
        s[..8].copy_from_slice(b"LEADING!");
        s[4092..].copy_from_slice(b"TAIL");
        s
    }

    /// An entry with one data write of `fill` at 3 MiB + 4 KiB·`seq % 16`.
    fn entry(seq: u64, tail: u64, fill: u8) -> Vec<u8> {
        let s = sector(fill);
        encode_entry(
            GUID,
            seq,
            tail as u32,
            4 << 20,
            4 << 20,
            &[LogWrite::Data {
                file_offset: (3 << 20) + (seq % 16) * SECTOR,
                sector: &s,
            }],
        )
        .unwrap()
    }

    fn seqs(m: &MemStorage) -> Option<Vec<(u64, u64)>> {
        find_sequence(m, &geom(m)).unwrap().map(|s| {
            s.entries
                .iter()
                .map(|e| (e.position, e.sequence_number))
                .collect()
        })
    }

    #[test]
    fn empty_log_has_no_sequence() {
        let m = file();
        assert_eq!(seqs(&m), None);
    }

    #[test]
    fn single_and_chained_entries() {
        let m = file();
        put(&m, 0, &entry(10, 0, 1));
        assert_eq!(seqs(&m), Some(vec![(0, 10)]));
        put(&m, 8192, &entry(11, 0, 2));
        put(&m, 16384, &entry(12, 0, 3));
        assert_eq!(seqs(&m), Some(vec![(0, 10), (8192, 11), (16384, 12)]));
        // The head's tail may also name a later entry of the run.
        put(&m, 16384, &entry(12, 8192, 3));
        assert_eq!(seqs(&m), Some(vec![(8192, 11), (16384, 12)]));
    }

    #[test]
    fn sequence_wrapping_around_the_log_end() {
        let m = file();
        let a = LOG_LEN - 3 * SECTOR;
        put(&m, a, &entry(5, a, 1));
        // A 12 KiB entry in the last sector and the first two (zero descriptor, two data).
        let (s1, s2) = (sector(7), sector(8));
        let big = encode_entry(
            GUID,
            6,
            a as u32,
            4 << 20,
            4 << 20,
            &[
                LogWrite::Data {
                    file_offset: 3 << 20,
                    sector: &s1,
                },
                LogWrite::Zero {
                    file_offset: (3 << 20) + 65536,
                    length: 65536,
                },
                LogWrite::Data {
                    file_offset: (3 << 20) + 4096,
                    sector: &s2,
                },
            ],
        )
        .unwrap();
        assert_eq!(big.len(), 3 * fl::SECTOR);
        put(&m, LOG_LEN - SECTOR, &big);
        put(&m, 2 * SECTOR, &entry(7, a, 3));
        assert_eq!(
            seqs(&m),
            Some(vec![(a, 5), (LOG_LEN - SECTOR, 6), (2 * SECTOR, 7)])
        );
    }

    #[test]
    fn incomplete_run_is_not_a_sequence() {
        let m = file();
        // Head 21's tail names a position outside its run.
        put(&m, 0, &entry(20, 0x10000, 1));
        put(&m, 8192, &entry(21, 0x10000, 2));
        assert_eq!(seqs(&m), None);
        // An older complete sequence elsewhere wins over the higher incomplete one.
        put(&m, 0x20000, &entry(5, 0x20000, 3));
        assert_eq!(seqs(&m), Some(vec![(0x20000, 5)]));
    }

    #[test]
    fn bad_crc_in_the_middle_cuts_the_run() {
        let m = file();
        put(&m, 0, &entry(10, 0, 1));
        let mut bad = entry(11, 0, 2);
        bad[fl::SECTOR + 100] ^= 1; // a data byte: only the CRC catches it
        put(&m, 8192, &bad);
        put(&m, 16384, &entry(12, 0, 3));
        // 10 alone is complete; 12 alone names a tail outside its run.
        assert_eq!(seqs(&m), Some(vec![(0, 10)]));
        let g = geom(&m);
        assert_eq!(
            read_entry(&m, &g, 8192).unwrap().err(),
            Some("bad CRC-32C checksum")
        );
    }

    #[test]
    fn newest_complete_sequence_wins_over_stale_ones() {
        let m = file();
        put(&m, 0, &entry(30, 0, 1));
        put(&m, 8192, &entry(31, 0, 2));
        put(&m, 0x80000, &entry(3, 0x80000, 3));
        put(&m, 0x82000, &entry(4, 0x80000, 4));
        assert_eq!(seqs(&m), Some(vec![(0, 30), (8192, 31)]));
        // The same with the newer sequence later in the log.
        let m = file();
        put(&m, 0, &entry(3, 0, 1));
        put(&m, 0x80000, &entry(40, 0x80000, 3));
        assert_eq!(seqs(&m), Some(vec![(0x80000, 40)]));
    }

    #[test]
    fn entries_with_another_log_guid_are_ignored() {
        let m = file();
        let s = sector(1);
        let other = encode_entry(
            Guid([1; 16]),
            100,
            0,
            0,
            0,
            &[LogWrite::Data {
                file_offset: 3 << 20,
                sector: &s,
            }],
        )
        .unwrap();
        put(&m, 0, &other);
        assert_eq!(seqs(&m), None);
        assert_eq!(
            read_entry(&m, &geom(&m), 0).unwrap().err(),
            Some("log GUID differs from the header's")
        );
        put(&m, 0x10000, &entry(50, 0x10000, 2));
        assert_eq!(seqs(&m), Some(vec![(0x10000, 50)]));
    }

    #[test]
    fn invalid_descriptors_are_rejected() {
        let g = Geometry {
            offset: LOG_OFF,
            length: LOG_LEN,
            guid: GUID,
            file_len: 4 << 20,
        };
        let s = sector(1);
        let one = |w: LogWrite<'_>| encode_entry(GUID, 9, 0, 0, 4 << 20, &[w]).unwrap();
        let reason = |b: &[u8]| validate_entry(b, 0, &g).err();
        // Into the headers.
        let b = one(LogWrite::Data {
            file_offset: 64 * 1024,
            sector: &s,
        });
        assert_eq!(
            reason(&b),
            Some("descriptor targets the file identifier or the headers")
        );
        // Into the log itself.
        let b = one(LogWrite::Zero {
            file_offset: LOG_OFF + LOG_LEN - SECTOR,
            length: 2 * SECTOR,
        });
        assert_eq!(reason(&b), Some("descriptor targets the log itself"));
        // Past both the file end and LastFileOffset.
        let b = one(LogWrite::Zero {
            file_offset: 4 << 20,
            length: SECTOR,
        });
        assert_eq!(
            reason(&b),
            Some("descriptor targets bytes past LastFileOffset and the file end")
        );
        // Overflowing range.
        let b = one(LogWrite::Zero {
            file_offset: u64::MAX - 4095,
            length: 1 << 20,
        });
        assert_eq!(reason(&b), Some("descriptor target range overflows"));
        // Data sector sequence halves.
        let mut b = one(LogWrite::Data {
            file_offset: 3 << 20,
            sector: &s,
        });
        b[fl::SECTOR + 4] = 1; // SequenceHigh
        assert_eq!(reason(&b), Some("data sector sequence number mismatch"));
        // Descriptor count larger than the entry.
        let mut b = one(LogWrite::Data {
            file_offset: 3 << 20,
            sector: &s,
        });
        b[24..28].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(
            reason(&b),
            Some("descriptor count does not fit in the entry")
        );
        b[24..28].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(reason(&b), Some("unknown descriptor signature"));
        // Unaligned zero length.
        let mut b = one(LogWrite::Zero {
            file_offset: 3 << 20,
            length: SECTOR,
        });
        b[64 + 8] = 1;
        assert_eq!(
            reason(&b),
            Some("zero descriptor length not a multiple of 4 KiB")
        );
    }

    #[test]
    fn split_sequence_numbers_above_32_bits() {
        let m = file();
        let seq = (7u64 << 32) | 3;
        put(&m, 0, &entry(seq, 0, 1));
        put(&m, 8192, &entry(seq + 1, 0, 2));
        assert_eq!(seqs(&m), Some(vec![(0, seq), (8192, seq + 1)]));
    }

    #[test]
    fn mutated_entries_never_panic() {
        let g = Geometry {
            offset: LOG_OFF,
            length: LOG_LEN,
            guid: GUID,
            file_len: 4 << 20,
        };
        let base = entry(77, 0, 9);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            let mut b = base.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % 128) as usize; // header and descriptor bytes mostly
                let i = if x & 1 == 0 {
                    i
                } else {
                    (x as usize >> 8) % b.len()
                };
                b[i] = (x >> 32) as u8;
            }
            let _ = validate_entry(&b, 0, &g);
        }
        // Garbage entry headers in a whole log.
        let m = file();
        for p in (0..LOG_LEN).step_by(fl::SECTOR) {
            let mut h = base[..64].to_vec();
            h[8..12].copy_from_slice(&((p as u32 % 7 + 1) * 4096).to_le_bytes());
            h[16..24].copy_from_slice(&(p / 4096 + 1).to_le_bytes());
            h[12..16].copy_from_slice(&(p as u32).to_le_bytes());
            m.write_all_at(&h, LOG_OFF + p).unwrap();
        }
        let _ = find_sequence(&m, &geom(&m)).unwrap();
    }

    fn read(s: &dyn Storage, off: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        s.read_exact_at(&mut b, off).unwrap();
        b
    }

    /// A two-entry sequence: a data write, a zero range, and growth to 6 MiB.
    fn dirty_file() -> MemStorage {
        let m = file();
        m.write_all_at(&[0xEE; 0x20000], 3 << 20).unwrap();
        let s = sector(0x42);
        let e1 = encode_entry(
            GUID,
            1,
            0,
            4 << 20,
            4 << 20,
            &[LogWrite::Data {
                file_offset: (3 << 20) + 4096,
                sector: &s,
            }],
        )
        .unwrap();
        let e2 = encode_entry(
            GUID,
            2,
            0,
            4 << 20,
            (5 << 20) + 1,
            &[LogWrite::Zero {
                file_offset: (3 << 20) + 0x10000,
                length: 0x8000,
            }],
        )
        .unwrap();
        put(&m, 0, &e1);
        put(&m, e1.len() as u64, &e2);
        m
    }

    fn check_replayed(s: &dyn Storage) {
        assert_eq!(s.len().unwrap(), 6 << 20);
        assert_eq!(read(s, 3 << 20, 4096), vec![0xEE; 4096]);
        assert_eq!(read(s, (3 << 20) + 4096, 4096), sector(0x42).to_vec());
        assert_eq!(read(s, (3 << 20) + 0x10000, 0x8000), vec![0; 0x8000]);
        assert_eq!(read(s, (3 << 20) + 0x18000, 0x8000), vec![0xEE; 0x8000]);
        assert_eq!(read(s, 4 << 20, 4096), vec![0; 4096]);
    }

    #[test]
    fn replay_in_memory_leaves_the_file_alone() {
        let m = dirty_file();
        let before = m.to_vec();
        let base: Arc<dyn Storage> = Arc::new(MemStorage::new(before.clone()));
        let mut findings = Vec::new();
        let (s, info) = open_log(base.clone(), &header(GUID), &mut findings).unwrap();
        assert_eq!(info.state, "dirty");
        assert_eq!(info.entries, 2);
        assert!(info.replayed_in_memory);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Info);
        assert!(findings[0].message.contains("2 entries replayed in memory"));
        check_replayed(&*s);
        assert_eq!(read(&*base, 0, before.len()), before);
    }

    #[test]
    fn replay_onto_the_file_then_clean() {
        let m = dirty_file();
        let out = replay_onto_file(&m).unwrap();
        assert_eq!(out.state, "dirty");
        assert_eq!(out.entries, 2);
        assert_eq!(out.file_len_after, 6 << 20);
        check_replayed(&m);
        let mut findings = Vec::new();
        let hs = headers::read_headers(&m, &mut findings).unwrap();
        assert!(hs.current.log_guid.is_nil());
        assert_eq!(hs.current.sequence_number.get(), 7 + 4);
        let other = hs.other.unwrap();
        assert!(other.log_guid.is_nil());
        assert_eq!(other.sequence_number.get(), 7 + 3);
        assert_eq!(Some(hs.current.file_write_guid), out.file_write_guid);
        // A second replay has nothing to do.
        let again = replay_onto_file(&m).unwrap();
        assert_eq!(again.state, "clean");
        assert_eq!(again.file_write_guid, None);
    }

    #[test]
    fn invalid_log_opens_with_a_warning_and_replays_nothing() {
        let m = file();
        let base: Arc<dyn Storage> = Arc::new(MemStorage::new(m.to_vec()));
        let mut findings = Vec::new();
        let (s, info) = open_log(base, &header(GUID), &mut findings).unwrap();
        assert_eq!(info.state, "invalid");
        assert!(!info.replayed_in_memory);
        assert_eq!(findings[0].severity, Severity::Warning);
        assert_eq!(s.len().unwrap(), 4 << 20);
        // Onto the file: the LogGuid is cleared.
        let out = replay_onto_file(&m).unwrap();
        assert_eq!(out.state, "invalid");
        let hs = headers::read_headers(&m, &mut findings).unwrap();
        assert!(hs.current.log_guid.is_nil());
    }

    #[test]
    fn truncated_file_is_an_error() {
        let m = file();
        let s = sector(1);
        let e = encode_entry(
            GUID,
            1,
            0,
            8 << 20,
            8 << 20,
            &[LogWrite::Data {
                file_offset: 3 << 20,
                sector: &s,
            }],
        )
        .unwrap();
        put(&m, 0, &e);
        let base: Arc<dyn Storage> = Arc::new(MemStorage::new(m.to_vec()));
        let err = open_log(base, &header(GUID), &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn misplaced_logs_are_errors() {
        let m = file();
        let base: Arc<dyn Storage> = Arc::new(MemStorage::new(m.to_vec()));
        type Case = (&'static str, fn(&mut Header));
        let cases: [Case; 5] = [
            ("offset 0", |h| h.log_offset.set(0)),
            ("length 0", |h| h.log_length.set(0)),
            ("unaligned", |h| h.log_offset.set(MIB + 4096)),
            ("past the end", |h| h.log_offset.set(4 << 20)),
            ("version", |h| h.log_version.set(1)),
        ];
        for (what, f) in cases {
            let mut h = header(GUID);
            f(&mut h);
            let r = open_log(base.clone(), &h, &mut Vec::new());
            assert!(r.is_err(), "{what}");
        }
        // A nil LogGuid reads nothing, whatever the placement.
        let mut h = header(Guid::default());
        h.log_offset.set(0);
        let (_, info) = open_log(base, &h, &mut Vec::new()).unwrap();
        assert_eq!(info.state, "clean");
    }
}
