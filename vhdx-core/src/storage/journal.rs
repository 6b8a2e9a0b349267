//! Staged metadata over a writable file: the write path's view of an image.
//!
//! Payload data is written straight to the file, but every change to a table or bitmap that
//! gives meaning to that data (BAT entries, sector bitmaps) is *staged* here as a whole page
//! image instead. Reads through the journal see the staged pages on top of the file, so the
//! disk reads as if the changes had been made. A commit (VHDX: through the log; VHD: after
//! the data is flushed) takes the staged pages and writes them in a crash-safe order; until
//! then the file itself still holds the previous, consistent metadata.
//!
//! Pages have a fixed size: 4 KiB for VHDX (the log's sector) and 512 bytes for VHD (a
//! sector, so a staged page never covers payload bytes written directly).

use super::{Storage, StorageMut};
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, RwLock};

/// A writable file with staged page images on top.
#[derive(Debug)]
pub struct Journal {
    base: Arc<dyn StorageMut>,
    page: u64,
    pages: RwLock<BTreeMap<u64, Box<[u8]>>>,
}

impl Journal {
    /// An empty journal of `page`-byte pages (a power of two) over `base`.
    pub fn new(base: Arc<dyn StorageMut>, page: u64) -> Self {
        debug_assert!(page.is_power_of_two());
        Journal {
            base,
            page,
            pages: RwLock::new(BTreeMap::new()),
        }
    }

    /// The file beneath.
    pub fn base(&self) -> &Arc<dyn StorageMut> {
        &self.base
    }

    /// The page size.
    pub fn page_size(&self) -> u64 {
        self.page
    }

    /// Number of staged pages.
    pub fn staged(&self) -> usize {
        self.read_pages().len()
    }

    fn read_pages(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Box<[u8]>>> {
        self.pages.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Stages `data` at `offset`: the pages it touches are read from the file (or taken from
    /// the stage) and patched. Bytes of those pages past the end of the file read as zeros.
    pub fn stage(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut pages = self.pages.write().unwrap_or_else(|p| p.into_inner());
        let mut pos = offset;
        let end = offset + data.len() as u64;
        while pos < end {
            let start = pos - pos % self.page;
            let n = (start + self.page).min(end) - pos;
            let p = match pages.entry(start) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let mut buf = vec![0u8; self.page as usize].into_boxed_slice();
                    self.base.read_at_zero_tail(&mut buf, start)?;
                    v.insert(buf)
                }
            };
            let from = (pos - offset) as usize;
            let at = (pos - start) as usize;
            p[at..at + n as usize].copy_from_slice(&data[from..from + n as usize]);
            pos += n;
        }
        Ok(())
    }

    /// The staged pages in file order (offset, bytes), leaving them staged.
    pub fn pages(&self) -> Vec<(u64, Box<[u8]>)> {
        self.read_pages()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Forgets every staged page (after they were committed).
    pub fn clear(&self) {
        self.pages
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl Storage for Journal {
    fn len(&self) -> io::Result<u64> {
        self.base.len()
    }

    /// The holes of the file beneath (staged pages are metadata, never in a hole that
    /// matters to a caller asking where payload lies).
    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        self.base.next_data(offset)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let pages = self.read_pages();
        let end = offset + buf.len() as u64;
        let first = offset - offset % self.page;
        let mut staged = pages.range(first..end).peekable();
        if staged.peek().is_none() {
            drop(pages);
            return self.base.read_exact_at(buf, offset);
        }
        self.base.read_at_zero_tail(buf, offset)?;
        for (&start, page) in staged {
            let lo = start.max(offset);
            let hi = (start + self.page).min(end);
            if lo < hi {
                buf[(lo - offset) as usize..(hi - offset) as usize]
                    .copy_from_slice(&page[(lo - start) as usize..(hi - start) as usize]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn staged_pages_read_on_top_and_leave_the_file_alone() {
        let m = Arc::new(MemStorage::new((0..=255u8).cycle().take(4096).collect()));
        let j = Journal::new(m.clone(), 512);
        j.stage(510, &[0xAA; 4]).unwrap();
        assert_eq!(j.staged(), 2);
        let mut b = [0u8; 8];
        j.read_exact_at(&mut b, 508).unwrap();
        assert_eq!(b, [252, 253, 0xAA, 0xAA, 0xAA, 0xAA, 2, 3]);
        m.read_exact_at(&mut b, 508).unwrap();
        assert_eq!(b, [252, 253, 254, 255, 0, 1, 2, 3]);
        let pages = j.pages();
        assert_eq!(pages[0].0, 0);
        assert_eq!(pages[1].0, 512);
        assert_eq!(&pages[1].1[..3], &[0xAA, 0xAA, 2]);
        j.clear();
        j.read_exact_at(&mut b, 508).unwrap();
        assert_eq!(b, [252, 253, 254, 255, 0, 1, 2, 3]);
    }
}
