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

mod encode;
mod replay;
mod sequence;
#[cfg(test)]
mod tests;

pub use encode::encode_entry;
pub use replay::{replay_log_in_place, replay_onto_file};
use sequence::*;

use crate::error::{Error, Result};
use crate::format::vhdx::header::Header;
use crate::format::vhdx::log as fl;
use crate::format::vhdx::{crc32c_with_zeroed_field, Guid, MIB};
use crate::ops::info::LogInfo;
use crate::report::{Finding, Severity};
use crate::storage::{FileStorage, Overlay, Storage, StorageMut};
use crate::vhdx::header_write::HeaderWriter;
use crate::vhdx::headers;
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
        Severity::Warning,
        "VHDX log",
        Some(g.offset),
        format!(
            "a valid log with {n} entr{} awaits replay; it was replayed in memory for reading and the file was not modified",
            if n == 1 { "y" } else { "ies" }
        ),
    ));
    Ok((Arc::new(overlay), info))
}
