//! Facts about one file on an NTFS volume, read with the `ntfs` crate over a
//! [`VolumeReader`]: its `$STANDARD_INFORMATION` file attributes, the header of its unnamed
//! `$DATA` attribute (resident or not; compressed, encrypted, sparse flags) and its
//! `$REPARSE_POINT` tag, if any. Paths are looked up from the root directory one component
//! at a time, case-insensitively through the volume's `$UpCase` table, as Windows does.
//!
//! The `ntfs` crate validates what it reads, but it is third-party code fed with guest
//! bytes: a panic inside it is caught and reported as a corrupt volume, never passed on.

use super::window::VolumeReader;
use crate::error::{Error, ErrorKind, Result};
use ntfs::indexes::NtfsFileNameIndex;
use ntfs::{Ntfs, NtfsAttributeType, NtfsError, NtfsFile, NtfsReadSeek};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// FILE_ATTRIBUTE_SPARSE_FILE.
pub const FILE_ATTRIBUTE_SPARSE_FILE: u32 = 0x200;
/// FILE_ATTRIBUTE_REPARSE_POINT.
pub const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;
/// FILE_ATTRIBUTE_COMPRESSED.
pub const FILE_ATTRIBUTE_COMPRESSED: u32 = 0x800;
/// FILE_ATTRIBUTE_ENCRYPTED.
pub const FILE_ATTRIBUTE_ENCRYPTED: u32 = 0x4000;
/// Attribute header flag: compressed (ATTRIBUTE_FLAG_COMPRESSION_MASK).
pub const ATTR_FLAG_COMPRESSED: u16 = 0x00FF;
/// Attribute header flag: encrypted.
pub const ATTR_FLAG_ENCRYPTED: u16 = 0x4000;
/// Attribute header flag: sparse.
pub const ATTR_FLAG_SPARSE: u16 = 0x8000;
/// The reparse tag of Windows Server data deduplication.
pub const IO_REPARSE_TAG_DEDUP: u32 = 0x8000_0013;

/// The unnamed `$DATA` attribute's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataAttribute {
    /// The value lives inside the MFT record (no clusters of its own).
    pub resident: bool,
    /// Attribute header flags (compressed 0x0001, encrypted 0x4000, sparse 0x8000).
    pub flags: u16,
    /// Length of the value (the file size).
    pub length: u64,
}

/// What `odx-check` needs to know about one guest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    /// The MFT record number.
    pub record: u64,
    /// `$STANDARD_INFORMATION` file attributes (FILE_ATTRIBUTE_*).
    pub attributes: u32,
    /// The unnamed `$DATA` attribute; `None` when the file has none.
    pub data: Option<DataAttribute>,
    /// The reparse tag of a `$REPARSE_POINT` attribute (0 when its value is too short to
    /// hold one); `None` without that attribute.
    pub reparse_tag: Option<u32>,
}

/// What looking a path up found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The file, with its facts.
    File(FileFacts),
    /// No such file (the component that is missing, or a non-directory on the way).
    NotFound(String),
    /// The path names a directory.
    Directory,
}

/// An opened NTFS volume.
pub struct NtfsVolume<'a> {
    reader: VolumeReader<'a>,
    ntfs: Ntfs,
}

impl std::fmt::Debug for NtfsVolume<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtfsVolume")
            .field("reader", &self.reader)
            .finish()
    }
}

/// Turns an `ntfs` crate error into ours: I/O failures of the disk stay I/O errors, reads
/// outside the volume and everything the crate rejects are corruption of the volume.
fn convert(e: NtfsError, reader: &VolumeReader<'_>) -> Error {
    if let NtfsError::Io(io) = &e {
        if !matches!(
            io.kind(),
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof
        ) {
            return Error::io(
                io::Error::new(io.kind(), io.to_string()),
                "reading the NTFS volume",
            );
        }
    }
    Error::new(
        ErrorKind::Corrupt,
        format!("the NTFS volume cannot be read: {e}"),
    )
    .structure("NTFS volume")
    .offset(reader.offset())
}

/// Runs `f`, turning a panic of the `ntfs` crate into a corruption error.
fn guarded<T>(reader: &VolumeReader<'_>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error::new(
            ErrorKind::Corrupt,
            "the NTFS volume cannot be read: its structures made the NTFS reader fail",
        )
        .structure("NTFS volume")
        .offset(reader.offset()))
    })
}

