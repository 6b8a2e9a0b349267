//! The copy every conversion is made of (see the module documentation of
//! [`super`]): the source's allocation map decides what is read, a zero scan what is
//! written.
//!
//! Reading and writing overlap: a reader thread reads pieces and scans them for zeros while
//! the calling thread hands the previous ones to the sink, so the two copies through the
//! kernel (page cache into the buffer, buffer into the output's page cache) run on two
//! cores. Pieces travel through a small pool of buffers, which bounds the memory to
//! [`BUFFERS`] pieces.
//!
//! In-kernel copies: where the source says which host file holds a data extent
//! ([`VirtualDisk::host_file`]: a plain file, no log replayed in memory) and the sink can
//! take bytes from a file ([`FileSink`]), the data never passes through user space. The
//! reader then only samples each 64 KiB step — its first 4 KiB, and the rest only when
//! those are zeros — so the zero scan stays exact, and the sink copies the non-zero runs
//! with `copy_file_range`: one copy inside the kernel instead of two across it.
//!
//! The output's writeback starts early ("write-behind"): a third thread flushes the output
//! file (`fdatasync`) each time another [`WRITE_BEHIND`] bytes were written, so the disk
//! writes while the copy goes on and the flush that completes the conversion finds little
//! left to do. Flushing earlier than needed changes no on-disk order the write path relies
//! on: every state of the file must be safe at any moment anyway.

use crate::bytes::is_zero;
use crate::disk::{extents, Extent, Status, VirtualDisk};
use crate::error::{Error, Result};
use std::fs::File;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};

/// Read unit of the copy: large enough for full-speed sequential I/O, small enough to bound
/// memory; a power of two, so pieces align with every block size.
pub(super) const PIECE: u64 = 8 << 20;
/// Granularity of zero detection inside a piece.
pub(super) const ZERO_STEP: u64 = 64 << 10;
/// Bytes of each step the reader looks at first when the data stays in the kernel: real
/// data almost always shows a non-zero byte there, and only all-zero samples cost a read of
/// the whole step.
const SAMPLE: usize = 4 << 10;
/// Pieces in flight between the reader and the writer (one being read, one queued, one
/// being written).
const BUFFERS: usize = 3;
/// Bytes written between two early flushes of the output.
const WRITE_BEHIND: u64 = 64 << 20;

/// A sink that takes bytes from a host file: `(file, file_offset, len, virtual_offset)`,
/// whole logical sectors of the source.
pub(crate) type FileSink<'s> = &'s mut dyn FnMut(&File, u64, u64, u64) -> Result<()>;

/// What [`copy`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Copied {
    /// Bytes passed to the sink.
    pub written: u64,
    /// Bytes not passed: zero or unallocated in the source, or all-zero runs.
    pub skipped: u64,
}

/// What the reader hands the writer, in the order of the virtual disk.
enum Item<'d> {
    /// `len` bytes the source holds no data in.
    Skip(u64),
    /// `len` bytes at virtual `pos`, of which the `runs` (start, end) hold a non-zero byte:
    /// read into `buf`, or (`buf` = `None`) stored at `file_offset` in `file`.
    Piece {
        pos: u64,
        len: usize,
        from: From<'d>,
        runs: Vec<(usize, usize)>,
    },
}

/// Where the bytes of a piece are.
enum From<'d> {
    /// Read into this buffer.
    Buffer(Vec<u8>),
    /// Left in the host file, at this offset.
    File(&'d File, u64),
}

