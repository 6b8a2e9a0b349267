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

/// Copies `len` bytes of `file` from `src` to `dst` inside the kernel
/// (`copy_file_range`, which also shares extents on file systems that can); returns the
/// bytes copied, which may be fewer (the caller continues) or 0 when the call is not
/// supported here (the caller copies itself). The ranges must not overlap.
#[cfg(target_os = "linux")]
pub fn copy_range(file: &File, src: u64, dst: u64, len: u64) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let (Ok(mut s), Ok(mut d)) = (libc::loff_t::try_from(src), libc::loff_t::try_from(dst)) else {
        return Ok(0);
    };
    let fd = file.as_raw_fd();
    let n = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30);
    // SAFETY: `fd` is open for reading and writing for the duration of the call; the two
    // offsets are locals that the kernel updates; no buffer of ours is involved.
    let r = unsafe { libc::copy_file_range(fd, &mut s, fd, &mut d, n, 0) };
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
pub fn copy_range(_file: &File, _src: u64, _dst: u64, _len: u64) -> std::io::Result<u64> {
    Ok(0)
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