impl<'a> NtfsVolume<'a> {
    /// Opens the NTFS file system in `reader` (boot sector and `$UpCase`).
    pub fn open(reader: VolumeReader<'a>) -> Result<Self> {
        guarded(&reader, || {
            let mut fs = reader;
            let mut ntfs = Ntfs::new(&mut fs).map_err(|e| convert(e, &reader))?;
            ntfs.read_upcase_table(&mut fs)
                .map_err(|e| convert(e, &reader))?;
            Ok(NtfsVolume { reader, ntfs })
        })
    }

    /// Looks `path` up (components separated by `/` or `\`; a leading drive letter such as
    /// `C:` is ignored) and reads its facts.
    pub fn lookup(&self, path: &str) -> Result<Lookup> {
        guarded(&self.reader, || self.lookup_inner(path))
    }

    fn lookup_inner(&self, path: &str) -> Result<Lookup> {
        let mut fs = self.reader;
        let err = |e| convert(e, &self.reader);
        let path = strip_drive(path);
        let mut file = self.ntfs.root_directory(&mut fs).map_err(err)?;
        for comp in path
            .split(['/', '\\'])
            .filter(|c| !c.is_empty() && *c != ".")
        {
            if !file.is_directory() {
                return Ok(Lookup::NotFound(format!(
                    "a component before {comp:?} is a file, not a directory"
                )));
            }
            let next = {
                let index = file.directory_index(&mut fs).map_err(err)?;
                let mut finder = index.finder();
                match NtfsFileNameIndex::find(&mut finder, &self.ntfs, &mut fs, comp) {
                    None => return Ok(Lookup::NotFound(format!("no {comp:?}"))),
                    Some(entry) => {
                        let entry = entry.map_err(err)?;
                        entry.to_file(&self.ntfs, &mut fs).map_err(err)?
                    }
                }
            };
            file = next;
        }
        if file.is_directory() {
            return Ok(Lookup::Directory);
        }
        self.facts(&file).map(Lookup::File)
    }

    fn facts(&self, file: &NtfsFile<'_>) -> Result<FileFacts> {
        let mut fs = self.reader;
        let err = |e| convert(e, &self.reader);
        let attributes = file.info().map_err(err)?.file_attributes().bits();
        let data = match file.data(&mut fs, "") {
            None => None,
            Some(item) => {
                let item = item.map_err(err)?;
                let a = item.to_attribute().map_err(err)?;
                Some(DataAttribute {
                    resident: a.is_resident(),
                    flags: a.flags().bits(),
                    length: a.value_length(),
                })
            }
        };
        let mut reparse_tag = None;
        let mut attrs = file.attributes();
        while let Some(item) = attrs.next(&mut fs) {
            let item = item.map_err(err)?;
            let a = item.to_attribute().map_err(err)?;
            if a.ty().map_err(err)? != NtfsAttributeType::ReparsePoint {
                continue;
            }
            let mut value = a.value(&mut fs).map_err(err)?;
            let mut tag = [0u8; 4];
            let n = if value.len() >= 4 {
                value.read(&mut fs, &mut tag).map_err(err)?
            } else {
                0
            };
            reparse_tag = Some(if n == 4 { u32::from_le_bytes(tag) } else { 0 });
            break;
        }
        Ok(FileFacts {
            record: file.file_record_number(),
            attributes,
            data,
            reparse_tag,
        })
    }
}

/// `C:\dir\file` → `\dir\file`.
fn strip_drive(path: &str) -> &str {
    let b = path.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        &path[2..]
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_letters() {
        assert_eq!(strip_drive(r"C:\a\b"), r"\a\b");
        assert_eq!(strip_drive("/a"), "/a");
        assert_eq!(strip_drive("é:"), "é:");
        assert_eq!(strip_drive(""), "");
    }

    #[test]
    fn not_ntfs_is_corrupt_not_a_panic() {
        let d = crate::guest::testdisk::MemDisk {
            bytes: vec![0u8; 1 << 20],
            sector: 512,
        };
        let r = VolumeReader::whole(&d);
        let e = NtfsVolume::open(r).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }
}
