//! `vhdx convert --format raw`: export any readable disk (every format and type, chains,
//! images with a dirty log replayed in memory) to a sparse raw file. Ranges the allocation
//! map shows as zero or unallocated are never written, and written ranges that turn out to
//! be all zeros are skipped too, so they stay holes in the output.
//!
//! The output is written to a temporary file beside the target and renamed into place only
//! when complete: a failed export leaves no partial file under the requested name.

use crate::bytes::is_zero;
use crate::disk::{extents, Status, VirtualDisk};
use crate::error::{Error, Result};
use crate::storage::{FileStorage, StorageMut};
use serde::Serialize;
use std::fs::File;
use std::path::Path;

/// What an export did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConvertStats {
    /// Virtual size (and the output file's length).
    pub size: u64,
    /// Bytes of data written.
    pub bytes_written: u64,
    /// Bytes left as holes (zero or unallocated).
    pub bytes_skipped: u64,
}

/// Copy unit: large enough for full-speed sequential I/O, small enough to bound memory.
const PIECE: usize = 4 << 20;
/// Granularity of zero detection inside a piece.
const ZERO_STEP: usize = 64 << 10;

/// Exports `disk` to a sparse raw file at `out`. `progress(done, total)` is called as the
/// export advances.
pub fn to_raw(
    disk: &dyn VirtualDisk,
    out: &Path,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<ConvertStats> {
    let size = disk.size();
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .ok_or_else(|| Error::invalid_argument(format!("{} is not a file path", out.display())))?;
    let tmp = dir.join(format!(
        ".{}.vhdx-tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<ConvertStats> {
        let file = File::create(&tmp)
            .map_err(|e| Error::io(e, "cannot create the output file").in_file(&tmp))?;
        let file = FileStorage::from_file(file);
        file.set_len(size)
            .map_err(|e| Error::io(e, "cannot size the output file").in_file(&tmp))?;
        let mut stats = ConvertStats {
            size,
            bytes_written: 0,
            bytes_skipped: 0,
        };
        let mut buf = vec![0u8; PIECE.min(size as usize).max(1)];
        let mut done = 0u64;
        for e in extents(disk)? {
            if !matches!(e.status, Status::Data { .. }) {
                stats.bytes_skipped += e.length;
                done += e.length;
                if let Some(p) = progress {
                    p(done, size);
                }
                continue;
            }
            let mut pos = e.offset;
            let end = e.offset + e.length;
            while pos < end {
                let n = ((end - pos) as usize).min(buf.len());
                let b = &mut buf[..n];
                disk.read_at(b, pos)?;
                // Write only the runs of non-zero 64 KiB pieces: zero pieces inside allocated
                // blocks stay holes too.
                let mut k = 0;
                while k < n {
                    let run_start = k;
                    let zero = is_zero(&b[k..(k + ZERO_STEP).min(n)]);
                    while k < n && is_zero(&b[k..(k + ZERO_STEP).min(n)]) == zero {
                        k = (k + ZERO_STEP).min(n);
                    }
                    let len = (k - run_start) as u64;
                    if zero {
                        stats.bytes_skipped += len;
                    } else {
                        file.write_all_at(&b[run_start..k], pos + run_start as u64)
                            .map_err(|e| Error::io(e, "writing the output").in_file(&tmp))?;
                        stats.bytes_written += len;
                    }
                }
                pos += n as u64;
                done += n as u64;
                if let Some(p) = progress {
                    p(done, size);
                }
            }
        }
        file.sync()
            .map_err(|e| Error::io(e, "flushing the output").in_file(&tmp))?;
        Ok(stats)
    })();
    match result {
        Ok(stats) => {
            std::fs::rename(&tmp, out)
                .map_err(|e| Error::io(e, "renaming the output into place").in_file(out))?;
            Ok(stats)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
