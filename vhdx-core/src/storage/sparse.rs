//! Where a host file holds data and where it has holes (`lseek` with `SEEK_DATA` /
//! `SEEK_HOLE`), and preallocation (`fallocate`). Large reads skip holes instead of copying zero pages out of the page cache;
//! later layers use the same calls to tell whether an image file is sparse.
//!
//! The Rust standard library has no `SEEK_DATA`/`SEEK_HOLE`, so this module calls `lseek`
//! through FFI; it and the memory-map backend are the only places with `unsafe` code.
//! On systems without these calls every byte counts as data, which is always correct.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;

/// A data region of a file: `[start, end)`.
pub type Extent = (u64, u64);

/// The first data region at or after `offset`, or `None` when only a hole (or the end of
/// the file) follows. The end of a region is where the next hole starts (the end of the
/// file counts as a hole).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub fn next_data(file: &File, offset: u64) -> io::Result<Option<Extent>> {
    use std::os::fd::AsRawFd;
    let Ok(off) = libc::off_t::try_from(offset) else {
        return Ok(None);
    };
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is a valid descriptor owned by `file` for the duration of the call;
    // lseek takes plain integers and touches no memory of ours. It moves the descriptor's
    // cursor, which nothing in this crate uses (all I/O is positional).
    let start = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
    if start < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            // A file system without SEEK_DATA: everything is data.
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some((offset, u64::MAX))),
            _ => Err(e),
        };
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
    if end < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some((start as u64, end as u64)))
}

/// On systems without `SEEK_DATA`, every byte is data.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub fn next_data(_file: &File, offset: u64) -> io::Result<Option<Extent>> {
    Ok(Some((offset, u64::MAX)))
}

/// Allocates the first `len` bytes of `file` on the host (`fallocate(fd, 0, 0, len)`), so a
/// preallocated disk cannot run out of space later; `Ok(false)` when the file system does
/// not support it.
#[cfg(target_os = "linux")]
pub fn allocate(file: &File, len: u64) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(len) else {
        return Ok(false);
    };
    // SAFETY: the descriptor is open for writing for the duration of the call, and
    // fallocate only takes integers.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(e),
    }
}

/// Deallocates `[offset, offset + len)` of `file` on the host, keeping its size
/// (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): the range reads as zeros and uses no space.
/// `Ok(false)` when the file system cannot punch holes.
#[cfg(target_os = "linux")]
pub fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Ok(false);
    };
    // SAFETY: the descriptor is open for writing for the duration of the call, and
    // fallocate only takes integers.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(e),
    }
}

/// Hole punching is not available here.
#[cfg(not(target_os = "linux"))]
pub fn punch_hole(_file: &File, _offset: u64, _len: u64) -> std::io::Result<bool> {
    Ok(false)
}

/// Copies `len` bytes from `src` in `from` to `dst` in `to` inside the kernel
/// (`copy_file_range`, which also shares extents on file systems that can); returns the
/// bytes copied, which may be fewer (the caller continues) or 0 when the call is not
/// supported here (the caller copies itself). Within one file the ranges must not overlap.
#[cfg(target_os = "linux")]
pub fn copy_range(from: &File, src: u64, to: &File, dst: u64, len: u64) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let (Ok(mut s), Ok(mut d)) = (libc::loff_t::try_from(src), libc::loff_t::try_from(dst)) else {
        return Ok(0);
    };
    let n = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30);
    // SAFETY: both descriptors are open (for reading and for writing) for the duration of
    // the call; the two offsets are locals that the kernel updates; no buffer of ours is
    // involved.
    let r =
        unsafe { libc::copy_file_range(from.as_raw_fd(), &mut s, to.as_raw_fd(), &mut d, n, 0) };
    if r >= 0 {
        return Ok(r as u64);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EXDEV) | Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            Ok(0)
        }
        _ => Err(e),
    }
}

/// In-kernel copies are not available here.
#[cfg(not(target_os = "linux"))]
pub fn copy_range(
    _from: &File,
    _src: u64,
    _to: &File,
    _dst: u64,
    _len: u64,
) -> std::io::Result<u64> {
    Ok(0)
}

/// Copies all `len` bytes from `src` in `from` to `dst` in `to`: in the kernel
/// ([`copy_range`]) as far as it goes, the rest through memory in 8 MiB pieces. The source
/// range must lie inside `from` (a read past its end fails with `UnexpectedEof`).
#[cfg(unix)]
pub fn copy_all(from: &File, src: u64, to: &File, dst: u64, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < len {
        let n = copy_range(from, src + done, to, dst + done, len - done)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    if done < len {
        // Not supported here, or the source ended early: through memory (which reports a
        // short source as `UnexpectedEof`).
        let mut buf = vec![0u8; (len - done).min(8 << 20) as usize];
        while done < len {
            let k = (len - done).min(buf.len() as u64) as usize;
            from.read_exact_at(&mut buf[..k], src + done)?;
            to.write_all_at(&buf[..k], dst + done)?;
            done += k as u64;
        }
    }
    Ok(())
}

/// Copies `[src, src + len)` of `from` to `dst` in `to` keeping holes: data ranges are
/// copied (in the kernel where it can), holes of the source become holes (or zeros) at the
/// destination, so a copy never takes more host space than its source.
pub fn copy_keeping_holes(
    from: &File,
    src: u64,
    to: &File,
    dst: u64,
    len: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let end = src + len;
    let mut pos = src;
    let hole = |at: u64, n: u64| -> std::io::Result<()> {
        if n > 0 && !punch_hole(to, at, n)? {
            let zeros = vec![0u8; n.min(1 << 20) as usize];
            let mut done = 0;
            while done < n {
                let k = (n - done).min(zeros.len() as u64) as usize;
                to.write_all_at(&zeros[..k], at + done)?;
                done += k as u64;
            }
        }
        Ok(())
    };
    while pos < end {
        let Some((s, e)) = next_data(from, pos)?.filter(|&(s, _)| s < end) else {
            return hole(dst + (pos - src), end - pos);
        };
        let s = s.max(pos);
        let e = e.min(end);
        hole(dst + (pos - src), s - pos)?;
        copy_all(from, s, to, dst + (s - src), e - s)?;
        pos = e;
    }
    Ok(())
}

/// Copies `[src, src + len)` of `from` to `dst` in `to` through memory (no holes are
/// known here).
#[cfg(not(unix))]
pub fn copy_keeping_holes(
    from: &File,
    src: u64,
    to: &File,
    dst: u64,
    len: u64,
) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let (mut r, mut w) = (from.try_clone()?, to.try_clone()?);
    r.seek(SeekFrom::Start(src))?;
    w.seek(SeekFrom::Start(dst))?;
    std::io::copy(&mut r.take(len), &mut w)?;
    w.flush()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn finds_data_between_holes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let f = File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[1u8; 4096], 16 << 20).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&p).unwrap();
        let (s, e) = next_data(&f, 0).unwrap().unwrap();
        // File systems may report data at a coarser granularity, never finer.
        assert!(s <= 16 << 20 && e >= (16 << 20) + 4096, "{s} {e}");
        if s > 0 {
            // Holes are supported here: nothing after the data region.
            assert!(next_data(&f, e).unwrap().is_none_or(|(s2, _)| s2 >= e));
        }
        assert_eq!(next_data(&f, 64 << 20).unwrap(), None);
    }
}
