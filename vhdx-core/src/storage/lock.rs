//! Exclusive write access to an image file, compatible with QEMU's image locking.
//!
//! QEMU (and so libvirt-managed VMs) marks the images it opens with shared open-file-
//! description (OFD) byte-range locks, one byte per permission: byte `100 + p` for each
//! permission `p` it holds, byte `200 + p` for each permission it refuses to share. Observed
//! with qemu-io 10.0.2 in `/proc/locks`: a read-write open holds bytes 100, 101, 103 (consistent
//! read, write, resize) and 201, 203 (shares neither write nor resize); a read-only open holds
//! 100, 201 and 203. A writer is therefore refused while anyone holds byte 101 (another
//! writer) or byte 201 (someone who forbids writers), and announces itself the way a
//! read-write QEMU does, so QEMU refuses to open the image while we write.
//!
//! Locks are taken first and the conflict test follows (`F_OFD_GETLK` sees only other
//! holders), so two writers racing both see each other and both back off. The locks belong
//! to the open file and go away when it is closed, also when the process is killed.
//!
//! On Linux these are OFD locks through `fcntl` (FFI, hence `unsafe`); other systems use the
//! standard library's whole-file exclusive lock, which keeps two vhdx writers apart but is
//! not seen by QEMU.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;

/// QEMU's permission bytes: consistent read, write, resize.
const PERM_READ: i64 = 100;
const PERM_WRITE: i64 = 101;
const PERM_RESIZE: i64 = 103;
/// QEMU's "not shared" bytes for write and resize.
const UNSHARED_WRITE: i64 = 201;
const UNSHARED_RESIZE: i64 = 203;
/// Every byte a writer holds, as a read-write QEMU does.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
const WRITER_BYTES: [i64; 5] = [
    PERM_READ,
    PERM_WRITE,
    PERM_RESIZE,
    UNSHARED_WRITE,
    UNSHARED_RESIZE,
];

/// Every byte a reader that forbids writers holds, as QEMU does for a backing file.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
const READER_BYTES: [i64; 3] = [PERM_READ, UNSHARED_WRITE, UNSHARED_RESIZE];

/// Why a lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process has the image open for writing, or forbids writers.
    InUse(&'static str),
    /// The lock calls themselves failed.
    Io(io::Error),
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use super::*;
    use std::os::fd::AsRawFd;

    fn flock(kind: libc::c_short, byte: i64) -> libc::flock {
        // SAFETY: `libc::flock` is a plain C struct of integers; all-zero is a valid value
        // (and OFD locks require l_pid to be 0).
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = byte as libc::off_t;
        fl.l_len = 1;
        fl
    }

    fn set(file: &File, kind: libc::c_short, byte: i64) -> io::Result<()> {
        let fl = flock(kind, byte);
        // SAFETY: `fd` is a valid descriptor owned by `file`; `fl` is a valid flock struct
        // that fcntl only reads for F_OFD_SETLK.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Whether another open file description holds a lock on `byte`.
    fn held_by_other(file: &File, byte: i64) -> io::Result<bool> {
        let mut fl = flock(libc::F_WRLCK as libc::c_short, byte);
        // SAFETY: as above; F_OFD_GETLK writes the result into `fl`, which we own.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
    }

    /// Takes read locks on `bytes`, then fails with the first conflict whose byte another
    /// open file description holds (releasing what it took).
    fn take(
        file: &File,
        bytes: &[i64],
        conflicts: &[(i64, &'static str)],
    ) -> Result<(), LockError> {
        let rd = libc::F_RDLCK as libc::c_short;
        for &b in bytes {
            set(file, rd, b).map_err(LockError::Io)?;
        }
        for &(byte, why) in conflicts {
            if held_by_other(file, byte).map_err(LockError::Io)? {
                let un = libc::F_UNLCK as libc::c_short;
                for &b in bytes {
                    let _ = set(file, un, b);
                }
                return Err(LockError::InUse(why));
            }
        }
        Ok(())
    }

    pub fn lock_for_writing(file: &File) -> Result<(), LockError> {
        take(
            file,
            &WRITER_BYTES,
            &[
                (PERM_WRITE, "another program has the image open for writing"),
                (UNSHARED_WRITE, "another program has the image open and does not allow writers (QEMU does this even when it only reads)"),
                (PERM_RESIZE, "another program may resize the image"),
            ],
        )
    }

    pub fn lock_unchanging(file: &File) -> Result<(), LockError> {
        take(
            file,
            &READER_BYTES,
            &[
                (PERM_WRITE, "another program has the image open for writing"),
                (PERM_RESIZE, "another program may resize the image"),
            ],
        )
    }

    pub fn unlock(file: &File) -> io::Result<()> {
        let un = libc::F_UNLCK as libc::c_short;
        for b in WRITER_BYTES {
            set(file, un, b)?;
        }
        Ok(())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    use super::*;

    pub fn lock_for_writing(file: &File) -> Result<(), LockError> {
        match file.try_lock() {
            Ok(()) => Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(LockError::InUse("another program has the image locked"))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(LockError::Io(e)),
        }
    }

    pub fn lock_unchanging(file: &File) -> Result<(), LockError> {
        match file.try_lock_shared() {
            Ok(()) => Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::InUse(
                "another program has the image locked for writing",
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(LockError::Io(e)),
        }
    }

    pub fn unlock(file: &File) -> io::Result<()> {
        file.unlock()
    }
}

/// Takes the write locks on `file` (opened read-write), or says why not. The locks last
/// until [`unlock`] or until the file is closed.
pub fn lock_for_writing(file: &File) -> Result<(), LockError> {
    imp::lock_for_writing(file)
}

/// Takes the locks of a reader that needs the file not to change (QEMU's locks for a
/// backing file: bytes 100, 201 and 203), so writers — QEMU or vhdx — are refused while they
/// last; fails while someone writes. `file` may be opened read-only. Released by [`unlock`]
/// or when the file is closed.
pub fn lock_unchanging(file: &File) -> Result<(), LockError> {
    imp::lock_unchanging(file)
}

/// Releases the locks of [`lock_for_writing`] or [`lock_unchanging`].
pub fn unlock(file: &File) -> io::Result<()> {
    imp::unlock(file)
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    #[test]
    fn two_writers_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, [0u8; 4096]).unwrap();
        let open = || File::options().read(true).write(true).open(&p).unwrap();
        let a = open();
        let b = open();
        lock_for_writing(&a).unwrap();
        assert!(matches!(lock_for_writing(&b), Err(LockError::InUse(_))));
        // The refused attempt left no locks behind: once `a` lets go, `b` gets in.
        unlock(&a).unwrap();
        lock_for_writing(&b).unwrap();
        drop(b);
        // Closing the file released its locks.
        lock_for_writing(&a).unwrap();
    }
}
