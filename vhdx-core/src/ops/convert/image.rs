//! The VHDX and VHD targets of [`super::convert`]: the disk is made by [`crate::create`]
//! (dynamic or fixed, the source's virtual size) and filled through the write path
//! ([`crate::Disk::open_rw`]), which allocates nothing for the all-zero writes the copy
//! never makes anyway; closing it commits the metadata and flushes the file.

use super::{copy, ConvertOptions, ConvertStats};
use crate::chain::{Disk, OpenOptions};
use crate::create::{create, CreateOptions};
use crate::disk::VirtualDisk;
use crate::error::{Error, ErrorKind, Result};
use crate::ops::info::{DiskType, Format};
use std::path::Path;

/// Makes the disk `opts` describes, of virtual size `size` (at least the source's), at `tmp`
/// (a new name standing in for `out`), copies `disk` into it and closes it.
pub(super) fn write(
    disk: &dyn VirtualDisk,
    size: u64,
    tmp: &Path,
    out: &Path,
    opts: &ConvertOptions,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<ConvertStats> {
    let disk_type = opts.disk_type.unwrap_or(if opts.azure {
        DiskType::Fixed
    } else {
        DiskType::Dynamic
    });
    let mut c = CreateOptions::new()
        .format(opts.format)
        .disk_type(disk_type)
        .size(size);
    if let Some(b) = opts.block_size {
        c = c.block_size(b);
    }
    match (opts.format, opts.logical_sector_size) {
        (_, Some(n)) => c = c.logical_sector_size(n),
        (Format::Vhdx, None) => c = c.logical_sector_size(disk.logical_sector_size()),
        _ => {}
    }
    create(tmp, &c).map_err(|e| about_output(e, tmp, out))?;
    let open = OpenOptions {
        format: Some(opts.format),
        ..OpenOptions::default()
    };
    let target = Disk::open_rw(tmp, &open)?;
    let block_size = target.disk().info(false)?.block_size;
    // A second handle on the file, for the copy's early flushes (the write path keeps its own).
    let behind = std::fs::File::open(tmp)
        .map_err(|e| Error::io(e, "cannot open the output file").in_file(tmp))?;
    let copied = copy(
        disk,
        &mut |buf, offset| target.write_at(buf, offset),
        Some(&mut |from, src, len, offset| target.write_from(from, src, len, offset)),
        Some(&behind),
        progress,
    )
    .map_err(|e| e.in_file(tmp))?;
    target.close()?;
    Ok(ConvertStats {
        format: opts.format,
        disk_type: Some(disk_type),
        block_size,
        size,
        source_size: disk.size(),
        bytes_written: copied.written,
        // The tail a rounded-up output adds was not written either.
        bytes_skipped: copied.skipped + (size - disk.size()),
        file_length: 0, // set once the file is complete
    })
}

/// `e` from creating the output under its temporary name, told about the requested name
/// when it is a parameter error: those concern the output, not a hidden file.
fn about_output(e: Error, tmp: &Path, out: &Path) -> Error {
    if e.kind() != ErrorKind::InvalidArgument || e.path() != Some(tmp) {
        return e;
    }
    let mut n = Error::new(e.kind(), e.message().to_owned());
    if let Some(x) = e.expected_value() {
        n = n.expected(x);
    }
    if let Some(x) = e.found_value() {
        n = n.found(x);
    }
    n.in_file(out)
}
