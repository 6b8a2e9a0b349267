//! Reading BAT entries on demand. Opening never reads the whole table: entries come from the
//! memory map in place, or from 4 KiB pages read once and cached, so open time and memory do
//! not grow with the virtual size.

use crate::error::{Error, Result};
use crate::storage::Storage;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Entries per cached page.
const PAGE_ENTRIES: u64 = 512;
/// Pages kept before the cache is dropped and refilled (64 MiB of BAT).
const MAX_PAGES: usize = 16 * 1024;

type Page = Arc<[u64; PAGE_ENTRIES as usize]>;

/// Where the BAT is and how to read it.
#[derive(Debug)]
pub struct BatReader {
    offset: u64,
    entries: u64,
    cache: RwLock<HashMap<u64, Page>>,
}

impl BatReader {
    /// A reader for `entries` entries at file `offset` (already checked to lie in the file).
    pub fn new(offset: u64, entries: u64) -> Self {
        BatReader {
            offset,
            entries,
            cache: RwLock::new(HashMap::new()),
        }
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

    /// Entry `index`.
    pub fn entry(&self, storage: &dyn Storage, index: u64) -> Result<u64> {
        if index >= self.entries {
            return Err(Error::corrupt(
                "VHDX BAT",
                self.offset,
                format!(
                    "entry {index} is past the table of {} entries",
                    self.entries
                ),
            ));
        }
        let at = self.offset + index * 8;
        if let Some(bytes) = storage.as_bytes() {
            let s = bytes
                .get(at as usize..at as usize + 8)
                .ok_or_else(|| Error::corrupt("VHDX BAT", at, "the file ends inside the BAT"))?;
            let mut b = [0u8; 8];
            b.copy_from_slice(s);
            return Ok(u64::from_le_bytes(b));
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
        let n = (self.entries - first).min(PAGE_ENTRIES);
        let mut raw = [0u8; (PAGE_ENTRIES * 8) as usize];
        let poff = self.offset + first * 8;
        storage
            .read_exact_at(&mut raw[..(n * 8) as usize], poff)
            .map_err(|e| Error::read_failed("VHDX BAT", poff, e))?;
        let mut vals = [0u64; PAGE_ENTRIES as usize];
        for (v, c) in vals.iter_mut().zip(raw.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            *v = u64::from_le_bytes(b);
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

    /// Calls `f(index, entry)` for every entry, reading the table in large sequential pieces.
    pub fn for_each(
        &self,
        storage: &dyn Storage,
        mut f: impl FnMut(u64, u64) -> Result<()>,
    ) -> Result<()> {
        const CHUNK: u64 = 128 * 1024; // entries per read (1 MiB)
        let mut buf = vec![0u8; (CHUNK.min(self.entries) * 8) as usize];
        let mut i = 0;
        while i < self.entries {
            let n = (self.entries - i).min(CHUNK);
            let at = self.offset + i * 8;
            let b = &mut buf[..(n * 8) as usize];
            storage
                .read_exact_at(b, at)
                .map_err(|e| Error::read_failed("VHDX BAT", at, e))?;
            for (k, c) in b.chunks_exact(8).enumerate() {
                let mut e = [0u8; 8];
                e.copy_from_slice(c);
                f(i + k as u64, u64::from_le_bytes(e))?;
            }
            i += n;
        }
        Ok(())
    }
}
