//! Free space of an NTFS volume, from `$Bitmap` (file record 6), read through the `ntfs`
//! crate over a [`VolumeReader`]: bit `n` set means cluster `n` is in use.
//!
//! Before the bitmap is trusted:
//! - the boot sector must describe a volume that fits the partition (the crate validates
//!   the BIOS parameter block; the cluster size comes from it);
//! - `$Volume`'s `$VOLUME_INFORMATION` must not carry the dirty or chkdsk-underway flags;
//! - `$LogFile` must be empty (all `0xFF`, as mkntfs and ntfs-3g leave it) or its newest
//!   restart area must say the volume is clean (no client in use, or the clean flag): a log
//!   with unfinished transactions (a crash, Windows fast startup or hibernation) may hold
//!   allocations `$Bitmap` does not show yet;
//! - `$Bitmap`'s data must be resident or plain non-resident (not spread by an attribute
//!   list, not compressed, not sparse), long enough for every cluster, and initialized that
//!   far (the crate reads bytes past the valid data length as zeros, which would look free);
//! - cluster 0 (the boot sector) and every cluster of the system files (file records 0–15:
//!   `$MFT`, `$MFTMirr`, `$LogFile`, `$Bitmap`, `$UpCase`, …) must be in use.
//!
//! Clusters past the last whole cluster of the volume (the backup boot sector lives there)
//! are never free. The bitmap is read one cluster at a time.
//!
//! NTFS keeps no checksum or free-cluster count to check `$Bitmap` against (ext does): a bit
//! flipped from used to free by damage to the volume would be believed, as Windows itself
//! believes it when it allocates. The checks above catch a bitmap that is gross garbage;
//! `chkdsk` is the cure for the rest.

use super::{ext::bit_runs, push_range, Halt, Skip, SkipKind};
use crate::error::Error;
use crate::guest::window::VolumeReader;
use ::ntfs::attribute_value::NtfsAttributeValue;
use ::ntfs::structured_values::NtfsVolumeFlags;
use ::ntfs::{KnownNtfsFileRecordNumber, Ntfs, NtfsAttributeFlags, NtfsError};
use std::io::{Read, Seek, SeekFrom};

fn inconsistent(reason: impl Into<String>) -> Halt {
    Halt::Skip(Skip::new(SkipKind::Inconsistent, reason))
}

/// An error of the `ntfs` crate as a halt: our own read errors come back as they were (a
/// disk that cannot be read stops everything; a read outside the volume is an
/// inconsistency); the crate's findings make the volume inconsistent.
fn halt(what: &str, e: NtfsError) -> Halt {
    if let NtfsError::Io(io) = e {
        let text = io.to_string();
        return match io.into_inner().map(|b| b.downcast::<Error>()) {
            Some(Ok(ours)) => Halt::from(*ours),
            _ => inconsistent(format!("{what}: {text}")),
        };
    }
    inconsistent(format!("{what}: {e}"))
}

/// The free byte ranges of the NTFS volume in `vol`, relative to the volume, sorted and
/// merged (see the module documentation). The `ntfs` crate is not promised to be free of
/// panics on hostile input: a panic inside it skips the volume.
pub(super) fn free_ranges(vol: &VolumeReader<'_>) -> Result<Vec<(u64, u64)>, Halt> {
    let v = *vol;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || read(v))) {
        Ok(r) => r,
        Err(_) => Err(inconsistent("the NTFS reader gave up on this volume")),
    }
}

