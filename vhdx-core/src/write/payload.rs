//! Where the bytes of a write come from: a buffer in memory, or a range of another host
//! file, which the file backend copies in the kernel (`copy_file_range`) so that bulk copies
//! (conversions) never pass their data through user space.

use crate::storage::StorageMut;
use std::fs::File;
use std::io;

/// The bytes of one write.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payload<'a> {
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// `len` bytes of the host file `file` at `offset`. The range must lie inside the file.
    File {
        /// The source file.
        file: &'a File,
        /// Offset of the first byte in `file`.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

impl<'a> Payload<'a> {
    /// Length in bytes.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }

    /// The bytes `[from, to)` of this payload.
    pub(crate) fn slice(&self, from: u64, to: u64) -> Payload<'a> {
        debug_assert!(from <= to && to <= self.len());
        match *self {
            Payload::Bytes(b) => Payload::Bytes(&b[from as usize..to as usize]),
            Payload::File { file, offset, .. } => Payload::File {
                file,
                offset: offset + from,
                len: to - from,
            },
        }
    }

    /// Whether the bytes are known to be all zeros. Bytes in memory are looked at; a file
    /// range is never taken for zeros (it is not read here: callers pass file ranges that
    /// hold data, and writing zeros as data is only a missed saving, never a wrong result).
    pub(crate) fn is_zero(&self) -> bool {
        match self {
            Payload::Bytes(b) => crate::bytes::is_zero(b),
            Payload::File { .. } => false,
        }
    }

    /// Writes the bytes at `at` in `to`.
    pub(crate) fn write_to(&self, to: &dyn StorageMut, at: u64) -> io::Result<()> {
        match *self {
            Payload::Bytes(b) => to.write_all_at(b, at),
            Payload::File { file, offset, len } => to.copy_from(file, offset, at, len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemStorage, Storage};

    #[test]
    fn slices_and_writes_from_memory_and_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("src");
        std::fs::write(&p, b"0123456789").unwrap();
        let f = File::open(&p).unwrap();
        let from_file = Payload::File {
            file: &f,
            offset: 2,
            len: 6,
        };
        let to = MemStorage::new(vec![0u8; 12]);
        from_file.slice(1, 4).write_to(&to, 5).unwrap();
        Payload::Bytes(b"ab").write_to(&to, 0).unwrap();
        let mut got = [0u8; 12];
        to.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(&got, b"ab\x00\x00\x00345\x00\x00\x00\x00");
        assert!(!from_file.is_zero());
        assert!(Payload::Bytes(&[0; 9]).is_zero());
        assert!(!Payload::Bytes(b"\0x").slice(0, 2).is_zero());
        assert_eq!(from_file.slice(1, 4).len(), 3);
        // A source range past the end of the file fails rather than reading zeros.
        let past = Payload::File {
            file: &f,
            offset: 8,
            len: 4,
        };
        assert!(past.write_to(&to, 0).is_err());
    }
}
