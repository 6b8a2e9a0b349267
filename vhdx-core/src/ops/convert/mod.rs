//! `vhdx convert`: copy any readable disk (every format and type, chains, raw files, images
//! with a dirty log replayed in memory) into a new raw file (`raw.rs`) or a new dynamic or
//! fixed VHDX or VHD (`image.rs`), or an Azure-ready fixed VHD ([`ConvertOptions::azure`]).
//!
//! The copy is written once, in `copy.rs`: it walks the source's allocation map, never
//! reads ranges the map shows as zero or unallocated, reads the rest in pieces of at most
//! 8 MiB that never cross an 8 MiB boundary (so a piece never straddles a block larger than
//! 8 MiB, and covers whole blocks of smaller ones except at the edges of a source extent),
//! and writes only the 64 KiB-aligned runs that hold a non-zero byte. A raw output keeps the
//! rest as holes; a dynamic VHDX or VHD output allocates only the blocks that receive data.
//! Reading runs on its own thread, ahead of writing, and the output is flushed as it grows,
//! so that the disk writes while the copy goes on (see `copy.rs`).
//!
//! # Atomicity
//! The output is built under a temporary name beside the target (`.NAME.convert-PID-RANDOM`)
//! and moved into place only when complete and flushed; on any failure the temporary file is
//! removed, so nothing exists under the requested name. An existing target is refused
//! unless [`ConvertOptions::overwrite`] asks for it; without it the final step is a hard
//! link, which fails atomically if the name appeared meanwhile.
//!
//! # Azure
//! What Azure asks of an uploaded disk (Microsoft's "Prepare and upload a Linux VHD" and
//! "Upload a VHD to Azure" pages, and the errors its upload API returns), and how the output
//! of [`ConvertOptions::azure`] meets it:
//! - A VHD, not a VHDX, and fixed: the data, then the 512-byte footer with cookie
//!   `conectix` and disk type 2 (fixed); the file is exactly the virtual size + 512 bytes.
//! - A virtual size that is a whole number of MiB ("The size must be a whole number (in
//!   MBs)"; the upload API: "the upload size - 512 bytes for the VHD footer must be a
//!   multiple of MiB"), and for an upload to a managed disk between 20 MiB and 32 TiB. A
//!   source that does not fit is refused, unless rounding up is asked for
//!   ([`ConvertOptions::round_up`]): the size then grows to the next MiB (and to at least
//!   20 MiB), and the added tail reads as zeros. Above 2040 GiB the disk cannot be a VHD at
//!   all (the VHD limit Hyper-V enforces), which is refused like every VHD output that large.
//! - The size every reader sees must be that whole number of MiB. The footer holds it twice:
//!   CurrentSize, and a CHS geometry whose product (cylinders × heads × sectors, computed by
//!   the VHD specification's algorithm, which truncates) is usually a little smaller. Hyper-V
//!   and Azure use CurrentSize; QEMU uses the CHS product for footers whose creator
//!   application is `vpc ` or `qemu` (and `qemu-img` without `force_size` makes the size a
//!   CHS product, rarely a whole number of MiB: the images Azure's documentation warns
//!   about). The VHDs written here carry creator application `win ` (host `Wi2k`), for which
//!   every reader, QEMU included, takes CurrentSize, so the size need not be a whole number
//!   of cylinders.

mod copy;
mod image;
mod raw;

use copy::copy;
#[cfg(test)]
use copy::{PIECE, ZERO_STEP};

use crate::bytes::human_size;
use crate::chain::{Disk, OpenOptions};
use crate::disk::VirtualDisk;
use crate::error::{Error, ErrorKind, Result};
use crate::format::vhd::MAX_DYNAMIC_SIZE;
use crate::ops::info::{DiskType, Format};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What to convert into. Built like [`crate::create::CreateOptions`]: start from
/// [`ConvertOptions::new`] with the output format, then set what differs from the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertOptions {
    format: Format,
    disk_type: Option<DiskType>,
    block_size: Option<u32>,
    logical_sector_size: Option<u32>,
    overwrite: bool,
    azure: bool,
    round_up: bool,
}

