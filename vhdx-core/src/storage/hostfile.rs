//! What the host says about an image file beyond its bytes: the file system it lives on
//! (`fstatfs` magic), its inode flags (`FS_IOC_GETFLAGS`: compressed, encrypted) and how much
//! of it is holes. `odx-check` reports these, since offloaded copies (ODX) refuse sparse,
//! compressed and encrypted files.
//!
//! `fstatfs` and `ioctl` have no safe wrapper in the standard library, so this module calls
//! them through FFI (hence `unsafe`, each call with its `SAFETY` note). On other systems the
//! answers are "unknown" (`None`).

#![allow(unsafe_code)]

use std::fs::File;
use std::io;

/// Inode flag: the file is compressed by the file system (`FS_COMPR_FL`).
pub const FS_COMPR_FL: u32 = 0x0000_0004;
/// Inode flag: the file is encrypted by the file system, fscrypt (`FS_ENCRYPT_FL`).
pub const FS_ENCRYPT_FL: u32 = 0x0000_0800;

/// The file system type of a host file: its `statfs` magic and a name for the known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFs {
    /// `f_type` of `statfs`.
    pub magic: u64,
    /// A name (`ext4`, `xfs`, `btrfs`, `ntfs`, …), `None` for an unknown magic.
    pub name: Option<&'static str>,
}

/// Names of common `statfs` magics (linux/magic.h and the file systems' sources).
pub fn fs_name(magic: u64) -> Option<&'static str> {
    Some(match magic {
        0xEF53 => "ext2/ext3/ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0xFF53_4D42 => "cifs",
        0xFE53_4D42 => "smb2",
        0x5346_544E => "ntfs (ntfs-3g/ntfs)",
        0x7366_746E => "ntfs3",
        0x6573_5546 => "fuse",
        0x794C_7630 => "overlayfs",
        0x4D44 => "vfat",
        0x2011_BAB0 => "exfat",
        0xF2F5_2010 => "f2fs",
        0x0000_9FA0 => "proc",
        0x6462_6720 => "debugfs",
        0x5265_4973 => "reiserfs",
        0x3153_464A => "jfs",
        0xCA45_1A4E => "bcachefs",
        0x0BAD_1DEA => "9p",
        _ => return None,
    })
}

/// The file system `file` lives on; `Ok(None)` where the platform cannot tell.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn host_fs(file: &File) -> io::Result<Option<HostFs>> {
    use std::os::fd::AsRawFd;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: the descriptor is open for the duration of the call and `st` points to a
    // writable `statfs` the kernel fills; it is read only after the call succeeded.
    let r = unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatfs succeeded, so the struct is initialised (and it was zeroed anyway).
    let st = unsafe { st.assume_init() };
    // f_type is a signed word on some targets; the magics are 32-bit values.
    let magic = u64::from(st.f_type as u32);
    Ok(Some(HostFs {
        magic,
        name: fs_name(magic),
    }))
}

/// The file system type is not available here.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn host_fs(_file: &File) -> io::Result<Option<HostFs>> {
    Ok(None)
}

/// The inode flags of `file` (`FS_IOC_GETFLAGS`); `Ok(None)` when the file system keeps
/// none (tmpfs, NFS, …) or the platform has no such call.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn inode_flags(file: &File) -> io::Result<Option<u32>> {
    use std::os::fd::AsRawFd;
    let mut flags: libc::c_int = 0;
    // SAFETY: the descriptor is open for the duration of the call; FS_IOC_GETFLAGS writes
    // one `int` (whatever the request number's size field says) to the pointer, which
    // points to a live local of that type.
    let r = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::FS_IOC_GETFLAGS,
            &mut flags as *mut libc::c_int,
        )
    };
    if r == 0 {
        return Ok(Some(flags as u32));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOTTY) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
            Ok(None)
        }
        _ => Err(e),
    }
}

/// Inode flags are not available here.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn inode_flags(_file: &File) -> io::Result<Option<u32>> {
    Ok(None)
}

/// How much of a host file is holes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holes {
    /// File length.
    pub length: u64,
    /// Bytes inside the length that `SEEK_DATA`/`SEEK_HOLE` report as holes.
    pub hole_bytes: u64,
    /// Bytes the file system has allocated to the file (`st_blocks` × 512), when known.
    pub allocated_bytes: Option<u64>,
}

impl Holes {
    /// Whether the file is sparse: it has holes and the file system allocated less than its
    /// length. (Preallocated but unwritten ranges show as holes to `SEEK_HOLE` on some file
    /// systems; the allocation count keeps those from counting.)
    pub fn is_sparse(&self) -> bool {
        self.hole_bytes > 0 && self.allocated_bytes.is_none_or(|a| a < self.length)
    }
}

/// Measures the holes of `file`.
pub fn holes(file: &File) -> io::Result<Holes> {
    let meta = file.metadata()?;
    let length = meta.len();
    #[cfg(unix)]
    let allocated_bytes = {
        use std::os::unix::fs::MetadataExt;
        Some(meta.blocks().saturating_mul(512))
    };
    #[cfg(not(unix))]
    let allocated_bytes = None;
    let mut data = 0u64;
    let mut pos = 0u64;
    while pos < length {
        let Some((s, e)) = super::sparse::next_data(file, pos)? else {
            break;
        };
        if s >= length {
            break;
        }
        let e = e.min(length);
        data += e.saturating_sub(s.max(pos));
        if e <= pos {
            break;
        }
        pos = e;
    }
    Ok(Holes {
        length,
        hole_bytes: length - data.min(length),
        allocated_bytes,
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_flags_and_fs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = File::create(&p).unwrap();
        f.write_all_at(&[1u8; 8192], 0).unwrap();
        f.sync_all().unwrap();
        let h = holes(&f).unwrap();
        assert_eq!((h.length, h.hole_bytes), (8192, 0));
        assert!(!h.is_sparse());
        f.set_len(64 << 20).unwrap();
        f.sync_all().unwrap();
        let h = holes(&f).unwrap();
        if super::super::sparse::next_data(&f, 0).unwrap() != Some((0, u64::MAX)) {
            assert!(h.hole_bytes >= (64 << 20) - 65536, "{h:?}");
            assert!(h.is_sparse());
        }
        let fs = host_fs(&f).unwrap().unwrap();
        assert_ne!(fs.magic, 0);
        let flags = inode_flags(&f).unwrap();
        if let Some(flags) = flags {
            assert_eq!(flags & (FS_COMPR_FL | FS_ENCRYPT_FL), 0);
        }
        if fs.magic == 0xEF53 {
            // ext4 keeps inode flags, and a new file uses extents (FS_EXTENT_FL): proof
            // that the ioctl's answer is read, not invented.
            assert_eq!(fs.name, Some("ext2/ext3/ext4"));
            assert_ne!(flags.unwrap() & 0x0008_0000, 0, "{flags:?}");
        }
    }
}
