//! Replaying the active sequence onto the file itself, with the header update protocol.

use super::*;

/// A read-only view of a writable storage (so the readers, which take `&dyn Storage`, can
/// work on it).
#[derive(Debug)]
pub(super) struct ReadView<'a>(&'a dyn StorageMut);

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

pub(super) fn file_offset_of(w: &LogWrite<'_>) -> u64 {
    match *w {
        LogWrite::Data { file_offset, .. } | LogWrite::Zero { file_offset, .. } => file_offset,
    }
}

/// Opens the VHDX file at `path` read-write with the write locks (refused with
/// [`crate::ErrorKind::InUse`] while QEMU or another writer has it open) and replays its log
/// onto it with [`replay_onto_file`].
pub fn replay_log_in_place(path: &Path) -> Result<ReplayOutcome> {
    let f = FileStorage::open_rw_exclusive(path)?;
    replay_onto_file(&f).map_err(|e| e.in_file(path))
}