/// Copies every byte of `disk` that may be non-zero into `sink(data, offset)` — or, where
/// `file_sink` is given and the source's host file holds the bytes, into
/// `file_sink(file, file_offset, len, offset)` — as the module documentation describes,
/// flushing `output` (the file the sinks write, when there is one) as the copy advances.
/// `progress(done, total)` reports bytes of the source, in order. Read errors of the source
/// come back as they are.
pub(crate) fn copy(
    disk: &dyn VirtualDisk,
    sink: &mut dyn FnMut(&[u8], u64) -> Result<()>,
    mut file_sink: Option<FileSink<'_>>,
    output: Option<&File>,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<Copied> {
    let size = disk.size();
    let map = extents(disk)?;
    let piece = PIECE.min(size).max(1) as usize;
    let in_kernel = file_sink.is_some();
    std::thread::scope(|s| {
        let (full_tx, full_rx) = sync_channel(BUFFERS - 2);
        let (empty_tx, empty_rx) = channel();
        s.spawn(move || read_ahead(disk, &map, piece, in_kernel, &full_tx, &empty_rx));
        let mut behind = output.map(|f| {
            let (tx, rx) = channel::<()>();
            (tx, s.spawn(move || flush_behind(f, &rx)))
        });
        let mut copied = Copied::default();
        let mut done = 0u64;
        let mut unflushed = 0u64;
        for item in full_rx.iter() {
            match item? {
                Item::Skip(len) => {
                    copied.skipped += len;
                    done += len;
                }
                Item::Piece {
                    pos,
                    len,
                    from,
                    runs,
                } => {
                    let mut written = 0;
                    for &(a, b) in &runs {
                        let at = pos + a as u64;
                        match (&from, file_sink.as_deref_mut()) {
                            (From::File(f, off), Some(fs)) => {
                                fs(f, off + a as u64, (b - a) as u64, at)?
                            }
                            (From::Buffer(buf), _) => sink(&buf[a..b], at)?,
                            (From::File(f, off), None) => {
                                // (The reader leaves data in files only for a file sink.)
                                let mut buf = vec![0u8; b - a];
                                crate::storage::pread_exact(f, &mut buf, off + a as u64)
                                    .map_err(|e| Error::io(e, "reading the source"))?;
                                sink(&buf, at)?
                            }
                        }
                        written += (b - a) as u64;
                    }
                    copied.written += written;
                    copied.skipped += len as u64 - written;
                    done += len as u64;
                    unflushed += written;
                    if unflushed >= WRITE_BEHIND {
                        unflushed = 0;
                        if let Some((tx, _)) = &behind {
                            // A flusher that stopped reports why when it is joined.
                            let _ = tx.send(());
                        }
                    }
                    if let From::Buffer(buf) = from {
                        // The reader may have stopped after its last piece.
                        let _ = empty_tx.send(buf);
                    }
                }
            }
            if let Some(p) = progress {
                p(done, size);
            }
        }
        if let Some((tx, flusher)) = behind.take() {
            drop(tx);
            flusher
                .join()
                .map_err(|_| Error::io(std::io::Error::other("panicked"), "flushing the output"))?
                .map_err(|e| Error::io(e, "flushing the output"))?;
        }
        Ok(copied)
    })
}

/// The reader: walks `map`, takes the ranges of `disk` it shows as data in pieces of at
/// most `piece` bytes that never cross a multiple of `piece`, finds the runs of 64
/// KiB-aligned steps that hold a non-zero byte, and sends everything to `full` in order.
/// With `in_kernel`, ranges whose host file is known stay there (only sampled, see the
/// module documentation); the others are read into buffers. Adjacent data extents read
/// through buffers are read as one range whatever their place in the files (a dynamic VHD's
/// 2 MiB blocks, separated by their bitmaps, still make 8 MiB pieces). Stops at the first
/// error (sent on) or when the writer has gone.
fn read_ahead<'d>(
    disk: &'d dyn VirtualDisk,
    map: &[Extent],
    piece: usize,
    in_kernel: bool,
    full: &SyncSender<Result<Item<'d>>>,
    empty: &Receiver<Vec<u8>>,
) {
    let mut buffers = 0;
    let mut files = HostFiles::new(in_kernel.then_some(disk));
    let mut step = Vec::new();
    for (offset, length, kind) in ranges(map, &mut files) {
        if kind == Kind::Skip {
            if full.send(Ok(Item::Skip(length))).is_err() {
                return;
            }
            continue;
        }
        let end = offset + length;
        let mut pos = offset;
        while pos < end {
            let len = (end - pos).min(piece as u64 - pos % piece as u64) as usize;
            let in_file = match kind {
                Kind::File(depth, file_offset) => disk.host_file(depth).map(|f| (f, file_offset)),
                _ => None,
            };
            let item = match in_file {
                Some((f, file_offset)) => {
                    let at = file_offset + (pos - offset);
                    sampled_runs(f, at, len, pos, &mut step)
                        .map(|runs| Item::Piece {
                            pos,
                            len,
                            from: From::File(f, at),
                            runs,
                        })
                        .map_err(|e| Error::io(e, "reading the source").offset(at))
                }
                None => {
                    let mut buf = match empty.try_recv() {
                        Ok(b) => b,
                        Err(_) if buffers < BUFFERS => {
                            buffers += 1;
                            vec![0u8; piece]
                        }
                        Err(_) => match empty.recv() {
                            Ok(b) => b,
                            Err(_) => return,
                        },
                    };
                    disk.read_at(&mut buf[..len], pos).map(|()| Item::Piece {
                        pos,
                        len,
                        runs: nonzero_runs(&buf[..len], pos),
                        from: From::Buffer(buf),
                    })
                }
            };
            let failed = item.is_err();
            if full.send(item).is_err() || failed {
                return;
            }
            pos += len as u64;
        }
    }
}