fn read(vol: VolumeReader<'_>) -> Result<Vec<(u64, u64)>, Halt> {
    let mut r = vol;
    let fs = Ntfs::new(&mut r).map_err(|e| halt("boot sector", e))?;
    let cluster = u64::from(fs.cluster_size());
    if fs.size() > vol.len() {
        return Err(inconsistent(format!(
            "the file system ({} bytes) is larger than its volume ({} bytes)",
            fs.size(),
            vol.len()
        )));
    }
    let clusters = fs.size() / cluster;
    let info = fs.volume_info(&mut r).map_err(|e| halt("$Volume", e))?;
    let flags = info.flags();
    if flags.intersects(NtfsVolumeFlags::IS_DIRTY | NtfsVolumeFlags::CHKDSK_UNDERWAY) {
        return Err(Halt::Skip(Skip::new(
            SkipKind::Dirty,
            format!("the volume is marked dirty (flags {flags}): chkdsk has to run first"),
        )));
    }
    check_log(&fs, &mut r)?;

    let bitmap = fs
        .file(&mut r, KnownNtfsFileRecordNumber::Bitmap as u64)
        .map_err(|e| halt("$Bitmap", e))?;
    let item = match bitmap.data(&mut r, "") {
        Some(i) => i.map_err(|e| halt("$Bitmap", e))?,
        None => return Err(inconsistent("$Bitmap has no data")),
    };
    let attr = item.to_attribute().map_err(|e| halt("$Bitmap", e))?;
    if attr
        .flags()
        .intersects(NtfsAttributeFlags::COMPRESSED | NtfsAttributeFlags::SPARSE)
    {
        return Err(inconsistent("$Bitmap is compressed or sparse"));
    }
    let need = clusters.div_ceil(8);
    let value = attr.value(&mut r).map_err(|e| halt("$Bitmap", e))?;
    let initialized = match &value {
        NtfsAttributeValue::Resident(_) => value.len(),
        NtfsAttributeValue::NonResident(_) => {
            let record = bitmap.position().value().map_or(0, |p| p.get());
            let at = attr.position().value().map_or(0, |p| p.get());
            initialized_size(&vol, record, fs.file_record_size(), at)?
        }
        NtfsAttributeValue::AttributeListNonResident(_) => {
            return Err(Halt::Skip(Skip::new(
                SkipKind::UnsupportedFeature,
                "$Bitmap is spread over several file records",
            )))
        }
    };
    if value.len() < need || initialized < need {
        return Err(inconsistent(format!(
            "$Bitmap holds {} bytes ({initialized} initialized) for {clusters} clusters",
            value.len()
        )));
    }
    let non_resident = matches!(value, NtfsAttributeValue::NonResident(_));
    let mut data = value.attach(&mut r);
    let mut out = Vec::new();
    let mut buf = vec![0u8; cluster as usize];
    let mut first_byte = 0u64;
    let mut mft_cluster_used = false;
    let mft_cluster = fs.mft_position().value().map_or(0, |p| p.get()) / cluster;
    while first_byte < need {
        let n = (need - first_byte).min(cluster) as usize;
        data.seek(SeekFrom::Start(first_byte))
            .map_err(|e| halt("$Bitmap", NtfsError::Io(e)))?;
        if non_resident && data.data_position().value().is_none() {
            return Err(inconsistent("$Bitmap has a hole"));
        }
        data.read_exact(&mut buf[..n])
            .map_err(|e| halt("$Bitmap", NtfsError::Io(e)))?;
        let base = first_byte * 8;
        if first_byte == 0 && buf[0] & 1 == 0 {
            return Err(inconsistent("$Bitmap calls the boot sector's cluster free"));
        }
        if (base..base + n as u64 * 8).contains(&mft_cluster) {
            let i = (mft_cluster - base) as usize;
            mft_cluster_used = buf[i / 8] >> (i % 8) & 1 == 1;
        }
        let bits = (clusters - base).min(n as u64 * 8) as usize;
        bit_runs(&buf[..n], bits, |s, l| {
            push_range(&mut out, (base + s as u64) * cluster, l as u64 * cluster);
        });
        first_byte += n as u64;
    }
    if !mft_cluster_used {
        return Err(inconsistent(
            "$Bitmap calls the first cluster of the $MFT free",
        ));
    }
    for (n, o, l) in system_extents(&fs, &mut r)? {
        let k = out.partition_point(|&(fo, fl)| fo + fl <= o);
        if out.get(k).is_some_and(|&(fo, _)| fo < o + l) {
            return Err(inconsistent(format!(
                "$Bitmap calls clusters of system file record {n} free (at byte {o:#x})"
            )));
        }
    }
    Ok(out)
}

