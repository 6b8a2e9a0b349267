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
/// Pieces in flight between the reader and the writer (one being read, one queued, one
/// being written).
const BUFFERS: usize = 3;
/// Bytes written between two early flushes of the output.
const WRITE_BEHIND: u64 = 64 << 20;

/// What [`copy`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Copied {
    /// Bytes passed to the sink.
    pub written: u64,
    /// Bytes not passed: zero or unallocated in the source, or all-zero runs.
    pub skipped: u64,
}

/// What the reader hands the writer, in the order of the virtual disk.
enum Item {
    /// `len` bytes the source holds no data in.
    Skip(u64),
    /// `len` bytes read at `pos` into `buf`, of which the `runs` (start, end) hold a non-zero
    /// byte.
    Piece {
        pos: u64,
        len: usize,
        buf: Vec<u8>,
        runs: Vec<(usize, usize)>,
    },
}

/// Copies every byte of `disk` that may be non-zero into `sink(data, offset)`, as the module
/// documentation describes, flushing `output` (the file the sink writes, when there is one)
/// as the copy advances. `progress(done, total)` reports bytes of the source, in order.
/// Read errors of the source come back as they are.
pub(crate) fn copy(
    disk: &dyn VirtualDisk,
    sink: &mut dyn FnMut(&[u8], u64) -> Result<()>,
    output: Option<&File>,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<Copied> {
    let size = disk.size();
    let map = extents(disk)?;
    let piece = PIECE.min(size).max(1) as usize;
    std::thread::scope(|s| {
        let (full_tx, full_rx) = sync_channel(BUFFERS - 2);
        let (empty_tx, empty_rx) = channel();
        s.spawn(move || read_ahead(disk, &map, piece, &full_tx, &empty_rx));
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
                    buf,
                    runs,
                } => {
                    let mut written = 0;
                    for &(a, b) in &runs {
                        sink(&buf[a..b], pos + a as u64)?;
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
                    // The reader may have stopped after its last piece.
                    let _ = empty_tx.send(buf);
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

/// The reader: walks `map`, reads the ranges of `disk` it shows as data in pieces of at
/// most `piece` bytes that never cross a multiple of `piece`, finds the runs of 64 KiB-aligned
/// steps that hold a non-zero byte, and sends everything to `full` in order. Adjacent data
/// extents are read as one range whatever their place in the files (a dynamic VHD's 2 MiB
/// blocks, separated by their bitmaps, still make 8 MiB pieces). Stops at the first error
/// (sent on) or when the writer has gone.
fn read_ahead(
    disk: &dyn VirtualDisk,
    map: &[Extent],
    piece: usize,
    full: &SyncSender<Result<Item>>,
    empty: &Receiver<Vec<u8>>,
) {
    let mut buffers = 0;
    for (offset, length, data) in ranges(map) {
        if !data {
            if full.send(Ok(Item::Skip(length))).is_err() {
                return;
            }
            continue;
        }
        let end = offset + length;
        let mut pos = offset;
        while pos < end {
            let len = (end - pos).min(piece as u64 - pos % piece as u64) as usize;
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
            let item = disk.read_at(&mut buf[..len], pos).map(|()| Item::Piece {
                pos,
                len,
                runs: nonzero_runs(&buf[..len], pos),
                buf,
            });
            let failed = item.is_err();
            if full.send(item).is_err() || failed {
                return;
            }
            pos += len as u64;
        }
    }
}

/// `map` as `(offset, length, data)` ranges, adjacent extents of the same kind (data, or
/// anything that reads as zeros without being read) merged.
fn ranges(map: &[Extent]) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for e in map {
        let data = matches!(e.status, Status::Data { .. });
        match out.last_mut() {
            Some(last) if last.2 == data && last.0 + last.1 == e.offset => last.1 += e.length,
            _ => out.push((e.offset, e.length, data)),
        }
    }
    out
}

/// The runs `(start, end)` of `data` (read at virtual offset `pos`) made of whole
/// [`ZERO_STEP`]-aligned steps (cut at the edges of `data`) that hold a non-zero byte.
fn nonzero_runs(data: &[u8], pos: u64) -> Vec<(usize, usize)> {
    let n = data.len();
    let step_end = |k: usize| (k + (ZERO_STEP - (pos + k as u64) % ZERO_STEP) as usize).min(n);
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut k = 0;
    while k < n {
        let next = step_end(k);
        if !is_zero(&data[k..next]) {
            match runs.last_mut() {
                Some(last) if last.1 == k => last.1 = next,
                _ => runs.push((k, next)),
            }
        }
        k = next;
    }
    runs
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
            ranges(&map),
            vec![(0, 15, false), (15, 15, true), (30, 5, false)]
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