impl ConvertOptions {
    /// Converts into `format`, with every other choice at its default: a dynamic disk; the
    /// block size of [`crate::create`] (VHDX 32 MiB, VHD 2 MiB); a VHDX takes the source's
    /// logical sector size; an existing output is refused.
    pub fn new(format: Format) -> Self {
        ConvertOptions {
            format,
            disk_type: None,
            block_size: None,
            logical_sector_size: None,
            overwrite: false,
            azure: false,
            round_up: false,
        }
    }

    /// Whether to make an Azure-ready disk: a fixed VHD whose virtual size is a whole number
    /// of MiB (see the module documentation). The format must be [`Format::Vhd`] and the type
    /// fixed or unset; another format or type, a block size or 4 KiB sectors are refused when
    /// converting, as is a source of another size unless [`ConvertOptions::round_up`] is set.
    pub fn azure(mut self, azure: bool) -> Self {
        self.azure = azure;
        self
    }

    /// For an Azure conversion: grow a virtual size that is not a whole number of MiB to the
    /// next MiB (and one under Azure's 20 MiB minimum to 20 MiB); the added tail reads as
    /// zeros. Refused for other conversions.
    pub fn round_up(mut self, round_up: bool) -> Self {
        self.round_up = round_up;
        self
    }

    /// Dynamic (the default) or fixed. VHDX and VHD only.
    pub fn disk_type(mut self, disk_type: DiskType) -> Self {
        self.disk_type = Some(disk_type);
        self
    }

    /// Block size in bytes (a power of two; VHDX 1–256 MiB). VHDX and dynamic VHD only.
    pub fn block_size(mut self, block_size: u32) -> Self {
        self.block_size = Some(block_size);
        self
    }

    /// Logical sector size of the output, 512 or 4096 (VHD: 512 only). VHDX and VHD only.
    pub fn logical_sector_size(mut self, n: u32) -> Self {
        self.logical_sector_size = Some(n);
        self
    }

    /// Whether an existing output file may be replaced (atomically, once the new one is
    /// complete).
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }
}

/// What a conversion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConvertStats {
    /// Output format.
    pub format: Format,
    /// Output type (`None` for raw).
    pub disk_type: Option<DiskType>,
    /// Output block size (`None` for raw and fixed VHD).
    pub block_size: Option<u32>,
    /// Virtual size of the output: that of the source, unless an Azure conversion rounded
    /// it up.
    pub size: u64,
    /// Virtual size of the source.
    pub source_size: u64,
    /// Bytes of data written.
    pub bytes_written: u64,
    /// Bytes not written because the source holds zeros or nothing there, or because they
    /// lie in the tail a rounded-up output adds (`bytes_written + bytes_skipped == size`).
    pub bytes_skipped: u64,
    /// Length of the output file.
    pub file_length: u64,
}

/// The output format `path`'s extension names: `.vhdx`/`.avhdx`, `.vhd`/`.avhd`, or one raw
/// images use (`.raw`, `.img`, `.bin`).
pub fn format_from_extension(path: &Path) -> Option<Format> {
    crate::create::format_from_extension(path).or_else(|| is_raw_name(path).then_some(Format::Raw))
}

/// Whether `path` has an extension raw images use (`.raw`, `.img`, `.bin`).
pub fn is_raw_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["raw", "img", "bin"].contains(&e.to_ascii_lowercase().as_str()))
}

/// Opens the source of a conversion: in the format `opts` names, else detected, else — a
/// file with no VHDX or VHD signature whose name says raw ([`is_raw_name`]) — as a raw image.
pub fn open_source(path: &Path, opts: &OpenOptions) -> Result<Disk> {
    match Disk::open_with(path, opts) {
        Err(e) if e.kind() == ErrorKind::NotADisk && opts.format.is_none() && is_raw_name(path) => {
            let raw = OpenOptions {
                format: Some(Format::Raw),
                ..opts.clone()
            };
            Disk::open_with(path, &raw)
        }
        r => r,
    }
}

