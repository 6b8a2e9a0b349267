//! Creating new disks: VHDX and VHD, fixed, dynamic and differencing (issue #3, item 1).
//!
//! [`CreateOptions`] collects what the caller wants; [`create`] validates it, writes the
//! whole image into a temporary file beside the target (`.NAME.tmp-PID-RANDOM`), flushes it
//! and only then links it into place. An existing target is never overwritten (the final step
//! is a hard link, which fails atomically when the name exists; on file systems without hard
//! links it falls back to a rename after checking again), and a failed create removes the
//! temporary file, so it leaves nothing behind.
//!
//! Defaults (FORMATS.md A.13, B.6):
//! - VHDX: block size 32 MiB for fixed and dynamic disks (Hyper-V's default, marked
//!   unconfirmed in FORMATS.md) and 2 MiB for differencing disks (what Hyper-V uses for
//!   differencing disks; not in FORMATS.md, so also unconfirmed); logical sector 512,
//!   physical sector 4096; log 1 MiB. A differencing disk takes the parent's virtual size and
//!   sector sizes unless given.
//! - VHD: block size 2 MiB; sectors are always 512 bytes (a physical sector size is not
//!   recorded by the format and is ignored).
//!
//! Parent paths are stored the way Windows writes them (backslashes), and so that our own
//! reader (and libvhdi) resolves them again on Linux: the relative path first
//! (`.\parent.vhdx`, `..\dir\parent.vhdx`), then an absolute path of the form `\\?\` + the
//! host's absolute path with `/` turned into `\` (on Linux `\\?\\srv\disks\parent.vhdx`;
//! Windows cannot use that form, but the relative path is the one Windows tries first).
//! No `volume_path` is written: a volume GUID is not known on Linux.

pub(crate) mod vhd;
pub(crate) mod vhdx;

use crate::chain::open_image;
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::ops::info::{DiskType, Format};
use crate::storage::{FileStorage, StorageMut};
use std::fs::{File, OpenOptions as FsOpenOptions};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// 1 MiB.
const MIB: u64 = 1 << 20;

/// What to create. Every field is optional; [`create`] fills in the defaults listed in the
/// module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    format: Option<Format>,
    disk_type: Option<DiskType>,
    size: Option<u64>,
    block_size: Option<u32>,
    logical_sector_size: Option<u32>,
    physical_sector_size: Option<u32>,
    log_size: Option<u32>,
    parent: Option<PathBuf>,
}

impl CreateOptions {
    /// Options with every value at its default (the size must still be set, unless a parent
    /// is given).
    pub fn new() -> Self {
        Self::default()
    }

    /// The container format; by default chosen from the file extension (`.vhdx`/`.avhdx` →
    /// VHDX, `.vhd`/`.avhd` → VHD).
    pub fn format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }

    /// Fixed or dynamic (the default). Differencing is implied by [`CreateOptions::parent`].
    pub fn disk_type(mut self, disk_type: DiskType) -> Self {
        self.disk_type = Some(disk_type);
        self
    }

    /// Virtual size in bytes (a multiple of the logical sector size).
    pub fn size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// Block size in bytes (a power of two; VHDX 1–256 MiB).
    pub fn block_size(mut self, block_size: u32) -> Self {
        self.block_size = Some(block_size);
        self
    }

    /// Logical sector size, 512 or 4096 (VHD: 512 only).
    pub fn logical_sector_size(mut self, n: u32) -> Self {
        self.logical_sector_size = Some(n);
        self
    }

    /// Physical sector size, 512 or 4096 (VHDX only; ignored for VHD).
    pub fn physical_sector_size(mut self, n: u32) -> Self {
        self.physical_sector_size = Some(n);
        self
    }

    /// VHDX log length in bytes (a multiple of 1 MiB; default 1 MiB).
    pub fn log_size(mut self, n: u32) -> Self {
        self.log_size = Some(n);
        self
    }

    /// Makes a differencing disk over `parent` (which must have the same format).
    pub fn parent(mut self, parent: impl Into<PathBuf>) -> Self {
        self.parent = Some(parent.into());
        self
    }
}

/// The format `path`'s extension names, if any.
pub fn format_from_extension(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "vhdx" | "avhdx" => Some(Format::Vhdx),
        "vhd" | "avhd" => Some(Format::Vhd),
        _ => None,
    }
}

