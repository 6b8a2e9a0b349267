//! Tables of fixed-size entries read on demand (the VHDX and VHD block allocation tables).
//! Opening an image never reads a whole table: entries come from the memory map in place, or
//! from 4 KiB pages read once and cached, so open time and memory do not grow with the
//! virtual size. Full scans go through [`Table::for_each`], which reads in large pieces.

use super::Storage;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One entry type of a table: its size and how its bytes decode.
pub trait TableEntry: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// Bytes per entry.
    const SIZE: usize;
    /// Value of the slots of a page past the end of the table (never returned).
    const PAD: Self;
    /// Decodes one entry from exactly `SIZE` bytes.
    fn decode(bytes: &[u8]) -> Self;
}

/// A little-endian u64 entry (VHDX BAT).
impl TableEntry for u64 {
    const SIZE: usize = 8;
    const PAD: Self = 0;
    fn decode(b: &[u8]) -> Self {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        u64::from_le_bytes(a)
    }
}

/// A big-endian u32 entry (VHD BAT).
impl TableEntry for u32 {
    const SIZE: usize = 4;
    const PAD: Self = u32::MAX;
    fn decode(b: &[u8]) -> Self {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// Bytes per cached page.
const PAGE_BYTES: usize = 4096;
/// Cached bytes before the cache is dropped and refilled.
const MAX_CACHE_BYTES: usize = 64 << 20;

/// A table of `len` entries of type `E` at a file offset.
#[derive(Debug)]
pub struct Table<E: TableEntry> {
    name: &'static str,
    offset: u64,
    entries: u64,
    cache: RwLock<HashMap<u64, Arc<[E]>>>,
}

impl<E: TableEntry> Table<E> {
    /// A table of `entries` entries at file `offset`, named `name` in messages. The caller
    /// has checked that the table lies inside the file.
    pub fn new(name: &'static str, offset: u64, entries: u64) -> Self {
        Table {
            name,
            offset,
            entries,
            cache: RwLock::new(HashMap::new()),
        }
    }

    fn page_entries() -> u64 {
        (PAGE_BYTES / E::SIZE) as u64
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// File offset of the table.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// File offset of entry `index` (for messages).
    pub fn entry_offset(&self, index: u64) -> u64 {
        self.offset
            .saturating_add(index.saturating_mul(E::SIZE as u64))
    }

    /// Entry `index`.
    pub fn entry(&self, storage: &dyn Storage, index: u64) -> Result<E> {
        if index >= self.entries {
            return Err(Error::corrupt(
                self.name,
                self.offset,
                format!(
                    "entry {index} is past the table of {} entries",
                    self.entries
                ),
            ));
        }
        let at = self.entry_offset(index);
        if let Some(bytes) = storage.as_bytes() {
            let s = usize::try_from(at)
                .ok()
                .and_then(|a| bytes.get(a..a.checked_add(E::SIZE)?))
                .ok_or_else(|| Error::corrupt(self.name, at, "the file ends inside the table"))?;
            return Ok(E::decode(s));
        }
        let per = Self::page_entries();
        let page = index / per;
        if let Some(p) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&page)
        {
            return Ok(p[(index % per) as usize]);
        }
        let first = page * per;
        let n = (self.entries - first).min(per) as usize;
        let mut raw = [0u8; PAGE_BYTES];
        let poff = self.entry_offset(first);
        storage
            .read_exact_at(&mut raw[..n * E::SIZE], poff)
            .map_err(|e| Error::read_failed(self.name, poff, e))?;
        let mut vals = vec![E::PAD; per as usize];
        for (v, c) in vals
            .iter_mut()
            .zip(raw[..n * E::SIZE].chunks_exact(E::SIZE))
        {
            *v = E::decode(c);
        }
        let p: Arc<[E]> = vals.into();
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHE_BYTES / PAGE_BYTES {
            cache.clear();
        }
        cache.insert(page, p.clone());
        Ok(p[(index % per) as usize])
    }

    /// Forgets cached pages (after the table was changed on disk).
    pub fn invalidate(&self) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Forgets the cached page holding entry `index` (after that entry was changed).
    pub fn forget(&self, index: u64) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(index / Self::page_entries()));
    }

    /// Calls `f(index, entry)` for the first `count` entries (at most all of them), reading
    /// the table in 1 MiB pieces.
    pub fn for_each(
        &self,
        storage: &dyn Storage,
        count: u64,
        mut f: impl FnMut(u64, E) -> Result<()>,
    ) -> Result<()> {
        let chunk = ((1 << 20) / E::SIZE) as u64;
        let count = count.min(self.entries);
        let mut buf = vec![0u8; chunk.min(count) as usize * E::SIZE];
        let mut i = 0;
        while i < count {
            let n = (count - i).min(chunk);
            let at = self.entry_offset(i);
            let b = &mut buf[..n as usize * E::SIZE];
            storage
                .read_exact_at(b, at)
                .map_err(|e| Error::read_failed(self.name, at, e))?;
            for (k, c) in b.chunks_exact(E::SIZE).enumerate() {
                f(i + k as u64, E::decode(c))?;
            }
            i += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemStorage, MmapStorage};

    fn check<E: TableEntry + PartialEq>(s: &dyn Storage, t: &Table<E>, want: impl Fn(u64) -> E) {
        for i in [0, 1, 511, 512, 1023, 1024, 1025, t.len() - 1] {
            assert_eq!(t.entry(s, i).unwrap(), want(i), "entry {i}");
        }
        assert!(t.entry(s, t.len()).is_err());
        let mut n = 0;
        t.for_each(s, u64::MAX, |i, e| {
            assert_eq!(e, want(i));
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, t.len());
    }

    #[test]
    fn entries_on_demand_and_in_bulk() {
        let mut be = vec![0xEEu8; 100];
        let mut le = vec![0xEEu8; 100];
        for i in 0..3000u32 {
            be.extend_from_slice(&(i * 7).to_be_bytes());
            le.extend_from_slice(&(u64::from(i) << 20 | 6).to_le_bytes());
        }
        let s = MemStorage::new(be.clone());
        check(&s, &Table::<u32>::new("t", 100, 3000), |i| i as u32 * 7);
        let s = MemStorage::new(le.clone());
        check(&s, &Table::<u64>::new("t", 100, 3000), |i| i << 20 | 6);
        // In place from a memory map.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, &le).unwrap();
        let m = MmapStorage::open(&p).unwrap();
        check(&m, &Table::<u64>::new("t", 100, 3000), |i| i << 20 | 6);
    }
}
