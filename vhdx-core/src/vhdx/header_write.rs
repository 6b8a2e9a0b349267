//! Writing VHDX headers with the two-copy update protocol (MS-VHDX §2.2.2.1; FORMATS.md A.4,
//! A.11).
//!
//! Each update builds a new header from the current one with SequenceNumber + 1 and the
//! session's FileWriteGuid, computes the CRC over the full 4 KiB, writes it over the
//! *non-current* copy and flushes; that copy then becomes current. [`HeaderWriter::update_both`]
//! does this twice so both copies carry the new state, as the spec recommends and QEMU does.
//! A crash at any point leaves at least one valid header: the old current one until the first
//! flush completes, the new one afterwards.

use super::headers::Headers;
use crate::error::{Error, Result};
use crate::format::vhdx::header::{self, Header};
use crate::format::vhdx::Guid;
use crate::storage::StorageMut;
use zerocopy::IntoBytes;

/// A writing session's view of the headers: which copy is current and the FileWriteGuid the
/// session stamps on every header it writes.
#[derive(Debug, Clone)]
pub struct HeaderWriter {
    current: Header,
    current_index: usize,
    file_write_guid: Guid,
}

impl HeaderWriter {
    /// Starts a session from the headers as read, with a fresh random FileWriteGuid.
    pub fn new(headers: &Headers) -> Self {
        Self::with_file_write_guid(headers, Guid::from_uuid(uuid::Uuid::new_v4()))
    }

    /// Starts a session from the headers as read, stamping `file_write_guid` on every update.
    pub fn with_file_write_guid(headers: &Headers, file_write_guid: Guid) -> Self {
        HeaderWriter {
            current: headers.current,
            current_index: headers.current_index,
            file_write_guid,
        }
    }

    /// The current header (the last one written, or the one read at the start).
    pub fn current(&self) -> &Header {
        &self.current
    }

    /// Which copy (0 = header 1 at 64 KiB, 1 = header 2 at 128 KiB) is current.
    pub fn current_index(&self) -> usize {
        self.current_index
    }

    /// The FileWriteGuid of this session.
    pub fn file_write_guid(&self) -> Guid {
        self.file_write_guid
    }

    /// Writes one new header over the non-current copy and flushes it: the current header
    /// with SequenceNumber + 1, this session's FileWriteGuid and whatever `change` sets.
    /// `change` must not touch the signature, checksum, sequence number or FileWriteGuid
    /// (they are set here).
    pub fn update(
        &mut self,
        storage: &dyn StorageMut,
        change: impl FnOnce(&mut Header),
    ) -> Result<()> {
        let target = 1 - self.current_index.min(1);
        let offset = header::OFFSETS[target];
        let seq = self
            .current
            .sequence_number
            .get()
            .checked_add(1)
            .ok_or_else(|| {
                Error::unsupported(
                    "VHDX header",
                    header::OFFSETS[self.current_index.min(1)] + 8,
                    "the header sequence number cannot be incremented",
                )
                .found(self.current.sequence_number.get())
            })?;
        let mut h = self.current;
        change(&mut h);
        h.signature = header::SIGNATURE;
        h.sequence_number.set(seq);
        h.file_write_guid = self.file_write_guid;
        h.checksum.set(0);
        let crc = {
            let bytes: &[u8; header::SIZE] = h
                .as_bytes()
                .try_into()
                .map_err(|_| Error::corrupt("VHDX header", offset, "header size"))?;
            Header::compute_checksum(bytes)
        };
        h.checksum.set(crc);
        storage
            .write_all_at(h.as_bytes(), offset)
            .map_err(|e| Error::io(e, "writing a VHDX header").offset(offset))?;
        storage
            .sync()
            .map_err(|e| Error::io(e, "flushing a VHDX header").offset(offset))?;
        self.current = h;
        self.current_index = target;
        Ok(())
    }

    /// Runs [`HeaderWriter::update`] twice with the same change, so both copies carry the new
    /// state (each with its own sequence number).
    pub fn update_both(
        &mut self,
        storage: &dyn StorageMut,
        change: impl Fn(&mut Header),
    ) -> Result<()> {
        self.update(storage, &change)?;
        self.update(storage, &change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Finding;
    use crate::storage::{MemStorage, StorageMut};
    use zerocopy::FromZeros;

    #[test]
    fn pair_update_alternates_copies_and_reads_back() {
        let f = MemStorage::default();
        f.set_len(1 << 20).unwrap();
        f.write_all_at(b"vhdxfile", 0).unwrap();
        let mut h = Header::new_zeroed();
        h.signature = header::SIGNATURE;
        h.version.set(1);
        h.sequence_number.set(10);
        h.log_guid = Guid([7; 16]);
        let crc = Header::compute_checksum(h.as_bytes().try_into().unwrap());
        h.checksum.set(crc);
        f.write_all_at(h.as_bytes(), header::OFFSETS[0]).unwrap();
        let mut findings: Vec<Finding> = Vec::new();
        let hs = super::super::headers::read_headers(&f, &mut findings).unwrap();
        assert_eq!(hs.current_index, 0);
        assert!(hs.other.is_none());
        let mut w = HeaderWriter::with_file_write_guid(&hs, Guid([9; 16]));
        w.update_both(&f, |h| h.log_guid = Guid::default()).unwrap();
        assert_eq!(w.current_index(), 0);
        assert_eq!(findings.len(), 1, "header 2 was empty before the update");
        findings.clear();
        let hs = super::super::headers::read_headers(&f, &mut findings).unwrap();
        assert_eq!(hs.current.sequence_number.get(), 12);
        assert_eq!(hs.current_index, 0);
        let other = hs.other.unwrap();
        assert_eq!(other.sequence_number.get(), 11);
        for h in [hs.current, other] {
            assert!(h.log_guid.is_nil());
            assert_eq!(h.file_write_guid, Guid([9; 16]));
        }
        assert!(findings.is_empty());
    }
}