/// The facts about a parent that a child records.
#[derive(Debug)]
pub(crate) struct ParentFacts {
    /// Stored `relative_path` / W2ru value (relative to the child's folder, backslashes).
    pub(crate) relative: String,
    /// Stored absolute path (`\\?\…` for VHDX, plain for VHD W2ku).
    pub(crate) absolute: String,
    /// File name of the parent.
    pub(crate) file_name: String,
    /// The parent as opened.
    pub(crate) image: Image,
    /// Modification time of the parent file, seconds since the Unix epoch.
    pub(crate) mtime_unix: u64,
}

/// Creates the disk `path` described by `opts`. Fails with [`ErrorKind::InvalidArgument`]
/// for impossible parameters or an existing target; on any failure no file is left behind.
///
/// ```
/// use vhdx_core::create::{create, CreateOptions};
/// use vhdx_core::{Disk, DiskType, VirtualDisk};
/// # let dir = tempfile::tempdir().unwrap();
/// let base = dir.path().join("base.vhdx");
/// create(&base, &CreateOptions::new().size(64 << 20))?;            // dynamic, 32 MiB blocks
/// let child = dir.path().join("child.avhdx");
/// create(&child, &CreateOptions::new().parent(&base))?;           // differencing
/// let fixed = dir.path().join("fixed.vhd");
/// create(&fixed, &CreateOptions::new().size(16 << 20).disk_type(DiskType::Fixed))?;
/// assert_eq!(Disk::open(&child)?.size(), 64 << 20);
/// assert!(create(&base, &CreateOptions::new().size(1 << 20)).is_err()); // never overwrites
/// # Ok::<(), vhdx_core::Error>(())
/// ```
pub fn create(path: &Path, opts: &CreateOptions) -> Result<()> {
    create_inner(path, opts).map_err(|e| e.in_file(path))
}

fn create_inner(path: &Path, opts: &CreateOptions) -> Result<()> {
    let format = match opts.format {
        Some(f) => f,
        None => format_from_extension(path).ok_or_else(|| {
            Error::invalid_argument(
                "cannot tell the format from the file name: use the extension .vhdx, .avhdx, \
                 .vhd or .avhd, or give the format",
            )
        })?,
    };
    if format == Format::Raw {
        return Err(Error::invalid_argument(
            "only VHDX and VHD disks can be created",
        ));
    }
    if path.symlink_metadata().is_ok() {
        return Err(Error::invalid_argument("the target file already exists"));
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::invalid_argument("the target path has no file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = match &opts.parent {
        Some(p) => Some(parent_facts(p, &dir)?),
        None => None,
    };
    if parent.is_some() && opts.disk_type == Some(DiskType::Fixed) {
        return Err(Error::invalid_argument(
            "a differencing disk (with a parent) cannot be fixed",
        ));
    }
    if parent.is_none() && opts.disk_type == Some(DiskType::Differencing) {
        return Err(Error::invalid_argument(
            "a differencing disk needs a parent",
        ));
    }
    // Validate and plan before touching the file system.
    let plan = match format {
        Format::Vhdx => Plan::Vhdx(vhdx::plan(opts, parent.as_ref())?),
        _ => Plan::Vhd(vhd::plan(opts, parent.as_ref())?),
    };

    let tmp_name = format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    let tmp = dir.join(tmp_name);
    let file = FsOpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io(e, "creating the temporary file"))?;
    let result = write_and_link(file, &tmp, path, &plan);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

enum Plan {
    Vhdx(vhdx::VhdxPlan),
    Vhd(vhd::VhdPlan),
}

fn write_and_link(file: File, tmp: &Path, path: &Path, plan: &Plan) -> Result<()> {
    let storage = FileStorage::from_file(file);
    match plan {
        Plan::Vhdx(p) => vhdx::write(&storage, p)?,
        Plan::Vhd(p) => vhd::write(&storage, p)?,
    }
    storage
        .sync()
        .map_err(|e| Error::io(e, "flushing the new disk"))?;
    drop(storage);
    match std::fs::hard_link(tmp, path) {
        Ok(()) => {
            std::fs::remove_file(tmp).map_err(|e| Error::io(e, "removing the temporary file"))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::invalid_argument("the target file already exists"));
        }
        Err(_) => {
            if path.symlink_metadata().is_ok() {
                return Err(Error::invalid_argument("the target file already exists"));
            }
            std::fs::rename(tmp, path)
                .map_err(|e| Error::io(e, "moving the new disk into place"))?;
        }
    }
    Ok(())
}

