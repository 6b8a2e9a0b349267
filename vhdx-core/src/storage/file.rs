//! A host file read and written with positional system calls (`pread`/`pwrite` on Unix,
//! `seek_read`/`seek_write` on Windows): no shared cursor, so one handle serves any number of
//! threads.

use super::{Storage, StorageMut};
use std::fs::File;
use std::io;
use std::path::Path;

/// A file accessed only through positional I/O.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
}

impl FileStorage {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(FileStorage {
            file: File::open(path)?,
        })
    }

    /// Opens `path` for reading and writing.
    pub fn open_rw(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(FileStorage { file })
    }

    /// Wraps an already open file.
    pub fn from_file(file: File) -> Self {
        FileStorage { file }
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(unix)]
fn pread_exact(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(unix)]
fn pwrite_all(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(buf, offset)
}

#[cfg(windows)]
fn pread_exact(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(windows)]
fn pwrite_all(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads at least this large look for holes first: one `lseek` pair costs about as much as
/// copying a few KiB, and sparse image files (blocks allocated by extending the file) have
/// holes of megabytes.
const HOLE_AWARE_MIN: usize = 1 << 20;

impl FileStorage {
    /// `read_exact_at` for large reads: holes of the host file are filled with zeros without
    /// copying them out of the page cache.
    fn read_skipping_holes(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        if end > self.file.metadata()?.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut pos = offset;
        while pos < end {
            let at = |p: u64| (p - offset) as usize;
            match super::sparse::next_data(&self.file, pos)? {
                Some((s, e)) if s < end => {
                    let s = s.max(pos);
                    let e = e.min(end);
                    buf[at(pos)..at(s)].fill(0);
                    pread_exact(&self.file, &mut buf[at(s)..at(e)], s)?;
                    pos = e;
                }
                _ => {
                    buf[at(pos)..].fill(0);
                    pos = end;
                }
            }
        }
        Ok(())
    }
}

impl Storage for FileStorage {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.len() >= HOLE_AWARE_MIN {
            self.read_skipping_holes(buf, offset)
        } else {
            pread_exact(&self.file, buf, offset)
        }
    }
}

impl StorageMut for FileStorage {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        pwrite_all(&self.file, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}