/// How the reader takes a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Nothing to read: zeros or unallocated.
    Skip,
    /// Read through [`VirtualDisk::read_at`].
    Read,
    /// Left in the host file of chain depth `.0`, at file offset `.1`.
    File(u32, u64),
}

/// The host files of a disk's chain that in-kernel copies may take bytes from, with their
/// lengths (a range must lie inside its file: a raw image may be shorter than its disk).
struct HostFiles<'d> {
    /// The disk, or `None` when every range is to be read.
    disk: Option<&'d dyn VirtualDisk>,
    lengths: Vec<Option<u64>>,
}

impl<'d> HostFiles<'d> {
    fn new(disk: Option<&'d dyn VirtualDisk>) -> Self {
        HostFiles {
            disk,
            lengths: Vec::new(),
        }
    }

    /// How to take the data extent of `length` bytes at `file_offset` in the image at
    /// `depth`.
    fn kind(&mut self, depth: u32, file_offset: Option<u64>, length: u64) -> Kind {
        let (Some(disk), Some(off)) = (self.disk, file_offset) else {
            return Kind::Read;
        };
        let d = depth as usize;
        if self.lengths.len() <= d {
            self.lengths.resize(d + 1, None);
        }
        let len = match self.lengths[d] {
            Some(n) => Some(n),
            None => {
                let n = disk
                    .host_file(depth)
                    .and_then(|f| f.metadata().ok())
                    .map(|m| m.len());
                self.lengths[d] = n;
                n
            }
        };
        match len {
            Some(n) if off.checked_add(length).is_some_and(|e| e <= n) => Kind::File(depth, off),
            _ => Kind::Read,
        }
    }
}

/// `map` as `(offset, length, kind)` ranges, adjacent extents merged when they are taken
/// the same way: anything that reads as zeros without being read; data read through the
/// disk; data left in the same host file, contiguous there too.
fn ranges(map: &[Extent], files: &mut HostFiles<'_>) -> Vec<(u64, u64, Kind)> {
    let mut out: Vec<(u64, u64, Kind)> = Vec::new();
    for e in map {
        let kind = match e.status {
            Status::Data { depth, file_offset } => files.kind(depth, file_offset, e.length),
            _ => Kind::Skip,
        };
        match out.last_mut() {
            Some(last) if last.0 + last.1 == e.offset && continues(last.2, last.1, kind) => {
                last.1 += e.length
            }
            _ => out.push((e.offset, e.length, kind)),
        }
    }
    out
}

/// Whether a range taken as `next` continues one of `len` bytes taken as `prev`.
fn continues(prev: Kind, len: u64, next: Kind) -> bool {
    match (prev, next) {
        (Kind::File(d, a), Kind::File(e, b)) => d == e && a.checked_add(len) == Some(b),
        (p, n) => p == n,
    }
}

