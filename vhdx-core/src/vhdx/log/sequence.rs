//! Finding and validating the active sequence of a log (FORMATS.md A.10, Part D 9).

use super::*;

/// Where the log lives and which GUID its entries must carry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub(super) offset: u64,
    pub(super) length: u64,
    pub(super) guid: Guid,
    pub(super) file_len: u64,
}

/// A descriptor of a validated entry.
#[derive(Debug, Clone, Copy)]
pub(super) enum Desc {
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

pub(super) fn round_up_mib(v: u64) -> Option<u64> {
    v.checked_next_multiple_of(MIB)
}

/// Checks where the log lives (FORMATS.md Part D 3) and returns its geometry.
pub(super) fn geometry(h: &Header, file_len: u64) -> Result<Geometry> {
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
pub(super) fn read_log(
    storage: &dyn Storage,
    g: &Geometry,
    pos: u64,
    buf: &mut [u8],
) -> Result<()> {
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
pub(super) fn validate_entry(
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
pub(super) fn check_header(
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
pub(super) fn read_entry(storage: &dyn Storage, g: &Geometry, pos: u64) -> Result<Validated> {
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
pub(super) fn find_sequence(storage: &dyn Storage, g: &Geometry) -> Result<Option<LogSequence>> {
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
pub(super) struct Scan {
    pub(super) geometry: Geometry,
    pub(super) sequence: Option<LogSequence>,
}

/// Validates the placement, finds the active sequence and checks the file against the head's
/// FlushedFileOffset. Only for a nonzero LogGuid.
pub(super) fn scan(storage: &dyn Storage, h: &Header) -> Result<Scan> {
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
pub(super) fn for_each_write(
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