/// Preallocates `len` bytes of `storage` (zeros): `fallocate` on Linux where the file system
/// supports it, else the length is set and the file stays sparse (file systems without
/// `fallocate`, other hosts). A real failure such as a full disk is an error.
fn preallocate(storage: &FileStorage, len: u64) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        match crate::storage::sparse::allocate(storage.file(), len) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(Error::io(e, "preallocating the new disk")),
        }
    }
    storage
        .set_len(len)
        .map_err(|e| Error::io(e, "setting the length of the new disk"))
}

/// Current time in seconds since the Unix epoch.
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a child in `child_dir` records about `parent`: the parent opened (alone, without its
/// own parents), its paths as stored (relative to `child_dir`, and absolute) and its
/// modification time.
pub(crate) fn parent_facts(parent: &Path, child_dir: &Path) -> Result<ParentFacts> {
    let abs = std::fs::canonicalize(parent).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::new(ErrorKind::ParentNotFound, "the parent does not exist").in_file(parent)
        } else {
            Error::io(e, "opening the parent").in_file(parent)
        }
    })?;
    let dir = std::fs::canonicalize(child_dir)
        .map_err(|e| Error::io(e, "resolving the target folder").in_file(child_dir))?;
    let meta = std::fs::metadata(&abs)
        .map_err(|e| Error::io(e, "reading the parent's metadata").in_file(parent))?;
    let mtime_unix = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let storage =
        FileStorage::open(&abs).map_err(|e| Error::io(e, "opening the parent").in_file(parent))?;
    let name = abs.to_string_lossy().into_owned();
    let image = open_image(Arc::new(storage), &name, None).map_err(|e| e.in_file(parent))?;
    let file_name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(ParentFacts {
        relative: relative_windows_path(&dir, &abs)?,
        absolute: windows_path(&abs),
        file_name,
        image,
        mtime_unix,
    })
}

/// `path` written with backslashes.
fn windows_path(path: &Path) -> String {
    path.to_string_lossy().replace('/', "\\")
}

/// The path of `target` relative to the folder `dir` (both absolute), with backslashes and a
/// leading `.\` when it does not climb out of `dir`.
fn relative_windows_path(dir: &Path, target: &Path) -> Result<String> {
    let d: Vec<Component> = dir.components().collect();
    let t: Vec<Component> = target.components().collect();
    if d.first() != t.first() {
        return Err(Error::invalid_argument(
            "the parent lies on another drive than the new disk; no relative path exists",
        ));
    }
    let common = d.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = Vec::new();
    for _ in common..d.len() {
        parts.push("..".into());
    }
    if parts.is_empty() {
        parts.push(".".into());
    }
    for c in &t[common..] {
        parts.push(c.as_os_str().to_string_lossy().into_owned());
    }
    Ok(parts.join("\\"))
}

/// Checks a power-of-two block size within `min..=max`.
fn check_block_size(bs: u32, min: u32, max: u32) -> Result<()> {
    if !bs.is_power_of_two() || bs < min || bs > max {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("the block size {bs} is not a power of two between {min} and {max} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let r = |a: &str, b: &str| relative_windows_path(Path::new(a), Path::new(b)).unwrap();
        assert_eq!(r("/a/b", "/a/b/p.vhdx"), r".\p.vhdx");
        assert_eq!(r("/a/b", "/a/c/p.vhdx"), r"..\c\p.vhdx");
        assert_eq!(r("/a/b/c", "/p.vhdx"), r"..\..\..\p.vhdx");
        assert_eq!(r("/a", "/a/x/y/p.vhd"), r".\x\y\p.vhd");
    }

    #[test]
    fn extensions() {
        assert_eq!(
            format_from_extension(Path::new("a.VHDX")),
            Some(Format::Vhdx)
        );
        assert_eq!(
            format_from_extension(Path::new("a.avhd")),
            Some(Format::Vhd)
        );
        assert_eq!(format_from_extension(Path::new("a.img")), None);
    }
}