/// Converts `disk` into a new file at `out` as `opts` describes. `progress(done, total)` is
/// called as the copy advances (bytes of the virtual disk).
///
/// Fails with [`crate::ErrorKind::InvalidArgument`] naming `out` when the output cannot hold the
/// source (a VHD over 2040 GiB, a size that is not a whole number of sectors, for Azure one
/// that is not a whole number of MiB), the options contradict each other, or `out` exists
/// and `opts` does not allow overwriting it; on any failure nothing is left under `out`.
///
/// ```
/// # use vhdx_core::create::{create, CreateOptions};
/// use vhdx_core::ops::convert::{convert, ConvertOptions};
/// use vhdx_core::{Disk, DiskType, Format};
/// # let dir = tempfile::tempdir().unwrap();
/// # let src = dir.path().join("disk.vhdx");
/// # create(&src, &CreateOptions::new().size(32 << 20))?;
/// let out = dir.path().join("azure.vhd");
/// let disk = Disk::open(&src)?;
/// let opts = ConvertOptions::new(Format::Vhd).azure(true).round_up(true);
/// let stats = convert(&disk, &out, &opts, Some(&|done, total| eprintln!("{done}/{total}")))?;
/// assert_eq!(stats.disk_type, Some(DiskType::Fixed));
/// assert_eq!(stats.file_length, (32 << 20) + 512); // data + footer
/// # Ok::<(), vhdx_core::Error>(())
/// ```
pub fn convert(
    disk: &dyn VirtualDisk,
    out: &Path,
    opts: &ConvertOptions,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<ConvertStats> {
    let size = validate(disk, out, opts).map_err(|e| e.in_file(out))?;
    let tmp = temp_path(out)?;
    let result = (|| {
        let mut stats = match opts.format {
            Format::Raw => raw::write(disk, &tmp, progress)?,
            Format::Vhdx | Format::Vhd => image::write(disk, size, &tmp, out, opts, progress)?,
        };
        stats.file_length = std::fs::metadata(&tmp)
            .map_err(|e| Error::io(e, "reading the output's length").in_file(&tmp))?
            .len();
        place(&tmp, out, opts.overwrite)?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Exports `disk` to a sparse raw file at `out`, replacing an existing file: [`convert`] to
/// [`Format::Raw`] with [`ConvertOptions::overwrite`].
pub fn to_raw(
    disk: &dyn VirtualDisk,
    out: &Path,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<ConvertStats> {
    convert(
        disk,
        out,
        &ConvertOptions::new(Format::Raw).overwrite(true),
        progress,
    )
}

/// Refuses what cannot be made before anything is written; returns the output's virtual
/// size.
fn validate(disk: &dyn VirtualDisk, out: &Path, opts: &ConvertOptions) -> Result<u64> {
    let size = output_size(disk.size(), opts)?;
    match opts.format {
        Format::Raw => {
            if opts.disk_type.is_some()
                || opts.block_size.is_some()
                || opts.logical_sector_size.is_some()
            {
                return Err(Error::invalid_argument(
                    "a raw output has no type, block size or sector size; those options are \
                     for VHDX and VHD outputs",
                ));
            }
        }
        Format::Vhdx | Format::Vhd => {
            if opts.disk_type == Some(DiskType::Differencing) {
                return Err(Error::invalid_argument(
                    "a conversion makes a dynamic or fixed disk, not a differencing one",
                ));
            }
            let lss = u64::from(match opts.format {
                Format::Vhd => 512,
                _ => opts
                    .logical_sector_size
                    .unwrap_or(disk.logical_sector_size()),
            });
            if size == 0 || size % lss != 0 {
                return Err(Error::invalid_argument(format!(
                    "the source size {size} is not a whole number of the output's {lss}-byte \
                     sectors"
                ))
                .expected(format!("a nonzero multiple of {lss}"))
                .found(size));
            }
            if opts.format == Format::Vhd && size > MAX_DYNAMIC_SIZE {
                return Err(Error::invalid_argument(format!(
                    "the source ({size} bytes) is larger than a VHD can be"
                ))
                .expected(format!("at most 2040 GiB ({MAX_DYNAMIC_SIZE} bytes)"))
                .found(size));
            }
        }
    }
    match std::fs::metadata(folder_of(out)) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::invalid_argument(
                "the output's folder is not a folder",
            ))
        }
        Err(e) => return Err(Error::io(e, "the output's folder cannot be used")),
    }
    match std::fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() => Err(Error::invalid_argument("the output is a directory")),
        Ok(_) if !opts.overwrite => Err(Error::invalid_argument(
            "the output file already exists (overwriting it was not asked for)",
        )),
        _ => Ok(size),
    }
}

/// Azure's smallest upload: 20 MiB of virtual disk.
const AZURE_MIN_SIZE: u64 = 20 << 20;
/// Azure's size unit: the virtual size must be a whole number of MiB.
const AZURE_UNIT: u64 = 1 << 20;

/// The virtual size of the output for a source of `size` bytes: the same, except for an
/// Azure conversion, which needs a whole number of MiB (and at least 20 MiB) and may round
/// up to it. Refuses options that contradict an Azure conversion, and rounding up without
/// one.
fn output_size(size: u64, opts: &ConvertOptions) -> Result<u64> {
    if !opts.azure {
        if opts.round_up {
            return Err(Error::invalid_argument(
                "rounding the size up is for Azure conversions only; ask for an Azure disk too",
            ));
        }
        return Ok(size);
    }
    let contradiction = if opts.format != Format::Vhd {
        Some(format!("a {} output", opts.format.as_str().to_uppercase()))
    } else if opts.disk_type.is_some_and(|t| t != DiskType::Fixed) {
        opts.disk_type.map(|t| format!("a {} disk", t.as_str()))
    } else if opts.block_size.is_some() {
        Some("a block size (a fixed VHD has no blocks)".to_string())
    } else {
        opts.logical_sector_size
            .filter(|&n| n != 512)
            .map(|n| format!("{n}-byte sectors (a VHD has 512-byte sectors)"))
    };
    if let Some(what) = contradiction {
        return Err(Error::invalid_argument(format!(
            "an Azure disk is a fixed VHD; {what} contradicts it"
        )));
    }
    let wanted = size
        .checked_next_multiple_of(AZURE_UNIT)
        .unwrap_or(u64::MAX)
        .max(AZURE_MIN_SIZE);
    if wanted != size && !opts.round_up {
        let why = if size < AZURE_MIN_SIZE {
            format!("is under Azure's minimum of {}", human_size(AZURE_MIN_SIZE))
        } else {
            format!(
                "is not a whole number of MiB ({} + {}), which Azure requires",
                human_size(size / AZURE_UNIT * AZURE_UNIT),
                human_size(size % AZURE_UNIT)
            )
        };
        return Err(Error::invalid_argument(format!(
            "the source's virtual size of {size} bytes {why}; rounding up (--round-up) would \
             make it {wanted} bytes ({}), the added tail reading as zeros",
            human_size(wanted)
        ))
        .expected(format!(
            "a whole number of MiB, at least {} ({AZURE_MIN_SIZE} bytes)",
            human_size(AZURE_MIN_SIZE)
        ))
        .found(size));
    }
    Ok(wanted)
}

/// The folder `out` is in.
fn folder_of(out: &Path) -> &Path {
    match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The temporary name the output is built under, beside `out`.
pub(crate) fn temp_path(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::invalid_argument("the output path has no file name").in_file(out))?;
    Ok(folder_of(out).join(format!(
        ".{}.convert-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )))
}

/// Moves the complete `tmp` to `out`: a rename when overwriting is allowed, else a hard link
/// (atomic refusal of an existing name) with a checked rename for file systems without links.
pub(crate) fn place(tmp: &Path, out: &Path, overwrite: bool) -> Result<()> {
    let exists = || Error::invalid_argument("the output file already exists").in_file(out);
    let moved = if overwrite {
        std::fs::rename(tmp, out)
    } else {
        match std::fs::hard_link(tmp, out) {
            Ok(()) => std::fs::remove_file(tmp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(exists()),
            Err(_) if out.symlink_metadata().is_ok() => return Err(exists()),
            Err(_) => std::fs::rename(tmp, out),
        }
    };
    moved.map_err(|e| Error::io(e, "moving the output into place").in_file(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, Extent, Status};

    /// A disk of `size` bytes whose first bytes are `data` (zeros after), all reported as
    /// data, as a raw file is.
    struct Bytes {
        data: Vec<u8>,
        size: u64,
    }

    impl VirtualDisk for Bytes {
        fn size(&self) -> u64 {
            self.size
        }
        fn logical_sector_size(&self) -> u32 {
            512
        }
        fn physical_sector_size(&self) -> u32 {
            512
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = *self.data.get(offset as usize + i).unwrap_or(&0);
            }
            Ok(())
        }
        fn block_status(&self, offset: u64, length: u64) -> Result<Extent> {
            let status = Status::Data {
                depth: 0,
                file_offset: Some(offset),
            };
            Ok(Extent {
                offset,
                length,
                status,
            })
        }
    }

    fn bytes(data: Vec<u8>) -> Bytes {
        let size = data.len() as u64;
        Bytes { data, size }
    }

    #[test]
    fn copy_skips_zero_steps_and_splits_at_piece_boundaries() {
        let size = PIECE + (1 << 20);
        let mut data = vec![0u8; size as usize];
        data[100] = 1; // first 64 KiB step
        data[(PIECE - 1) as usize] = 2; // last step of the first piece
        data[PIECE as usize] = 3; // first step of the second piece
        let mut writes = Vec::new();
        let c = copy(
            &bytes(data),
            &mut |b, off| {
                writes.push((off, b.len() as u64));
                Ok(())
            },
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            writes,
            vec![
                (0, ZERO_STEP),
                (PIECE - ZERO_STEP, ZERO_STEP),
                (PIECE, ZERO_STEP)
            ]
        );
        assert_eq!(c.written, 3 * ZERO_STEP);
        assert_eq!(c.written + c.skipped, size);
    }

    #[test]
    fn refusals_name_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.vhd");
        let e = convert(
            &bytes(vec![1; 1000]),
            &out,
            &ConvertOptions::new(Format::Vhd),
            None,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(e.path(), Some(out.as_path()));
        assert_eq!(e.found_value(), Some("1000"));
        std::fs::write(&out, b"x").unwrap();
        let disk = bytes(vec![1; 1024]);
        let e = convert(&disk, &out, &ConvertOptions::new(Format::Vhd), None).unwrap_err();
        assert!(e.message().contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), b"x");
        let opts = ConvertOptions::new(Format::Raw).block_size(1 << 20);
        assert!(convert(&disk, &dir.path().join("o.raw"), &opts, None).is_err());
        // Only the untouched target remains: no temporary files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn azure_sizes() {
        const M: u64 = 1 << 20;
        let azure = || ConvertOptions::new(Format::Vhd).azure(true);
        for (size, round_up, want) in [
            (20 * M, false, Some(20 * M)),
            (21 * M, false, Some(21 * M)),
            (21 * M + 512, false, None),
            (21 * M + 512, true, Some(22 * M)),
            (22 * M - 512, true, Some(22 * M)),
            (3 * M, false, None),
            (512, true, Some(20 * M)),
            (MAX_DYNAMIC_SIZE - 512, true, Some(MAX_DYNAMIC_SIZE)),
        ] {
            let got = output_size(size, &azure().round_up(round_up)).ok();
            assert_eq!(got, want, "{size} {round_up}");
        }
        // Not Azure: the size as it is; rounding up alone is refused.
        let plain = ConvertOptions::new(Format::Vhd);
        assert_eq!(output_size(21 * M + 512, &plain).ok(), Some(21 * M + 512));
        assert!(output_size(21 * M, &plain.round_up(true)).is_err());
        // Fixed, or no type, agrees with Azure; dynamic does not.
        assert!(output_size(20 * M, &azure().disk_type(DiskType::Fixed)).is_ok());
        assert!(output_size(20 * M, &azure().disk_type(DiskType::Dynamic)).is_err());
        assert!(output_size(20 * M, &azure().logical_sector_size(512)).is_ok());
    }

    #[test]
    fn vhd_size_limit() {
        let big = Bytes {
            data: Vec::new(),
            size: MAX_DYNAMIC_SIZE + 512,
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("big.vhd");
        let e = convert(&big, &out, &ConvertOptions::new(Format::Vhd), None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("2040 GiB"), "{e}");
        assert!(!out.exists());
    }
}
