//! Fault injection, for tests of what an operation leaves behind when the host fails it: a
//! plan ([`Faults`]) that fails the Nth write, flush or length change with `EIO` or
//! `ENOSPC`, applied either by wrapping any storage ([`FaultyStorage`]) or — for the
//! operations that open their files themselves (create, write, trim, compact, merge,
//! convert, resize) — by running the operation inside [`inject`]: every file the calling
//! thread opens for writing within the closure (through [`FileStorage`]) obeys the plan.
//!
//! Outside [`inject`] nothing changes; inside, only files opened for writing by the calling
//! thread during the closure are affected, so the hook cannot leak into other work.
//!
//! What counts as a [`FaultOp::Write`]: every `write_all_at` (and so the default
//! `write_zeroes_at` piece by piece), `discard`, `copy_within` and `copy_from` call.
//! [`FaultOp::Sync`] is `sync`, [`FaultOp::SetLen`] is `set_len`. Host calls made on the
//! raw file handle outside [`StorageMut`] (preallocation with `fallocate`, the directory
//! flush after a rename) are not counted.
//!
//! ```
//! use std::sync::Arc;
//! use vhdx_core::storage::faulty::{FaultErrno, FaultOp, Faults, FaultyStorage};
//! use vhdx_core::storage::{MemStorage, StorageMut};
//! let faults = Faults::fail_nth(FaultOp::Write, 2, FaultErrno::Enospc);
//! let s = FaultyStorage::new(MemStorage::new(vec![0; 16]), faults.clone());
//! s.write_all_at(b"ok", 0).unwrap();
//! let e = s.write_all_at(b"no", 2).unwrap_err();
//! assert_eq!(e.raw_os_error(), Some(28)); // ENOSPC
//! assert!(faults.fired());
//! ```
//!
//! [`FileStorage`]: super::FileStorage

use super::{Storage, StorageMut};
use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The kinds of storage calls a plan counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// Writes (`write_all_at`, `discard`, `copy_within`, `copy_from`).
    Write,
    /// Flushes (`sync`: fsync).
    Sync,
    /// Length changes (`set_len`: truncate or extend).
    SetLen,
}

impl FaultOp {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultOp; 3] = [FaultOp::Write, FaultOp::Sync, FaultOp::SetLen];

    fn index(self) -> usize {
        match self {
            FaultOp::Write => 0,
            FaultOp::Sync => 1,
            FaultOp::SetLen => 2,
        }
    }
}

/// The error a failing call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultErrno {
    /// `EIO`: the device failed.
    Eio,
    /// `ENOSPC`: the file system is full.
    Enospc,
}

impl FaultErrno {
    /// The error as the host would report it.
    pub fn to_io_error(self) -> io::Error {
        let code = match self {
            FaultErrno::Eio => 5,
            FaultErrno::Enospc => 28,
        };
        if cfg!(unix) {
            io::Error::from_raw_os_error(code)
        } else {
            match self {
                FaultErrno::Eio => io::Error::other("injected I/O error"),
                FaultErrno::Enospc => io::Error::from(io::ErrorKind::StorageFull),
            }
        }
    }
}

/// A fault plan: counts the calls of each [`FaultOp`] and fails the chosen one. Shared
/// (`Arc`) by every storage that obeys it, so the count runs across all the files of an
/// operation.
#[derive(Debug)]
pub struct Faults {
    target: Option<(FaultOp, u64, FaultErrno, bool)>,
    counts: [AtomicU64; 3],
    fired: AtomicBool,
}

impl Faults {
    /// A plan that fails nothing and only counts (to learn how many failure points an
    /// operation has).
    pub fn count_only() -> Arc<Faults> {
        Arc::new(Faults {
            target: None,
            counts: Default::default(),
            fired: AtomicBool::new(false),
        })
    }

    /// A plan that fails the `n`th call (1-based) of kind `op` with `errno`; the calls
    /// before and after it succeed (a transient error).
    pub fn fail_nth(op: FaultOp, n: u64, errno: FaultErrno) -> Arc<Faults> {
        Arc::new(Faults {
            target: Some((op, n, errno, false)),
            counts: Default::default(),
            fired: AtomicBool::new(false),
        })
    }

    /// A plan that fails the `n`th call of kind `op` and every later one (a full disk, a
    /// device that is gone).
    pub fn fail_from(op: FaultOp, n: u64, errno: FaultErrno) -> Arc<Faults> {
        Arc::new(Faults {
            target: Some((op, n, errno, true)),
            counts: Default::default(),
            fired: AtomicBool::new(false),
        })
    }

