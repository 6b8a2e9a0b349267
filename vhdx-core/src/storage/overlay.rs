//! A copy-on-read overlay over a read-only storage: writes land in memory, reads see them on
//! top of the base file. Read-only opens replay a dirty VHDX log into an overlay, so the
//! image reads as if the log had been applied while the file on disk stays byte-identical.
//!
//! Pieces are kept as non-overlapping intervals (zero runs or byte buffers), so a zero
//! descriptor covering megabytes costs one map entry, not one per sector.

use super::Storage;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Content {
    Zero,
    Bytes { data: Arc<[u8]>, start: usize },
}

#[derive(Debug, Clone)]
struct Piece {
    len: u64,
    content: Content,
}

impl Piece {
    /// The part of this piece from `skip` bytes in, `len` bytes long.
    fn slice(&self, skip: u64, len: u64) -> Piece {
        let content = match &self.content {
            Content::Zero => Content::Zero,
            Content::Bytes { data, start } => Content::Bytes {
                data: data.clone(),
                start: start + skip as usize,
            },
        };
        Piece { len, content }
    }
}

/// In-memory writes layered over a base storage.
#[derive(Debug)]
pub struct Overlay {
    base: Arc<dyn Storage>,
    pieces: BTreeMap<u64, Piece>,
    len: u64,
}

impl Overlay {
    /// An empty overlay over `base`.
    pub fn new(base: Arc<dyn Storage>) -> io::Result<Self> {
        let len = base.len()?;
        Ok(Overlay {
            base,
            pieces: BTreeMap::new(),
            len,
        })
    }

    /// Whether nothing has been written to the overlay.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty() && self.len == self.base.len().unwrap_or(self.len)
    }

    /// Records a write of `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let piece = Piece {
            len: data.len() as u64,
            content: Content::Bytes {
                data: Arc::from(data),
                start: 0,
            },
        };
        self.insert(offset, piece);
    }

    /// Records that `len` bytes at `offset` read as zeros.
    pub fn write_zeroes(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.insert(
            offset,
            Piece {
                len,
                content: Content::Zero,
            },
        );
    }

    /// Sets the apparent file length; bytes past the base file read as zeros.
    pub fn set_len(&mut self, len: u64) {
        if len < self.len {
            self.remove_range(len, u64::MAX);
        }
        self.len = len;
    }

    fn remove_range(&mut self, start: u64, end: u64) {
        let overlapping: Vec<u64> = self
            .pieces
            .range(..end)
            .rev()
            .take_while(|(k, p)| k.saturating_add(p.len) > start)
            .map(|(k, _)| *k)
            .collect();
        for k in overlapping {
            let Some(p) = self.pieces.remove(&k) else {
                continue;
            };
            let p_end = k + p.len;
            if k < start {
                self.pieces.insert(k, p.slice(0, start - k));
            }
            if p_end > end {
                self.pieces.insert(end, p.slice(end - k, p_end - end));
            }
        }
    }

    fn insert(&mut self, offset: u64, piece: Piece) {
        let end = offset.saturating_add(piece.len);
        self.remove_range(offset, end);
        self.len = self.len.max(end);
        self.pieces.insert(offset, piece);
    }
}

impl Storage for Overlay {
    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let base_len = self.base.len()?;
        // Walk the gaps and pieces covering [offset, end) in order.
        let mut pos = offset;
        let first = self
            .pieces
            .range(..=offset)
            .next_back()
            .filter(|(k, p)| *k + p.len > offset)
            .map(|(k, _)| *k)
            .unwrap_or(offset);
        let pieces: Vec<(u64, &Piece)> = self
            .pieces
            .range(first..end)
            .map(|(k, p)| (*k, p))
            .collect();
        let fill_base = |from: u64, to: u64, buf: &mut [u8]| -> io::Result<()> {
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            let real_end = to.min(base_len).max(from);
            let (head, tail) = dst.split_at_mut((real_end - from) as usize);
            if !head.is_empty() {
                self.base.read_exact_at(head, from)?;
            }
            tail.fill(0);
            Ok(())
        };
        for (k, p) in pieces {
            let p_start = k.max(offset);
            let p_end = (k + p.len).min(end);
            if p_start >= p_end {
                continue;
            }
            if pos < p_start {
                fill_base(pos, p_start, buf)?;
            }
            let dst = &mut buf[(p_start - offset) as usize..(p_end - offset) as usize];
            match &p.content {
                Content::Zero => dst.fill(0),
                Content::Bytes { data, start } => {
                    let s = start + (p_start - k) as usize;
                    dst.copy_from_slice(&data[s..s + dst.len()]);
                }
            }
            pos = p_end;
        }
        if pos < end {
            fill_base(pos, end, buf)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn read(o: &Overlay, off: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0xAAu8; n];
        o.read_exact_at(&mut b, off).unwrap();
        b
    }

    #[test]
    fn layered_writes_split_and_override() {
        let base = Arc::new(MemStorage::new((0u8..16).collect()));
        let mut o = Overlay::new(base).unwrap();
        o.write(4, &[100, 101, 102, 103]);
        o.write_zeroes(5, 2);
        o.write(6, &[200]);
        assert_eq!(read(&o, 0, 10), vec![0, 1, 2, 3, 100, 0, 200, 103, 8, 9]);
        // Grow past the base: the gap reads zero.
        o.write(20, &[1, 2]);
        assert_eq!(o.len().unwrap(), 22);
        assert_eq!(read(&o, 14, 8), vec![14, 15, 0, 0, 0, 0, 1, 2]);
        o.set_len(21);
        assert_eq!(read(&o, 19, 2), vec![0, 1]);
        assert!(o.read_exact_at(&mut [0u8; 2], 20).is_err());
    }
}
