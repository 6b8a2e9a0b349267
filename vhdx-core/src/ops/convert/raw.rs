//! The raw target of [`super::convert`]: a file of the virtual size whose zero and
//! unallocated ranges stay holes.

use super::{copy, ConvertStats};
use crate::disk::VirtualDisk;
use crate::error::{Error, Result};
use crate::ops::info::Format;
use crate::storage::{FileStorage, StorageMut};
use std::fs::OpenOptions;
use std::path::Path;

/// Writes `disk` as a sparse raw file at `tmp` (a new name) and flushes it.
pub(super) fn write(
    disk: &dyn VirtualDisk,
    tmp: &Path,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<ConvertStats> {
    let size = disk.size();
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| Error::io(e, "cannot create the output file").in_file(tmp))?;
    let file = FileStorage::from_file(file);
    file.set_len(size)
        .map_err(|e| Error::io(e, "cannot size the output file").in_file(tmp))?;
    let failed = |e, offset| {
        Error::io(e, "writing the output")
            .offset(offset)
            .in_file(tmp)
    };
    let copied = copy(
        disk,
        &mut |buf, offset| {
            file.write_all_at(buf, offset)
                .map_err(|e| failed(e, offset))
        },
        Some(&mut |from, src, len, offset| {
            file.copy_from(from, src, offset, len)
                .map_err(|e| failed(e, offset))
        }),
        Some(file.file()),
        progress,
    )
    .map_err(|e| e.in_file(tmp))?;
    file.sync()
        .map_err(|e| Error::io(e, "flushing the output").in_file(tmp))?;
    Ok(ConvertStats {
        format: Format::Raw,
        disk_type: None,
        block_size: None,
        size,
        source_size: size,
        bytes_written: copied.written,
        bytes_skipped: copied.skipped,
        file_length: 0, // set once the file is complete
    })
}
