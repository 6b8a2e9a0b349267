//! A host file read and written with positional system calls (`pread`/`pwrite` on Unix,
//! `seek_read`/`seek_write` on Windows): no shared cursor, so one handle serves any number of
//! threads.

use super::faulty::{FaultOp, Faults};
use super::{Storage, StorageMut};
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// A file accessed only through positional I/O.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    /// The fault plan in force when the file was opened for writing inside
    /// [`super::faulty::inject`] (tests only; `None` otherwise).
    faults: Option<Arc<Faults>>,
}

impl FileStorage {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(FileStorage {
            file: File::open(path)?,
            faults: None,
        })
    }

    /// Opens `path` for reading and writing.
    pub fn open_rw(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(FileStorage::from_file(file))
    }

    /// Opens `path` for reading and writing and takes the write locks (see [`super::lock`]):
    /// fails with [`crate::ErrorKind::InUse`] while another writer, or a QEMU that forbids
    /// writers, has the file open. The locks last as long as the returned storage.
    pub fn open_rw_exclusive(path: &Path) -> crate::Result<Self> {
        let s = FileStorage::open_rw(path).map_err(|e| {
            crate::Error::io(e, "cannot open the file for reading and writing").in_file(path)
        })?;
        match super::lock::lock_for_writing(&s.file) {
            Ok(()) => Ok(s),
            Err(super::lock::LockError::InUse(why)) => Err(crate::Error::new(
                crate::ErrorKind::InUse,
                format!("the image is in use: {why}; close the virtual machine or program that has it open"),
            )
            .in_file(path)),
            Err(super::lock::LockError::Io(e)) => {
                Err(crate::Error::io(e, "cannot lock the file").in_file(path))
            }
        }
    }

    /// Wraps an already open file (for writing: under the fault plan of
    /// [`super::faulty::inject`], if one is in force on this thread).
    pub fn from_file(file: File) -> Self {
        FileStorage {
            file,
            faults: super::faulty::current(),
        }
    }

    /// Counts a call of kind `op` under the fault plan, failing it when the plan says so.
    fn fault(&self, op: FaultOp) -> io::Result<()> {
        match &self.faults {
            Some(f) => f.hit(op),
            None => Ok(()),
        }
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(unix)]
pub(crate) fn pread_exact(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(unix)]
fn pwrite_all(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(buf, offset)
}

#[cfg(windows)]
pub(crate) fn pread_exact(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
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

/// Reads at least this large look for holes first. Sparse image files (blocks allocated by
/// extending the file) have holes of megabytes, which are then not copied at all; the `lseek`
/// pair costs a few microseconds, 3-5 % of a 1 MiB read from the page cache (measured with
/// scripts/bench.sh) but 1-2 % from 2 MiB on, where whole blocks and export pieces are read.
const HOLE_AWARE_MIN: usize = 2 << 20;

impl FileStorage {
    /// `read_exact_at` for large reads: holes of the host file are filled with zeros without
    /// copying them out of the page cache.
    fn read_skipping_holes(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let at = |p: u64| (p - offset) as usize;
        let mut pos = offset;
        while pos < end {
            match super::sparse::next_data(&self.file, pos)? {
                Some((s, e)) if s < end => {
                    let s = s.max(pos);
                    let e = e.min(end);
                    buf[at(pos)..at(s)].fill(0);
                    // A range past the end of the file fails here, as a plain read would.
                    pread_exact(&self.file, &mut buf[at(s)..at(e)], s)?;
                    pos = e;
                }
                _ => {
                    // Only holes (or the end of the file) follow: zeros, unless the range
                    // runs past the end of the file.
                    if end > self.file.metadata()?.len() {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
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

    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        super::sparse::next_data(&self.file, offset)
    }

    fn as_file(&self) -> Option<&File> {
        Some(&self.file)
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
        self.fault(FaultOp::Write)?;
        pwrite_all(&self.file, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fault(FaultOp::SetLen)?;
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.fault(FaultOp::Sync)?;
        self.file.sync_all()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fault(FaultOp::Write)?;
        // Holes are whole host blocks: punch the aligned middle, write the edges.
        const HOST_BLOCK: u64 = 4096;
        let a = offset.div_ceil(HOST_BLOCK) * HOST_BLOCK;
        let b = (offset + len) / HOST_BLOCK * HOST_BLOCK;
        if b > a && super::sparse::punch_hole(&self.file, a, b - a)? {
            self.write_zeroes_at(offset, a - offset)?;
            return self.write_zeroes_at(b, offset + len - b);
        }
        self.write_zeroes_at(offset, len)
    }

    #[cfg(unix)]
    fn copy_within(&self, src: u64, dst: u64, len: u64) -> io::Result<()> {
        self.fault(FaultOp::Write)?;
        super::sparse::copy_keeping_holes(&self.file, src, &self.file, dst, len)
    }

    #[cfg(unix)]
    fn copy_from(&self, from: &File, src: u64, dst: u64, len: u64) -> io::Result<()> {
        self.fault(FaultOp::Write)?;
        super::sparse::copy_all(from, src, &self.file, dst, len)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn large_reads_over_holes_and_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[7u8; 8192], 3 << 20).unwrap();
        f.write_all_at(&[9u8; 100], (8 << 20) - 100).unwrap();
        drop(f);
        let s = FileStorage::open(&p).unwrap();
        let mut buf = vec![0xAAu8; 8 << 20];
        s.read_exact_at(&mut buf, 0).unwrap();
        let mut want = vec![0u8; 8 << 20];
        want[3 << 20..(3 << 20) + 8192].fill(7);
        want[(8 << 20) - 100..].fill(9);
        assert!(buf == want);
        // Unaligned start inside a hole, end inside data.
        let mut b = vec![0xAAu8; 2 << 20];
        s.read_exact_at(&mut b, (2 << 20) + 5).unwrap();
        assert!(b[..] == want[(2 << 20) + 5..(4 << 20) + 5]);
        // Past the end: an error, whatever the holes.
        let mut b = vec![0u8; 2 << 20];
        let e = s.read_exact_at(&mut b, 7 << 20).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // Extend with a trailing hole, then read past the end of the hole.
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(10 << 20)
            .unwrap();
        let e = s
            .read_exact_at(&mut vec![0u8; 4 << 20], 7 << 20)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let mut b = vec![0xAAu8; 2 << 20];
        s.read_exact_at(&mut b, 8 << 20).unwrap();
        assert!(b.iter().all(|&x| x == 0));
    }

    #[test]
    fn discard_punches_holes_and_copy_within_copies() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![5u8; 4 << 20]).unwrap();
        let s = FileStorage::open_rw(&p).unwrap();
        s.discard(1000, (2 << 20) - 1000 + 100).unwrap();
        let mut buf = vec![0u8; 4 << 20];
        s.read_exact_at(&mut buf, 0).unwrap();
        let end = (2 << 20) + 100;
        assert!(buf[..1000].iter().all(|&b| b == 5));
        assert!(buf[1000..end].iter().all(|&b| b == 0));
        assert!(buf[end..].iter().all(|&b| b == 5));
        // The aligned middle is a hole now (where the file system can punch).
        let data = crate::storage::sparse::next_data(s.file(), 4096)
            .unwrap()
            .unwrap();
        assert!(data.0 >= 2 << 20, "{data:?}");
        s.write_all_at(&[1, 2, 3], 3 << 20).unwrap();
        s.copy_within(3 << 20, 100, 5).unwrap();
        let mut b = [0u8; 5];
        s.read_exact_at(&mut b, 100).unwrap();
        assert_eq!(b, [1, 2, 3, 5, 5]);
    }
}
