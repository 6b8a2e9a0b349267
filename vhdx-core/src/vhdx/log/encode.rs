//! Writing log entries in the on-disk layout (for the write path and for tests).

use super::*;

/// Encodes one log entry (descriptors, then one data sector per data write) with its
/// checksum. `tail` is the log-relative offset of the first entry of the sequence the entry
/// ends. Errors when an offset or length is not a multiple of 4 KiB or the entry would not
/// fit a u32 length.
pub fn encode_entry(
    log_guid: Guid,
    sequence_number: u64,
    tail: u32,
    flushed_file_offset: u64,
    last_file_offset: u64,
    writes: &[LogWrite<'_>],
) -> Result<Vec<u8>> {
    let count = u32::try_from(writes.len())
        .map_err(|_| Error::invalid_argument("too many log descriptors"))?;
    let desc_sectors = fl::descriptor_sectors(count);
    let data_sectors = writes
        .iter()
        .filter(|w| matches!(w, LogWrite::Data { .. }))
        .count() as u64;
    let length = (desc_sectors + data_sectors) * SECTOR;
    let length32 = u32::try_from(length)
        .map_err(|_| Error::invalid_argument("log entry longer than 4 GiB"))?;
    let mut buf = vec![0u8; length as usize];
    let mut hdr = fl::EntryHeader::new_zeroed();
    hdr.signature = fl::ENTRY_SIGNATURE;
    hdr.entry_length.set(length32);
    hdr.tail.set(tail);
    hdr.sequence_number.set(sequence_number);
    hdr.descriptor_count.set(count);
    hdr.log_guid = log_guid;
    hdr.flushed_file_offset.set(flushed_file_offset);
    hdr.last_file_offset.set(last_file_offset);
    buf[..fl::ENTRY_HEADER_SIZE].copy_from_slice(hdr.as_bytes());
    let mut data_idx = desc_sectors as usize;
    for (i, w) in writes.iter().enumerate() {
        let at = fl::ENTRY_HEADER_SIZE + i * fl::DESCRIPTOR_SIZE;
        match *w {
            LogWrite::Zero {
                file_offset,
                length,
            } => {
                if file_offset % SECTOR != 0 || length % SECTOR != 0 {
                    return Err(Error::invalid_argument(
                        "log zero range not aligned to 4 KiB",
                    ));
                }
                let mut d = fl::ZeroDescriptor::new_zeroed();
                d.signature = fl::ZERO_SIGNATURE;
                d.zero_length.set(length);
                d.file_offset.set(file_offset);
                d.sequence_number.set(sequence_number);
                buf[at..at + fl::DESCRIPTOR_SIZE].copy_from_slice(d.as_bytes());
            }
            LogWrite::Data {
                file_offset,
                sector,
            } => {
                if file_offset % SECTOR != 0 {
                    return Err(Error::invalid_argument(
                        "log data sector not aligned to 4 KiB",
                    ));
                }
                let mut d = fl::DataDescriptor::new_zeroed();
                d.signature = fl::DATA_DESC_SIGNATURE;
                d.trailing_bytes.copy_from_slice(&sector[4092..]);
                d.leading_bytes.copy_from_slice(&sector[..8]);
                d.file_offset.set(file_offset);
                d.sequence_number.set(sequence_number);
                buf[at..at + fl::DESCRIPTOR_SIZE].copy_from_slice(d.as_bytes());
                let mut s = fl::DataSector::new_zeroed();
                s.signature = fl::DATA_SIGNATURE;
                s.sequence_high.set((sequence_number >> 32) as u32);
                s.sequence_low.set(sequence_number as u32);
                s.data.copy_from_slice(&sector[8..4092]);
                let s_at = data_idx * fl::SECTOR;
                buf[s_at..s_at + fl::SECTOR].copy_from_slice(s.as_bytes());
                data_idx += 1;
            }
        }
    }
    let crc = crc32c_with_zeroed_field(&buf, fl::CHECKSUM_FIELD);
    buf[fl::CHECKSUM_FIELD..fl::CHECKSUM_FIELD + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}