/// The runs `(start, end)` of the `len` bytes at virtual `pos` made of whole
/// [`ZERO_STEP`]-aligned steps (cut at the edges) for which `nonzero(start, end)` holds.
fn step_runs(
    len: usize,
    pos: u64,
    mut nonzero: impl FnMut(usize, usize) -> std::io::Result<bool>,
) -> std::io::Result<Vec<(usize, usize)>> {
    let step_end = |k: usize| (k + (ZERO_STEP - (pos + k as u64) % ZERO_STEP) as usize).min(len);
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut k = 0;
    while k < len {
        let next = step_end(k);
        if nonzero(k, next)? {
            match runs.last_mut() {
                Some(last) if last.1 == k => last.1 = next,
                _ => runs.push((k, next)),
            }
        }
        k = next;
    }
    Ok(runs)
}

/// The runs of [`step_runs`] for `data` (read at virtual offset `pos`) that hold a non-zero
/// byte.
fn nonzero_runs(data: &[u8], pos: u64) -> Vec<(usize, usize)> {
    match step_runs(data.len(), pos, |a, b| Ok(!is_zero(&data[a..b]))) {
        Ok(runs) => runs,
        Err(_) => unreachable!("looking at memory cannot fail"),
    }
}

/// The runs of [`step_runs`] for the `len` bytes at `at` in `file` (virtual offset `pos`)
/// that hold a non-zero byte, found by reading each step's first [`SAMPLE`] bytes and the
/// rest only when those are zeros. `scratch` is reused between calls.
fn sampled_runs(
    file: &File,
    at: u64,
    len: usize,
    pos: u64,
    scratch: &mut Vec<u8>,
) -> std::io::Result<Vec<(usize, usize)>> {
    scratch.resize(ZERO_STEP as usize, 0);
    step_runs(len, pos, |a, b| {
        let head = (b - a).min(SAMPLE);
        crate::storage::pread_exact(file, &mut scratch[..head], at + a as u64)?;
        if !is_zero(&scratch[..head]) {
            return Ok(true);
        }
        let rest = b - a - head;
        crate::storage::pread_exact(file, &mut scratch[..rest], at + (a + head) as u64)?;
        Ok(!is_zero(&scratch[..rest]))
    })
}

/// The write-behind thread: flushes `file` once per signal (signals that arrive during a
/// flush are served by the next one) until the writer hangs up.
fn flush_behind(file: &File, signals: &Receiver<()>) -> std::io::Result<()> {
    while signals.recv().is_ok() {
        while signals.try_recv().is_ok() {}
        file.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_adjacent_extents_of_a_kind() {
        let data = |file_offset| Status::Data {
            depth: 0,
            file_offset,
        };
        let e = |offset, length, status| Extent {
            offset,
            length,
            status,
        };
        let map = [
            e(0, 10, Status::Unallocated),
            e(10, 5, Status::Zero { depth: 0 }),
            e(15, 5, data(Some(1000))),
            e(20, 5, data(Some(5000))),
            e(25, 5, data(None)),
            e(30, 5, Status::Unallocated),
        ];
        assert_eq!(
            ranges(&map, &mut HostFiles::new(None)),
            vec![
                (0, 15, Kind::Skip),
                (15, 15, Kind::Read),
                (30, 5, Kind::Skip)
            ]
        );
    }

    #[test]
    fn runs_are_whole_aligned_steps_cut_at_the_edges() {
        let step = ZERO_STEP as usize;
        let mut data = vec![0u8; 4 * step];
        data[10] = 1;
        data[step + 5] = 1;
        data[3 * step + 7] = 1;
        assert_eq!(
            nonzero_runs(&data, 0),
            vec![(0, 2 * step), (3 * step, 4 * step)]
        );
        // Read 100 bytes into a step: the steps follow the virtual disk, not the buffer.
        let mut data = vec![0u8; 2 * step];
        data[step - 50] = 1;
        assert_eq!(nonzero_runs(&data, 100), vec![(step - 100, 2 * step - 100)]);
        data[0] = 1;
        assert_eq!(nonzero_runs(&data, 100), vec![(0, 2 * step - 100)]);
        assert!(nonzero_runs(&[0u8; 1000], 5).is_empty());
    }
}
