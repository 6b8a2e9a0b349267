//! Positional I/O backends. Every byte the library reads or writes goes through [`Storage`]
//! (and [`StorageMut`] for writes), so parsers never seek and never care whether the bytes
//! come from a file, a memory map, a buffer in memory or an overlay holding a replayed log.
//!
//! Only the memory-map backend ([`MmapStorage`]), the `lseek` calls of [`sparse`], the
//! `fcntl` locks of [`lock`] and the `fstatfs`/`ioctl` queries of [`hostfile`] contain
//! `unsafe` code.

pub mod faulty;
mod file;
pub mod hostfile;
mod journal;
pub mod lock;
mod memory;
mod mmap;
mod overlay;
pub mod sparse;
pub mod table;

pub(crate) use file::pread_exact;
pub use file::FileStorage;
pub use journal::Journal;
pub use memory::MemStorage;
pub use mmap::MmapStorage;
pub use overlay::Overlay;

use std::fmt::Debug;
use std::io;

/// Read-only positional access to the bytes of one image file.
pub trait Storage: Send + Sync + Debug {
    /// Current length of the file in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fills `buf` from `offset`. Fails with `UnexpectedEof` if the range passes the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// The whole file as one slice, when the backend holds it in memory (a memory map or a
    /// buffer). Parsers use it to read structures in place without copying.
    fn as_bytes(&self) -> Option<&[u8]> {
        None
    }

    /// The host file this storage reads, when its bytes are the file's bytes as they are
    /// (no overlay, no copy in memory): copies of large ranges may then run in the kernel
    /// ([`StorageMut::copy_from`]) instead of through a buffer. `None` by default.
    fn as_file(&self) -> Option<&std::fs::File> {
        None
    }

    /// The first range of stored data at or after `offset` as `(start, end)`, or `None`
    /// when only holes follow (sparse host files). Backends that cannot tell report
    /// everything from `offset` on as data.
    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        Ok(Some((offset, u64::MAX)))
    }

    /// Fills `buf` from `offset`, treating bytes past the end of the file as zeros. Used for
    /// payload reads of a tolerated short last block. The common case (the whole range is in
    /// the file) costs one read and no length query.
    fn read_at_zero_tail(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self.read_exact_at(buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            other => return other,
        }
        let len = self.len()?;
        let avail = len.saturating_sub(offset).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(avail);
        if !head.is_empty() {
            self.read_exact_at(head, offset)?;
        }
        tail.fill(0);
        Ok(())
    }
}

/// Positional write access, for the read-write paths (log replay onto the file, and every
/// write operation built later).
pub trait StorageMut: Storage {
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Sets the file length (truncating or extending with zeros).
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes every write so far durable (fsync / FlushFileBuffers).
    fn sync(&self) -> io::Result<()>;

    /// Makes `[offset, offset + len)` read as zeros and, where the host can, use no space
    /// (a hole). The default writes zeros.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes_at(offset, len)
    }

    /// Copies `len` bytes from `src` to `dst` within the file (the ranges do not overlap).
    /// The default copies through memory in 8 MiB pieces; the file backend copies in the
    /// kernel.
    fn copy_within(&self, src: u64, dst: u64, len: u64) -> io::Result<()> {
        let mut buf = vec![0u8; len.min(8 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            self.read_exact_at(&mut buf[..n], src + done)?;
            self.write_all_at(&buf[..n], dst + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Writes the `len` bytes at `src` of the host file `from` at `dst` (extending the file
    /// if needed). The default copies through memory in 8 MiB pieces; the file backend copies
    /// in the kernel (`copy_file_range`), so the bytes never pass through user space. The
    /// source range must lie inside `from` (`UnexpectedEof` otherwise).
    fn copy_from(&self, from: &std::fs::File, src: u64, dst: u64, len: u64) -> io::Result<()> {
        let mut buf = vec![0u8; len.min(8 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            pread_exact(from, &mut buf[..n], src + done)?;
            self.write_all_at(&buf[..n], dst + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Writes `len` zero bytes at `offset`. Backends override it with a cheaper primitive.
    fn write_zeroes_at(&self, offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: usize = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            self.write_all_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Copies `buf.len()` bytes at `offset` out of an in-memory image (`UnexpectedEof` when the
/// range passes its end): the read of the memory and memory-map backends.
pub(crate) fn read_from_slice(data: &[u8], buf: &mut [u8], offset: u64) -> io::Result<()> {
    let start =
        usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
    let end = start
        .checked_add(buf.len())
        .filter(|&e| e <= data.len())
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
    buf.copy_from_slice(&data[start..end]);
    Ok(())
}

/// Reads `len` bytes at `offset` into a new buffer, naming `structure` in the error. Callers
/// bound `len` (by a format limit or the file length) before calling.
pub fn read_bytes(
    storage: &dyn Storage,
    offset: u64,
    len: usize,
    structure: &'static str,
) -> crate::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    storage
        .read_exact_at(&mut buf, offset)
        .map_err(|e| crate::Error::read_failed(structure, offset, e))?;
    Ok(buf)
}

/// Reads a fixed-size on-disk structure at `offset`.
pub fn read_struct<T>(
    storage: &dyn Storage,
    offset: u64,
    structure: &'static str,
) -> crate::Result<T>
where
    T: zerocopy::FromBytes
        + zerocopy::IntoBytes
        + zerocopy::KnownLayout
        + zerocopy::Immutable
        + Sized,
{
    let mut v = T::new_zeroed();
    storage
        .read_exact_at(zerocopy::IntoBytes::as_mut_bytes(&mut v), offset)
        .map_err(|e| crate::Error::read_failed(structure, offset, e))?;
    Ok(v)
}
