//! A byte window over a virtual disk: one partition (or the whole disk) seen as its own
//! device. [`VolumeReader`] offers positional reads for our own parsers, and the standard
//! `Read` and `Seek` traits for crates that want a stream (the `ntfs` crate). Every read is
//! bounds-checked against the window, so nothing a volume's structures say can reach bytes
//! outside it.

use crate::disk::VirtualDisk;
use crate::error::{Error, ErrorKind, Result};
use std::io;

/// A window `[offset, offset + length)` of a virtual disk, read as a device of `length`
/// bytes starting at 0.
#[derive(Clone, Copy)]
pub struct VolumeReader<'a> {
    disk: &'a dyn VirtualDisk,
    offset: u64,
    length: u64,
    /// Stream position for the `Read`/`Seek` interface (relative to the window).
    pos: u64,
}

impl std::fmt::Debug for VolumeReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeReader")
            .field("offset", &self.offset)
            .field("length", &self.length)
            .field("pos", &self.pos)
            .finish()
    }
}

impl<'a> VolumeReader<'a> {
    /// A window of `length` bytes at `offset` of `disk`; an error (invalid argument) when it
    /// does not lie inside the disk.
    pub fn new(disk: &'a dyn VirtualDisk, offset: u64, length: u64) -> Result<Self> {
        crate::disk::check_range(disk.size(), offset, length)?;
        Ok(VolumeReader {
            disk,
            offset,
            length,
            pos: 0,
        })
    }

    /// The window over one detected volume.
    pub fn for_volume(disk: &'a dyn VirtualDisk, volume: &super::Volume) -> Result<Self> {
        Self::new(disk, volume.offset, volume.length)
    }

    /// The whole disk as a window.
    pub fn whole(disk: &'a dyn VirtualDisk) -> Self {
        VolumeReader {
            disk,
            offset: 0,
            length: disk.size(),
            pos: 0,
        }
    }

    /// The disk the window lies on.
    pub fn disk(&self) -> &'a dyn VirtualDisk {
        self.disk
    }

    /// Offset of the window on the disk.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length of the window in bytes.
    pub fn len(&self) -> u64 {
        self.length
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Fills `buf` from `offset` (relative to the window). A range that passes the end of
    /// the window is a [`Corrupt`](ErrorKind::Corrupt) error: a structure inside the
    /// volume points outside it.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = buf.len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= self.length => {}
            _ => {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "a read of {len} bytes at {offset:#x} passes the end of the volume \
                         ({} bytes)",
                        self.length
                    ),
                )
                .offset(self.offset.saturating_add(offset)))
            }
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.disk.read_at(buf, self.offset + offset)
    }

    /// Reads up to `buf.len()` bytes at `offset` (relative to the window), fewer at its
    /// end; returns how many were read (0 at or past the end).
    pub fn read_some_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let avail = self.length.saturating_sub(offset);
        let n = (buf.len() as u64).min(avail) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.read_at(&mut buf[..n], offset)?;
        Ok(n)
    }
}

impl io::Read for VolumeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_some_at(buf, self.pos).map_err(io::Error::from)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for VolumeReader<'_> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let target = match to {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.length.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the volume or past 2^64",
            )),
        }
    }

    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::testdisk::MemDisk;
    use std::io::{Read, Seek, SeekFrom};

    fn disk() -> MemDisk {
        let bytes: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        MemDisk { bytes, sector: 512 }
    }

    #[test]
    fn window_bounds() {
        let d = disk();
        assert!(VolumeReader::new(&d, 4096, 4097).is_err());
        assert!(VolumeReader::new(&d, u64::MAX, 2).is_err());
        let w = VolumeReader::new(&d, 1000, 100).unwrap();
        let mut b = [0u8; 10];
        w.read_at(&mut b, 90).unwrap();
        assert_eq!(b[0], (1090 % 251) as u8);
        let e = w.read_at(&mut b, 91).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(w.read_at(&mut b, u64::MAX - 3).is_err());
        assert_eq!(w.read_some_at(&mut b, 95).unwrap(), 5);
        assert_eq!(w.read_some_at(&mut b, 500).unwrap(), 0);
    }

    #[test]
    fn read_and_seek() {
        let d = disk();
        let mut w = VolumeReader::new(&d, 100, 50).unwrap();
        let mut all = Vec::new();
        w.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 50);
        assert_eq!(all[0], 100);
        assert_eq!(w.seek(SeekFrom::End(-10)).unwrap(), 40);
        let mut b = [0u8; 20];
        assert_eq!(w.read(&mut b).unwrap(), 10);
        assert_eq!(b[0], 140);
        assert_eq!(w.read(&mut b).unwrap(), 0);
        assert!(w.seek(SeekFrom::Current(-100)).is_err());
        assert_eq!(w.seek(SeekFrom::Start(1000)).unwrap(), 1000);
        assert_eq!(w.read(&mut b).unwrap(), 0);
    }
}