/// The byte extents `(file record, offset, length)` the system files (records 0–15) keep
/// outside their records: every run of every non-resident attribute that is not sparse.
fn system_extents(fs: &Ntfs, r: &mut VolumeReader<'_>) -> Result<Vec<(u64, u64, u64)>, Halt> {
    let mut out = Vec::new();
    for n in 0..16u64 {
        let what = format!("system file record {n}");
        let file = match fs.file(r, n) {
            Ok(f) => f,
            // Records 12-15 are reserved and may never have been written.
            Err(_) if n >= 12 => continue,
            Err(e) => return Err(halt(&what, e)),
        };
        if !file.flags().contains(::ntfs::NtfsFileFlags::IN_USE) {
            continue;
        }
        let mut attrs = file.attributes();
        while let Some(item) = attrs.next(r) {
            let item = item.map_err(|e| halt(&what, e))?;
            let attr = item.to_attribute().map_err(|e| halt(&what, e))?;
            if attr.is_resident() {
                continue;
            }
            if let NtfsAttributeValue::NonResident(v) = attr.value(r).map_err(|e| halt(&what, e))? {
                for run in v.data_runs() {
                    let run = run.map_err(|e| halt(&what, e))?;
                    if let Some(p) = run.data_position().value() {
                        out.push((n, p.get(), run.allocated_size()));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The initialized size of the non-resident attribute at absolute position `attr` inside
/// the file record at `record` (`size` bytes), read from the record after its update
/// sequence fixups.
fn initialized_size(
    vol: &VolumeReader<'_>,
    record: u64,
    size: u32,
    attr: u64,
) -> Result<u64, Halt> {
    let mut rec = vec![0u8; size as usize];
    vol.read_at(&mut rec, record)?;
    if &rec[..4] != b"FILE" {
        return Err(inconsistent("$Bitmap's file record has no FILE signature"));
    }
    let usa_ofs = usize::from(u16::from_le_bytes([rec[4], rec[5]]));
    let usa_count = usize::from(u16::from_le_bytes([rec[6], rec[7]]));
    if usa_count == 0 || usa_ofs + 2 * usa_count > rec.len() || (usa_count - 1) * 512 > rec.len() {
        return Err(inconsistent(
            "$Bitmap's file record has a bad update sequence",
        ));
    }
    let usn = [rec[usa_ofs], rec[usa_ofs + 1]];
    for i in 1..usa_count {
        let end = i * 512;
        if rec[end - 2..end] != usn {
            return Err(inconsistent(
                "$Bitmap's file record is torn (update sequence)",
            ));
        }
        let fix = [rec[usa_ofs + 2 * i], rec[usa_ofs + 2 * i + 1]];
        rec[end - 2..end].copy_from_slice(&fix);
    }
    let at = attr
        .checked_sub(record)
        .and_then(|o| usize::try_from(o).ok())
        .filter(|&o| o + 0x40 <= rec.len())
        .ok_or_else(|| inconsistent("$Bitmap's attribute lies outside its record"))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(&rec[at + 0x38..at + 0x40]);
    Ok(u64::from_le_bytes(b))
}

/// Refuses a volume whose `$LogFile` holds unfinished transactions (see the module
/// documentation).
fn check_log(fs: &Ntfs, r: &mut VolumeReader<'_>) -> Result<(), Halt> {
    let log = fs
        .file(r, KnownNtfsFileRecordNumber::LogFile as u64)
        .map_err(|e| halt("$LogFile", e))?;
    let item = match log.data(r, "") {
        Some(i) => i.map_err(|e| halt("$LogFile", e))?,
        None => return Err(inconsistent("$LogFile has no data")),
    };
    let attr = item.to_attribute().map_err(|e| halt("$LogFile", e))?;
    let value = attr.value(r).map_err(|e| halt("$LogFile", e))?;
    let len = value.len();
    let mut data = value.attach(r);
    let mut page = |at: u64, buf: &mut [u8]| -> Result<bool, Halt> {
        if at + buf.len() as u64 > len {
            return Ok(false);
        }
        data.seek(SeekFrom::Start(at))
            .and_then(|_| data.read_exact(buf))
            .map_err(|e| halt("$LogFile", NtfsError::Io(e)))?;
        Ok(true)
    };
    let mut first = vec![0u8; 4096];
    if !page(0, &mut first)? {
        return Err(inconsistent("$LogFile is shorter than a page"));
    }
    // The second restart page follows the first after the system page size (4 KiB when
    // the first page does not say).
    let size = restart_page_size(&first).unwrap_or(4096);
    let mut second = vec![0u8; size as usize];
    if !page(size, &mut second)? {
        second.clear();
    }
    log_verdict(&first, (!second.is_empty()).then_some(&second[..]))
}

/// The system page size a restart page at the start of `$LogFile` names (where the second
/// restart page starts), when `first` is one and the size is sane.
fn restart_page_size(first: &[u8]) -> Option<u64> {
    if &first[..4] != b"RSTR" {
        return None;
    }
    let size = u64::from(u32::from_le_bytes(first[16..20].try_into().ok()?));
    ((512..=65536).contains(&size) && size.is_power_of_two()).then_some(size)
}

/// Whether `$LogFile` lets the bitmap be trusted, from its first page and its second
/// restart page (when there is one): an empty log (all `0xFF`) is clean; otherwise the
/// valid restart page with the newest current LSN must show no client in use or the
/// clean flag.
fn log_verdict(first: &[u8], second: Option<&[u8]>) -> Result<(), Halt> {
    if first.iter().all(|&b| b == 0xFF) {
        return Ok(()); // empty: nothing to replay
    }
    let dirty = |why: &str| {
        Halt::Skip(Skip::new(
            SkipKind::Dirty,
            format!(
                "$LogFile {why}: Windows did not shut down cleanly (or hibernated, fast \
                 startup)"
            ),
        ))
    };
    if &first[..4] == b"CHKD" {
        return Err(dirty("was left by chkdsk"));
    }
    // (current LSN, clean) of each valid restart page; the newest decides.
    let restart = |p: &[u8]| -> Option<(u64, bool)> {
        if &p[..4] != b"RSTR" {
            return None;
        }
        let ra = usize::from(u16::from_le_bytes([p[0x18], p[0x19]]));
        let a = p.get(ra..ra.checked_add(0x10)?)?;
        let lsn = u64::from_le_bytes(a[..8].try_into().ok()?);
        let in_use = u16::from_le_bytes([a[0xC], a[0xD]]);
        let flags = u16::from_le_bytes([a[0xE], a[0xF]]);
        Some((lsn, in_use == 0xFFFF || flags & 0x2 != 0))
    };
    let newest = [Some(first), second]
        .into_iter()
        .flatten()
        .filter_map(restart)
        .max_by_key(|x| x.0);
    match newest {
        Some((_, true)) => Ok(()),
        Some((_, false)) => Err(dirty("holds unfinished transactions")),
        None => Err(inconsistent("$LogFile has no valid restart page")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restart page: current LSN, client in use list, flags.
    fn rstr(lsn: u64, in_use: u16, flags: u16) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        p[..4].copy_from_slice(b"RSTR");
        p[16..20].copy_from_slice(&4096u32.to_le_bytes());
        p[0x18..0x1A].copy_from_slice(&0x30u16.to_le_bytes());
        p[0x30..0x38].copy_from_slice(&lsn.to_le_bytes());
        p[0x3C..0x3E].copy_from_slice(&in_use.to_le_bytes());
        p[0x3E..0x40].copy_from_slice(&flags.to_le_bytes());
        p
    }

    fn kind(r: Result<(), Halt>) -> Option<SkipKind> {
        match r {
            Ok(()) => None,
            Err(Halt::Skip(s)) => Some(s.kind),
            Err(Halt::Fail(e)) => panic!("{e}"),
        }
    }

    #[test]
    fn log_states() {
        let empty = vec![0xFFu8; 4096];
        assert_eq!(kind(log_verdict(&empty, None)), None);
        let clean = rstr(10, 0xFFFF, 0);
        let flagged = rstr(10, 0, 2);
        let busy = rstr(20, 0, 0);
        assert_eq!(restart_page_size(&clean), Some(4096));
        assert_eq!(kind(log_verdict(&clean, None)), None);
        assert_eq!(kind(log_verdict(&flagged, None)), None);
        assert_eq!(kind(log_verdict(&busy, None)), Some(SkipKind::Dirty));
        // The newer page decides, whichever comes first.
        assert_eq!(
            kind(log_verdict(&clean, Some(&busy))),
            Some(SkipKind::Dirty)
        );
        assert_eq!(kind(log_verdict(&busy, Some(&rstr(30, 0xFFFF, 0)))), None);
        // A damaged first page: the second decides.
        let mut torn = busy.clone();
        torn[..4].copy_from_slice(b"BAAD");
        assert_eq!(kind(log_verdict(&torn, Some(&clean))), None);
        let mut chkd = clean.clone();
        chkd[..4].copy_from_slice(b"CHKD");
        assert_eq!(kind(log_verdict(&chkd, None)), Some(SkipKind::Dirty));
        assert_eq!(kind(log_verdict(&torn, None)), Some(SkipKind::Inconsistent));
        let mut far = clean.clone();
        far[0x18..0x1A].copy_from_slice(&0xFFF8u16.to_le_bytes());
        assert_eq!(kind(log_verdict(&far, None)), Some(SkipKind::Inconsistent));
        assert_eq!(restart_page_size(&torn), None);
    }
}
