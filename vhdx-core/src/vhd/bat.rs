//! Reading VHD BAT entries on demand (FORMATS.md B.7). Opening never reads the whole table:
//! entries come from the memory map in place, or from 4 KiB pages read once and cached, so
//! open time and memory do not grow with the virtual size.

use crate::error::{Error, Result};
use crate::storage::Storage;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Entries per cached page (4 KiB of table).
const PAGE_ENTRIES: u64 = 1024;
/// Pages kept before the cache is dropped and refilled (16 MiB of BAT, more than any VHD has).
const MAX_PAGES: usize = 4096;

type Page = Arc<[u32; PAGE_ENTRIES as usize]>;

/// Where the BAT is and how to read it.
#[derive(Debug)]
pub struct BatReader {
    offset: u64,
    entries: u64,
    cache: RwLock<HashMap<u64, Page>>,
}

impl BatReader {
    /// A reader for `entries` entries at file `offset`; the caller has checked that
    /// `offset + 4 × entries` lies inside the file.
    pub fn new(offset: u64, entries: u64) -> Self {
        BatReader {
            offset,
            entries,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Number of entries (MaxTableEntries).
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
        self.offset.saturating_add(index.saturating_mul(4))
    }

    /// Entry `index`: the sector number of the block's bitmap, or 0xFFFFFFFF.
    pub fn entry(&self, storage: &dyn Storage, index: u64) -> Result<u32> {
        if index >= self.entries {
            return Err(Error::corrupt(
                "VHD BAT",
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
                .and_then(|a| bytes.get(a..a.checked_add(4)?))
                .ok_or_else(|| Error::corrupt("VHD BAT", at, "the file ends inside the BAT"))?;
            let mut b = [0u8; 4];
            b.copy_from_slice(s);
            return Ok(u32::from_be_bytes(b));
        }
        let page = index / PAGE_ENTRIES;
        if let Some(p) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&page)
        {
            return Ok(p[(index % PAGE_ENTRIES) as usize]);
        }
        let first = page * PAGE_ENTRIES;
        let n = (self.entries - first).min(PAGE_ENTRIES) as usize;
        let mut raw = [0u8; (PAGE_ENTRIES * 4) as usize];
        let poff = self.entry_offset(first);
        storage
            .read_exact_at(&mut raw[..n * 4], poff)
            .map_err(|e| Error::read_failed("VHD BAT", poff, e))?;
        let mut vals = [u32::MAX; PAGE_ENTRIES as usize];
        for (v, c) in vals.iter_mut().zip(raw[..n * 4].chunks_exact(4)) {
            *v = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        let p: Page = Arc::new(vals);
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_PAGES {
            cache.clear();
        }
        cache.insert(page, p.clone());
        Ok(p[(index % PAGE_ENTRIES) as usize])
    }

    /// Forgets cached pages (after the BAT was changed on disk).
    pub fn invalidate(&self) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Calls `f(index, entry)` for the first `count` entries (at most all of them), reading the
    /// table in large sequential pieces.
    pub fn for_each(
        &self,
        storage: &dyn Storage,
        count: u64,
        mut f: impl FnMut(u64, u32) -> Result<()>,
    ) -> Result<()> {
        const CHUNK: u64 = 256 * 1024; // entries per read (1 MiB)
        let count = count.min(self.entries);
        let mut buf = vec![0u8; (CHUNK.min(count) * 4) as usize];
        let mut i = 0;
        while i < count {
            let n = (count - i).min(CHUNK);
            let at = self.entry_offset(i);
            let b = &mut buf[..(n * 4) as usize];
            storage
                .read_exact_at(b, at)
                .map_err(|e| Error::read_failed("VHD BAT", at, e))?;
            for (k, c) in b.chunks_exact(4).enumerate() {
                f(i + k as u64, u32::from_be_bytes([c[0], c[1], c[2], c[3]]))?;
            }
            i += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn entries_on_demand_and_in_bulk() {
        let mut bytes = vec![0xEEu8; 100];
        for i in 0..3000u32 {
            bytes.extend_from_slice(&(i * 7).to_be_bytes());
        }
        let s = MemStorage::new(bytes);
        let bat = BatReader::new(100, 3000);
        assert_eq!(bat.entry(&s, 0).unwrap(), 0);
        assert_eq!(bat.entry(&s, 1025).unwrap(), 1025 * 7);
        assert_eq!(bat.entry(&s, 2999).unwrap(), 2999 * 7);
        assert!(bat.entry(&s, 3000).is_err());
        let mut n = 0;
        bat.for_each(&s, 5000, |i, e| {
            assert_eq!(e, i as u32 * 7);
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3000);
    }
}
