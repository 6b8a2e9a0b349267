//! A read-only memory map of an image file: structures are read in place and payload reads
//! are one `memcpy` from the page cache. This is the only module with `unsafe` code.
//!
//! A map reflects the file as it was when mapped; if another process truncates the file
//! while it is mapped, touching the lost pages raises SIGBUS. Use it for images nobody else
//! is changing (the default backend is [`super::FileStorage`]).

#![allow(unsafe_code)]

use super::Storage;
use memmap2::Mmap;
use std::fs::File;
use std::io;
use std::path::Path;

/// A read-only memory map of a whole file.
#[derive(Debug)]
pub struct MmapStorage {
    map: Option<Mmap>,
}

impl MmapStorage {
    /// Maps `path` read-only.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            // Mapping an empty file fails on some platforms; an empty image is simply empty.
            return Ok(MmapStorage { map: None });
        }
        // SAFETY: the map is read-only and private to this process. The remaining hazard of
        // a file mapping, another process truncating the file underneath us, cannot be ruled
        // out by any API; the module documentation tells callers to map only files nobody
        // else changes, and the default backend uses positional reads instead.
        let map = unsafe { Mmap::map(&file)? };
        Ok(MmapStorage { map: Some(map) })
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl Storage for MmapStorage {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes().len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        super::read_from_slice(self.bytes(), buf, offset)
    }

    fn as_bytes(&self) -> Option<&[u8]> {
        Some(self.bytes())
    }
}
