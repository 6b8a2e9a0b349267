//! Reading the file identifier and choosing the current header (MS-VHDX §2.2.2; FORMATS.md
//! A.3, A.4): the valid copy with the higher sequence number wins; one damaged copy is
//! tolerated and reported.

use crate::error::{Error, Result};
use crate::format::vhdx::file_id::{self, FileIdentifier};
use crate::format::vhdx::header::{self, Header};
use crate::format::vhdx::MIB;
use crate::report::{Finding, Severity};
use crate::storage::{read_struct, Storage};
use zerocopy::IntoBytes;

/// Why one header copy is not usable.
fn validate(h: &Header, which: usize) -> Result<()> {
    let off = header::OFFSETS[which];
    let name = if which == 0 {
        "VHDX header 1"
    } else {
        "VHDX header 2"
    };
    if h.signature != header::SIGNATURE {
        return Err(Error::corrupt(name, off, "bad signature")
            .expected("\"head\"")
            .found(format!("{:02x?}", h.signature)));
    }
    let bytes: &[u8; header::SIZE] = h
        .as_bytes()
        .try_into()
        .map_err(|_| Error::corrupt(name, off, "size"))?;
    let computed = Header::compute_checksum(bytes);
    if computed != h.checksum.get() {
        return Err(Error::corrupt(name, off, "bad CRC-32C checksum")
            .expected(format!("{computed:#010x}"))
            .found(format!("{:#010x}", h.checksum.get())));
    }
    if h.version.get() != 1 {
        return Err(Error::unsupported(name, off + 66, "unknown header version")
            .expected(1)
            .found(h.version.get()));
    }
    Ok(())
}

/// The headers as read from the file.
#[derive(Debug, Clone)]
pub struct Headers {
    /// The current header.
    pub current: Header,
    /// Which copy is current (0 or 1).
    pub current_index: usize,
    /// The other copy, when valid.
    pub other: Option<Header>,
    /// Creator string of the file identifier.
    pub creator: Option<String>,
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header")
            .field("sequence_number", &self.sequence_number.get())
            .field("file_write_guid", &self.file_write_guid)
            .field("data_write_guid", &self.data_write_guid)
            .field("log_guid", &self.log_guid)
            .field("log_offset", &self.log_offset.get())
            .field("log_length", &self.log_length.get())
            .finish()
    }
}

/// Reads the identifier and both headers; returns the current one. Damage to one copy is
/// pushed to `findings`.
pub fn read_headers(storage: &dyn Storage, findings: &mut Vec<Finding>) -> Result<Headers> {
    let len = storage
        .len()
        .map_err(|e| Error::io(e, "reading the file length"))?;
    if len < MIB {
        return Err(Error::corrupt(
            "VHDX file",
            0,
            "the file is shorter than the 1 MiB header section",
        )
        .expected(format!("at least {MIB} bytes"))
        .found(format!("{len} bytes")));
    }
    let id: FileIdentifier = read_struct(storage, file_id::OFFSET, "VHDX file identifier")?;
    if id.signature != file_id::SIGNATURE {
        return Err(
            Error::new(crate::ErrorKind::NotADisk, "bad file type signature")
                .structure("VHDX file identifier")
                .offset(0)
                .expected("\"vhdxfile\"")
                .found(format!("{:02x?}", id.signature)),
        );
    }
    let mut copies: [Option<Header>; 2] = [None, None];
    let mut errors: Vec<Error> = Vec::new();
    for (i, slot) in copies.iter_mut().enumerate() {
        let name = if i == 0 {
            "VHDX header 1"
        } else {
            "VHDX header 2"
        };
        let h: Header = read_struct(storage, header::OFFSETS[i], name)?;
        match validate(&h, i) {
            Ok(()) => *slot = Some(h),
            Err(e) => errors.push(e),
        }
    }
    let (current_index, other) = match (&copies[0], &copies[1]) {
        (None, None) => {
            let first = errors.into_iter().next().unwrap_or_else(|| {
                Error::corrupt("VHDX headers", header::OFFSETS[0], "no valid header")
            });
            let msg = format!(
                "neither header copy is valid; header 1: {}",
                first.message()
            );
            return Err(Error::corrupt("VHDX headers", header::OFFSETS[0], msg));
        }
        (Some(_), None) => (0, None),
        (None, Some(_)) => (1, None),
        (Some(a), Some(b)) => {
            let (sa, sb) = (a.sequence_number.get(), b.sequence_number.get());
            if sa == sb {
                // Equal sequence numbers: accepted only when the bodies agree (Disk2vhd writes
                // two identical headers), as QEMU does.
                if a.as_bytes()[8..80] != b.as_bytes()[8..80] {
                    return Err(Error::corrupt(
                        "VHDX headers",
                        header::OFFSETS[0],
                        "both headers carry the same sequence number but differ",
                    )
                    .found(format!("sequence {sa} in both")));
                }
                (0, Some(*b))
            } else if sa > sb {
                (0, Some(*b))
            } else {
                (1, Some(*a))
            }
        }
    };
    for e in &errors {
        findings.push(Finding::from_error(Severity::Warning, e));
    }
    let current =
        copies[current_index].ok_or_else(|| Error::corrupt("VHDX headers", 0, "internal"))?;
    Ok(Headers {
        current,
        current_index,
        other,
        creator: id.creator(),
    })
}