    /// Calls of kind `op` seen so far (failed ones included).
    pub fn count(&self, op: FaultOp) -> u64 {
        self.counts[op.index()].load(Ordering::SeqCst)
    }

    /// Whether the plan has failed a call.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Counts one call of kind `op` and fails it when the plan says so.
    pub fn hit(&self, op: FaultOp) -> io::Result<()> {
        let n = self.counts[op.index()].fetch_add(1, Ordering::SeqCst) + 1;
        match self.target {
            Some((o, at, errno, sticky)) if o == op && (n == at || sticky && n > at) => {
                self.fired.store(true, Ordering::SeqCst);
                Err(errno.to_io_error())
            }
            _ => Ok(()),
        }
    }
}

thread_local! {
    static INJECTED: RefCell<Option<Arc<Faults>>> = const { RefCell::new(None) };
}

/// Runs `f` with `faults` applied to every file the calling thread opens for writing through
/// [`FileStorage`](super::FileStorage) during `f` (the plan in force before is restored
/// afterwards, also when `f` panics).
pub fn inject<R>(faults: &Arc<Faults>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<Faults>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let old = self.0.take();
            INJECTED.with(|c| *c.borrow_mut() = old);
        }
    }
    let old = INJECTED.with(|c| c.borrow_mut().replace(faults.clone()));
    let _restore = Restore(old);
    f()
}

/// The plan in force on this thread, if any (read when a file is opened for writing).
pub(crate) fn current() -> Option<Arc<Faults>> {
    INJECTED.with(|c| c.borrow().clone())
}

/// Any writable storage, with its writes, flushes and length changes counted and failed as
/// `faults` says. Reads pass through.
#[derive(Debug)]
pub struct FaultyStorage<S> {
    inner: S,
    faults: Arc<Faults>,
}

impl<S: StorageMut> FaultyStorage<S> {
    /// Wraps `inner` under the plan `faults`.
    pub fn new(inner: S, faults: Arc<Faults>) -> Self {
        FaultyStorage { inner, faults }
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: StorageMut> Storage for FaultyStorage<S> {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn as_bytes(&self) -> Option<&[u8]> {
        self.inner.as_bytes()
    }
    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        self.inner.next_data(offset)
    }
}

impl<S: StorageMut> StorageMut for FaultyStorage<S> {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.faults.hit(FaultOp::Write)?;
        self.inner.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.hit(FaultOp::SetLen)?;
        self.inner.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        self.faults.hit(FaultOp::Sync)?;
        self.inner.sync()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.faults.hit(FaultOp::Write)?;
        self.inner.discard(offset, len)
    }
    fn copy_within(&self, src: u64, dst: u64, len: u64) -> io::Result<()> {
        self.faults.hit(FaultOp::Write)?;
        self.inner.copy_within(src, dst, len)
    }
    fn copy_from(&self, from: &std::fs::File, src: u64, dst: u64, len: u64) -> io::Result<()> {
        self.faults.hit(FaultOp::Write)?;
        self.inner.copy_from(from, src, dst, len)
    }
    fn write_zeroes_at(&self, offset: u64, len: u64) -> io::Result<()> {
        self.faults.hit(FaultOp::Write)?;
        self.inner.write_zeroes_at(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn nth_and_sticky() {
        let f = Faults::fail_nth(FaultOp::Sync, 2, FaultErrno::Eio);
        let s = FaultyStorage::new(MemStorage::new(vec![0; 8]), f.clone());
        s.sync().unwrap();
        assert_eq!(s.sync().unwrap_err().raw_os_error(), Some(5));
        s.sync().unwrap();
        s.set_len(4).unwrap();
        assert_eq!((f.count(FaultOp::Sync), f.count(FaultOp::SetLen)), (3, 1));
        let f = Faults::fail_from(FaultOp::SetLen, 1, FaultErrno::Enospc);
        let s = FaultyStorage::new(MemStorage::new(vec![0; 8]), f);
        assert!(s.set_len(1).is_err() && s.set_len(2).is_err());
        assert_eq!(s.inner().len().unwrap(), 8);
    }

    #[test]
    fn inject_is_scoped() {
        let f = Faults::count_only();
        assert!(current().is_none());
        inject(&f, || {
            assert!(current().is_some());
            let inner = Faults::count_only();
            inject(&inner, || assert!(Arc::ptr_eq(&current().unwrap(), &inner)));
            assert!(Arc::ptr_eq(&current().unwrap(), &f));
        });
        assert!(current().is_none());
        let r = std::panic::catch_unwind(|| inject(&f, || panic!("boom")));
        assert!(r.is_err() && current().is_none());
    }
}
