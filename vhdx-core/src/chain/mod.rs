//! Opening a disk and its chain of parents: format detection, parent location through the
//! locators (or paths the caller gives), the parent-path policy, linkage verification, loop
//! and depth limits. The result is a [`Disk`]: one image plus its opened parent, which
//! implements [`VirtualDisk`] for the whole chain.

mod paths;

pub use paths::{host_path_from_windows, is_inside, without_cur_dir};

use crate::disk::{layer_extents, layer_status, read_layer, Extent, Layer, Segment, VirtualDisk};
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::ops::info::{
    chain_usage, ChainEntry, ChainUsage, DiskType, Format, Info, LocatorInfo, ParentInfo,
};
use crate::raw::RawImage;
use crate::report::Report;
use crate::storage::{FileStorage, MemStorage, MmapStorage, Storage};
use crate::vhd::Vhd;
use crate::vhdx::Vhdx;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// How a locator's path is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocatorKind {
    /// A path relative to the child's folder.
    Relative,
    /// An absolute (usually Windows) path.
    Absolute,
    /// Not a path (linkage GUIDs and other informational keys).
    Other,
}

/// One parent locator entry of a differencing image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    /// The key or platform code (`relative_path`, `W2ku`, `parent_unicode_name`, …).
    pub key: String,
    /// The stored value.
    pub value: String,
    /// How the value is used to find the parent.
    pub kind: LocatorKind,
}

/// What a differencing image needs from its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRequest {
    /// Locators in the order they should be tried.
    pub locators: Vec<Locator>,
    /// Identities the parent may carry (any one matches).
    pub expected: Vec<Uuid>,
    /// The name of the identity, for messages (`"DataWriteGuid"`, `"UniqueId"`).
    pub id_name: &'static str,
    /// The format the parent must have.
    pub format: Format,
    /// The logical sector size the parent must have (the child's).
    pub logical_sector_size: u32,
}

/// Which parent paths may be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParentPolicy {
    /// Every locator, in the format's order.
    #[default]
    Default,
    /// Only relative locators that stay inside the child's folder tree, and paths the caller
    /// names: for untrusted evidence, where a crafted locator could point anywhere.
    Strict,
}

/// How image files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Positional reads (`pread`): safe against files changing underneath.
    #[default]
    File,
    /// A read-only memory map.
    Mmap,
}

/// Deepest chain accepted: real checkpoint chains are far shorter; a deeper one is a loop
/// the path comparison could not see or a crafted file.
pub const MAX_CHAIN_DEPTH: usize = 256;

/// Options for opening a disk.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Parent paths given by the caller, nearest first; they replace the locators level by
    /// level.
    pub parents: Vec<PathBuf>,
    /// Which locator paths may be followed.
    pub policy: ParentPolicy,
    /// Whether a parent whose identity does not match the child's record is refused.
    pub verify_linkage: bool,
    /// Whether a differencing disk whose parent cannot be opened fails the open (true) or
    /// opens with reads of parent ranges failing (false, for `info`).
    pub require_parent: bool,
    /// Maximum chain depth (parents below the disk).
    pub max_depth: usize,
    /// The read backend.
    pub backend: Backend,
    /// Treat the file as this format instead of detecting it.
    pub format: Option<Format>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            parents: Vec::new(),
            policy: ParentPolicy::Default,
            verify_linkage: true,
            require_parent: true,
            max_depth: MAX_CHAIN_DEPTH,
            backend: Backend::File,
            format: None,
        }
    }
}

/// An opened disk: one image and, for a differencing image, its opened parent chain.
#[derive(Debug)]
pub struct Disk {
    path: Option<PathBuf>,
    /// Boxed: an image holds kilobytes of headers, and opening a chain recurses once per
    /// level, so a deep chain must not carry one on the stack per level.
    image: Box<Image>,
    parent: Option<Arc<Disk>>,
    parent_info: Option<ParentInfo>,
    parent_error: Option<(ErrorKind, String)>,
}

/// Detects the format of an image from its signatures: `vhdxfile` at 0, `conectix` at 0
/// (dynamic VHD) or in the last 512 bytes (fixed VHD). `None` when neither is present.
pub fn detect_format(storage: &dyn Storage) -> Result<Option<Format>> {
    let len = storage
        .len()
        .map_err(|e| Error::io(e, "reading the file length"))?;
    // A fixed VHD is raw disk bytes plus a footer, so its payload may itself start with an
    // image signature (a VHDX stored inside a fixed VHD). A valid fixed footer whose size
    // accounts for the whole file therefore wins over the signature at offset 0.
    if len >= 512 {
        let footer: crate::format::vhd::footer::Footer =
            crate::storage::read_struct(storage, len - 512, "VHD footer")?;
        if footer.cookie_ok()
            && footer.checksum_ok()
            && footer.disk_type.get() == crate::format::vhd::footer::DISK_TYPE_FIXED
            && footer.current_size.get().checked_add(512) == Some(len)
        {
            return Ok(Some(Format::Vhd));
        }
    }
    let mut sig = [0u8; 8];
    if len >= 8 {
        storage
            .read_exact_at(&mut sig, 0)
            .map_err(|e| Error::read_failed("file signature", 0, e))?;
        if &sig == b"vhdxfile" {
            return Ok(Some(Format::Vhdx));
        }
        if &sig == b"conectix" {
            return Ok(Some(Format::Vhd));
        }
    }
    if len >= 512 {
        storage
            .read_exact_at(&mut sig, len - 512)
            .map_err(|e| Error::read_failed("VHD footer", len - 512, e))?;
        if &sig == b"conectix" {
            return Ok(Some(Format::Vhd));
        }
    }
    if len >= 511 {
        // Pre-2004 Virtual PC wrote a 511-byte footer.
        storage
            .read_exact_at(&mut sig, len - 511)
            .map_err(|e| Error::read_failed("VHD footer", len - 511, e))?;
        if &sig == b"conectix" {
            return Ok(Some(Format::Vhd));
        }
    }
    Ok(None)
}

fn format_from_extension(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "vhdx" | "avhdx" => Some(Format::Vhdx),
        "vhd" | "avhd" => Some(Format::Vhd),
        "raw" | "img" | "bin" => Some(Format::Raw),
        _ => None,
    }
}

fn open_storage(path: &Path, backend: Backend) -> Result<Arc<dyn Storage>> {
    let r: std::io::Result<Arc<dyn Storage>> = match backend {
        Backend::File => FileStorage::open(path).map(|s| Arc::new(s) as Arc<dyn Storage>),
        Backend::Mmap => MmapStorage::open(path).map(|s| Arc::new(s) as Arc<dyn Storage>),
    };
    r.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            return Error::new(ErrorKind::Io, "no such file")
                .os_code(e.raw_os_error())
                .in_file(path);
        }
        Error::io(e, "cannot open the file").in_file(path)
    })
}

/// Opens one image (no parents) from storage.
pub fn open_image(storage: Arc<dyn Storage>, name: &str, format: Option<Format>) -> Result<Image> {
    let format = match format {
        Some(f) => Some(f),
        None => detect_format(&*storage)?,
    };
    let format = match format {
        Some(f) => f,
        None => return Err(Error::new(
            ErrorKind::NotADisk,
            "not a VHDX or VHD image: no `vhdxfile` signature at offset 0 and no `conectix` footer",
        )
        .structure("file signature")
        .offset(0)),
    };
    Ok(match format {
        Format::Vhdx => Image::Vhdx(Vhdx::open(storage, name)?),
        Format::Vhd => Image::Vhd(Vhd::open(storage, name)?),
        Format::Raw => Image::Raw(RawImage::open(storage, name)?),
    })
}

impl Disk {
    /// Opens the disk at `path` with default options (parents located through the locators,
    /// linkage verified).
    pub fn open(path: impl AsRef<Path>) -> Result<Disk> {
        Disk::open_with(path, &OpenOptions::default())
    }

    /// Opens the disk at `path` and its parent chain.
    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Disk> {
        let path = path.as_ref();
        let mut seen = HashSet::new();
        open_chain(path, None, opts, 0, &mut seen)
    }

    /// Opens the disk at `path` reading its own image through `storage` (the write path's
    /// journal over the file), and its parents from their files as usual.
    pub(crate) fn open_over(
        path: &Path,
        storage: Arc<dyn Storage>,
        opts: &OpenOptions,
    ) -> Result<Disk> {
        let mut seen = HashSet::new();
        open_chain(path, Some(storage), opts, 0, &mut seen)
    }

    /// Opens an image held in memory (no parents can be located; a differencing image opens
    /// with parent reads failing).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Disk> {
        Disk::from_storage(Arc::new(MemStorage::new(bytes)), "<memory>")
    }

    /// Opens an image from any storage backend (no parents can be located; a differencing
    /// image opens with parent reads failing). `name` is used in messages.
    pub fn from_storage(storage: Arc<dyn Storage>, name: &str) -> Result<Disk> {
        let image = open_image(storage, name, None)?;
        let mut disk = Disk {
            path: None,
            image: Box::new(image),
            parent: None,
            parent_info: None,
            parent_error: None,
        };
        if let Some(req) = disk.image.file().parent_request() {
            let msg =
                "the image was opened from memory, so its parent cannot be located".to_string();
            disk.parent_info = Some(parent_info_base(&req, "not_opened"));
            disk.parent_error = Some((ErrorKind::ParentNotFound, msg));
        }
        Ok(disk)
    }

    /// Opens a chain whose images are all held in storages rather than found through
    /// locators (images in memory, fuzzing, callers that already opened the files):
    /// `images[0]` is the disk, `images[1]` its parent, and so on, each with the name used in
    /// messages. Each parent must pass the same linkage check as a parent found on disk —
    /// format, logical sector size and identity (`opts.verify_linkage`, the explicit
    /// override) — and locators are never followed, so `opts.parents` and `opts.policy` play
    /// no part. `opts.format` applies to the first image; `opts.max_depth` bounds the chain.
    /// A differencing image at the end of the list fails with
    /// [`ErrorKind::ParentNotFound`] when `opts.require_parent` is set, and otherwise opens
    /// with reads of parent ranges failing (as [`Disk::from_storage`]). A parent given to an
    /// image that has none is an [`ErrorKind::InvalidArgument`].
    pub fn from_storages(
        images: Vec<(Arc<dyn Storage>, String)>,
        opts: &OpenOptions,
    ) -> Result<Disk> {
        let depth = images.len().saturating_sub(1);
        if depth > opts.max_depth {
            return Err(Error::new(
                ErrorKind::ChainLoop,
                format!("{depth} parents given; the limit is {}", opts.max_depth),
            ));
        }
        // Every image first, then the links from the bottom up (no recursion: a long list
        // costs no stack).
        let mut opened = Vec::with_capacity(images.len());
        for (i, (storage, name)) in images.into_iter().enumerate() {
            let format = if i == 0 { opts.format } else { None };
            opened.push((open_image(storage, &name, format)?, name));
        }
        let mut below: Option<(Disk, String)> = None;
        while let Some((image, name)) = opened.pop() {
            let mut disk = Disk {
                path: None,
                image: Box::new(image),
                parent: None,
                parent_info: None,
                parent_error: None,
            };
            match (disk.image.file().parent_request(), below.take()) {
                (None, None) => {}
                (None, Some(_)) => {
                    return Err(Error::invalid_argument(format!(
                        "{name} is not a differencing image, yet a parent was given"
                    )))
                }
                (Some(req), None) => {
                    let msg = "no storage was given for the parent".to_string();
                    if opts.require_parent {
                        return Err(
                            Error::new(ErrorKind::ParentNotFound, msg).structure("parent locator")
                        );
                    }
                    disk.parent_info = Some(parent_info_base(&req, "not_opened"));
                    disk.parent_error = Some((ErrorKind::ParentNotFound, msg));
                }
                (Some(req), Some((parent, parent_name))) => {
                    let mut pinfo = parent_info_base(&req, "not_opened");
                    pinfo.resolved_path = Some(parent_name.clone());
                    check_linkage(&parent, &parent_name, &req, opts, &mut pinfo)?;
                    disk.parent = Some(Arc::new(parent));
                    disk.parent_info = Some(pinfo);
                }
            }
            below = Some((disk, name));
        }
        below
            .map(|(d, _)| d)
            .ok_or_else(|| Error::invalid_argument("no image given"))
    }

    /// The image of this disk (without parents).
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// The path the disk was opened from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The opened parent, if any.
    pub fn parent(&self) -> Option<&Arc<Disk>> {
        self.parent.as_ref()
    }

    /// The format of this image.
    pub fn format(&self) -> Format {
        self.image.file().format()
    }

    /// The type of this image.
    pub fn disk_type(&self) -> DiskType {
        self.image.file().disk_type()
    }

    /// The parent link and what became of it (differencing disks only).
    pub fn parent_info(&self) -> Option<&ParentInfo> {
        self.parent_info.as_ref()
    }

    /// Every image of the chain, this one first.
    pub fn chain(&self) -> Vec<&Disk> {
        let mut v = vec![self];
        let mut cur = self;
        while let Some(p) = &cur.parent {
            v.push(p);
            cur = p;
        }
        v
    }

    /// Facts for `vhdx info`; `scan` forces block statistics on large block tables.
    pub fn info(&self, scan: bool) -> Result<Info> {
        let mut info = self.image.file().info(scan)?;
        info.path = self.path.as_ref().map(|p| p.display().to_string());
        info.parent = self.parent_info.clone();
        info.chain = self
            .chain()
            .iter()
            .map(|d| ChainEntry {
                path: d
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "<memory>".into()),
                format: d.format(),
                disk_type: d.disk_type(),
            })
            .collect();
        if let Some(p) = &self.path {
            info.host_allocated_bytes = host_allocated_bytes(p);
        }
        if self.disk_type() == DiskType::Differencing {
            let paths = info.chain.iter().map(|c| c.path.clone()).collect();
            match self.chain_usage(scan, paths) {
                Ok(usage) => info.chain_usage = Some(usage),
                Err(note) => info.chain_usage_note = Some(note),
            }
        }
        // What the guest sees; a disk whose guest cannot be read (a parent missing, a
        // damaged partition table) still gets its info, with the reason as a note.
        if let Some(d) = self.chain().iter().find(|d| d.parent_error.is_some()) {
            let name = d
                .path
                .as_ref()
                .map_or_else(|| "<memory>".into(), |p| p.display().to_string());
            info.guest_note = Some(format!(
                "not read: the parent of {name} is not open; pass --parent PATH (Python: \
                 parent=...) to see the partitions and volumes"
            ));
        } else {
            match crate::guest::inspect(self) {
                Ok(layout) => info.guest = Some(layout),
                Err(e) => info.guest_note = Some(format!("the guest layout cannot be read: {e}")),
            }
        }
        Ok(info)
    }

    /// Where the chain's bytes are read from, under the same bound as the block statistics:
    /// walked by default only while the chain's block tables together stay within the
    /// format's `INFO_SCAN_LIMIT` entries, always with `scan`. `Err` is the note saying why
    /// it was not computed. Info reports what it can, so a chain that cannot be walked
    /// (a parent missing, a damaged table) becomes a note rather than an error.
    fn chain_usage(
        &self,
        scan: bool,
        paths: Vec<String>,
    ) -> std::result::Result<ChainUsage, String> {
        let chain = self.chain();
        if let Some(d) = chain.iter().find(|d| d.parent_error.is_some()) {
            let name = d
                .path
                .as_ref()
                .map_or_else(|| "<memory>".into(), |p| p.display().to_string());
            return Err(format!(
                "not computed: the parent of {name} is not open; pass --parent PATH (Python: \
                 parent=...) to see where the virtual disk's bytes are read from"
            ));
        }
        let entries: u64 = chain.iter().map(|d| d.block_table_entries()).sum();
        let limit = match self.format() {
            Format::Vhd => crate::vhd::INFO_SCAN_LIMIT,
            Format::Vhdx | Format::Raw => crate::vhdx::INFO_SCAN_LIMIT,
        };
        if !scan && entries > limit {
            return Err(format!(
                "not scanned: the block tables of the chain have {entries} entries; pass --scan \
                 (Python: scan=True) to see where the virtual disk's bytes are read from"
            ));
        }
        chain_usage(self, paths).map_err(|e| format!("not computed: {e}"))
    }

    /// Entries of this image's block table (0 for images without one): the unit of work of
    /// an allocation walk.
    fn block_table_entries(&self) -> u64 {
        match &*self.image {
            Image::Vhdx(v) => v.bat().len(),
            Image::Vhd(v) => v.sparse().map_or(0, |s| s.blocks),
            Image::Raw(_) => 0,
        }
    }

    /// Checks every structure of this image (not its parents) and the parent link.
    pub fn check(&self) -> Report {
        let mut report = Report::default();
        for f in self.image.file().findings() {
            report.push(f);
        }
        self.image.file().check(&mut report);
        if let Some((kind, msg)) = &self.parent_error {
            report.add(
                crate::report::Severity::Warning,
                "parent link",
                None,
                format!("{kind}: {msg}"),
            );
        }
        report
    }
}

#[cfg(unix)]
fn host_allocated_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.blocks() * 512)
}

#[cfg(not(unix))]
fn host_allocated_bytes(_path: &Path) -> Option<u64> {
    None
}

fn parent_info_base(req: &ParentRequest, status: &str) -> ParentInfo {
    ParentInfo {
        locators: req
            .locators
            .iter()
            .map(|l| LocatorInfo {
                key: l.key.clone(),
                value: l.value.clone(),
            })
            .collect(),
        expected_ids: req.expected.iter().map(|u| format!("{{{u}}}")).collect(),
        status: status.to_string(),
        resolved_path: None,
        actual_id: None,
        tried: Vec::new(),
        error: None,
    }
}

fn canonical_key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Opens the image at `path` (through `top` when given) without its parent.
fn open_one(
    path: &Path,
    top: Option<Arc<dyn Storage>>,
    opts: &OpenOptions,
    level: usize,
    seen: &mut HashSet<PathBuf>,
) -> Result<Disk> {
    if !seen.insert(canonical_key(path)) {
        return Err(Error::new(
            ErrorKind::ChainLoop,
            "the parent chain leads back to a disk already in it",
        )
        .in_file(path));
    }
    let storage = match top {
        Some(s) => s,
        None => open_storage(path, opts.backend)?,
    };
    let name = path.display().to_string();
    // The caller's format (for the disk itself), else the signatures, else a raw image
    // named by its extension.
    let format = match opts.format.filter(|_| level == 0) {
        Some(f) => Some(f),
        None => detect_format(&*storage)
            .map_err(|e| e.in_file(path))?
            .or_else(|| format_from_extension(path).filter(|f| *f == Format::Raw)),
    };
    let image = open_image(storage, &name, format).map_err(|e| e.in_file(path))?;
    Ok(Disk {
        path: Some(path.to_path_buf()),
        image: Box::new(image),
        parent: None,
        parent_info: None,
        parent_error: None,
    })
}

/// A disk of a chain being opened whose parent is opened next.
struct Pending {
    disk: Disk,
    path: PathBuf,
    req: ParentRequest,
    pinfo: ParentInfo,
    parent: PathBuf,
}

/// Gives `disk` its parent (`found`), or records why it has none: the open fails when
/// `opts.require_parent` is set.
fn attach(
    mut disk: Disk,
    mut pinfo: ParentInfo,
    found: Result<Disk>,
    opts: &OpenOptions,
) -> Result<Disk> {
    match found {
        Ok(parent) => disk.parent = Some(Arc::new(parent)),
        Err(e) => {
            pinfo.error = Some(e.to_string());
            if opts.require_parent {
                return Err(e);
            }
            disk.parent_error = Some((e.kind(), e.to_string()));
        }
    }
    disk.parent_info = Some(pinfo);
    Ok(disk)
}

/// Opens the disk at `path` and its parents. The chain is walked down in a loop, not by
/// recursion, so its depth (up to [`OpenOptions::max_depth`]) costs no stack; each parent
/// is then checked against its child's record on the way back up.
fn open_chain(
    path: &Path,
    top: Option<Arc<dyn Storage>>,
    opts: &OpenOptions,
    first_level: usize,
    seen: &mut HashSet<PathBuf>,
) -> Result<Disk> {
    let mut pending: Vec<Pending> = Vec::new();
    let mut cur = path.to_path_buf();
    let mut top = top;
    let mut level = first_level;
    let mut below = loop {
        let disk = match open_one(&cur, top.take(), opts, level, seen) {
            Ok(d) => d,
            Err(e) => break Err(e),
        };
        let Some(req) = disk.image.file().parent_request() else {
            break Ok(disk);
        };
        let mut pinfo = parent_info_base(&req, "not_opened");
        match find_parent(&cur, &req, opts, level, &mut pinfo) {
            Ok(parent) => {
                let next = parent.clone();
                pending.push(Pending {
                    disk,
                    path: cur,
                    req,
                    pinfo,
                    parent,
                });
                cur = next;
                level += 1;
            }
            Err(e) => break attach(disk, pinfo, Err(e), opts),
        }
    };
    while let Some(mut p) = pending.pop() {
        let found = match below {
            Ok(parent) => {
                let name = p.parent.display().to_string();
                p.pinfo.resolved_path = Some(name.clone());
                check_linkage(&parent, &name, &p.req, opts, &mut p.pinfo)
                    .map(|()| parent)
                    .map_err(|e| e.in_file(&p.path))
            }
            Err(e) => {
                p.pinfo.status = "error".into();
                Err(e)
            }
        };
        below = attach(p.disk, p.pinfo, found, opts);
    }
    below
}

/// The path of the parent of `child` (at chain `level`) under `opts`: the caller's path for
/// the level, else the first locator the policy allows that names an existing file.
/// Records what was tried in `pinfo`.
fn find_parent(
    child: &Path,
    req: &ParentRequest,
    opts: &OpenOptions,
    level: usize,
    pinfo: &mut ParentInfo,
) -> Result<PathBuf> {
    if level + 1 > opts.max_depth {
        pinfo.status = "refused".into();
        return Err(Error::new(
            ErrorKind::ChainLoop,
            format!(
                "the parent chain is deeper than the limit of {}",
                opts.max_depth
            ),
        )
        .in_file(child));
    }
    let child_dir = child.parent().unwrap_or(Path::new("")).to_path_buf();
    let child_dir = if child_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        child_dir
    };
    // Candidates: the caller's path for this level, else the locators in order.
    let mut candidates: Vec<(String, PathBuf)> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    let mut unusable: Vec<String> = Vec::new();
    if let Some(p) = opts.parents.get(level) {
        candidates.push(("--parent".into(), p.clone()));
    } else {
        for l in &req.locators {
            if l.kind == LocatorKind::Other {
                continue;
            }
            let Some(converted) = host_path_from_windows(&l.value) else {
                unusable.push(format!(
                    "{} ({}: a Windows drive or volume path, not usable on this host)",
                    l.value, l.key
                ));
                continue;
            };
            let host = without_cur_dir(&if l.kind == LocatorKind::Relative {
                child_dir.join(converted)
            } else {
                converted
            });
            if opts.policy == ParentPolicy::Strict
                && (l.kind != LocatorKind::Relative || !is_inside(&child_dir, &host))
            {
                refused.push(format!(
                    "{} ({}: {}) refused by the strict parent policy: {}",
                    host.display(),
                    l.key,
                    l.value,
                    if l.kind == LocatorKind::Relative {
                        "it leaves the child's folder tree"
                    } else {
                        "only relative paths are followed"
                    }
                ));
                continue;
            }
            if !candidates.iter().any(|(_, p)| *p == host) {
                candidates.push((l.key.clone(), host));
            }
        }
    }
    let mut tried = Vec::new();
    for (key, cand) in &candidates {
        tried.push(format!("{} ({key})", cand.display()));
        if !cand.is_file() {
            continue;
        }
        pinfo.tried = tried;
        return Ok(cand.clone());
    }
    tried.extend(unusable);
    pinfo.tried = tried.clone();
    pinfo.status = if candidates.is_empty() && !refused.is_empty() {
        "refused".into()
    } else {
        "not_found".into()
    };
    let mut msg = String::from("the parent disk was not found; tried: ");
    if tried.is_empty() {
        msg.push_str("(no usable locator)");
    } else {
        msg.push_str(&tried.join(", "));
    }
    if !refused.is_empty() {
        msg.push_str("; ");
        msg.push_str(&refused.join("; "));
    }
    msg.push_str(". Pass the parent's path with --parent (Python: parent=...)");
    let kind = if candidates.is_empty() && !refused.is_empty() {
        ErrorKind::PolicyRefused
    } else {
        ErrorKind::ParentNotFound
    };
    Err(Error::new(kind, msg)
        .structure("parent locator")
        .in_file(child))
}

/// Checks that `parent` (named `name` in messages) is the parent `req` describes: its
/// format, its logical sector size and — unless `opts.verify_linkage` is off, the caller's
/// explicit override — its identity. Records the outcome in `pinfo`.
fn check_linkage(
    parent: &Disk,
    name: &str,
    req: &ParentRequest,
    opts: &OpenOptions,
    pinfo: &mut ParentInfo,
) -> Result<()> {
    let actual = parent.image.file().linkage_id();
    pinfo.actual_id = Some(format!("{{{actual}}}"));
    if parent.format() != req.format {
        pinfo.status = "error".into();
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the parent {name} is a {} image; a {} differencing disk needs a {} parent",
                parent.format().as_str(),
                req.format.as_str(),
                req.format.as_str()
            ),
        ));
    }
    if parent.image.file().logical_sector_size() != req.logical_sector_size {
        pinfo.status = "error".into();
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "the parent {name} has {}-byte logical sectors; its child has {}",
                parent.image.file().logical_sector_size(),
                req.logical_sector_size
            ),
        )
        .structure("parent linkage"));
    }
    if req.expected.contains(&actual) {
        pinfo.status = "ok".into();
        return Ok(());
    }
    if !opts.verify_linkage {
        pinfo.status = "ignored_mismatch".into();
        return Ok(());
    }
    pinfo.status = "linkage_mismatch".into();
    Err(Error::new(
        ErrorKind::LinkageMismatch,
        format!(
            "the parent {name} is not the disk this child was made from: its {} differs",
            req.id_name
        ),
    )
    .structure("parent linkage")
    .expected(
        req.expected
            .iter()
            .map(|u| format!("{{{u}}}"))
            .collect::<Vec<_>>()
            .join(" or "),
    )
    .found(format!("{{{actual}}}")))
}

impl Layer for Disk {
    fn layer_size(&self) -> u64 {
        self.image.file().layer_size()
    }
    fn storage(&self) -> &dyn Storage {
        self.image.file().storage()
    }
    fn resolve(&self, offset: u64, length: u64, out: &mut Vec<Segment>) -> Result<()> {
        self.image.file().resolve(offset, length, out)
    }
    fn parent_disk(&self) -> Result<Option<&dyn VirtualDisk>> {
        if let Some(p) = &self.parent {
            return Ok(Some(&**p as &dyn VirtualDisk));
        }
        if let Some((kind, msg)) = &self.parent_error {
            return Err(Error::new(*kind, msg.clone()));
        }
        Ok(None)
    }
    fn describe(&self) -> String {
        self.image.file().describe()
    }
    fn tolerate_short_data(&self) -> bool {
        self.image.file().tolerate_short_data()
    }
}

impl VirtualDisk for Disk {
    fn size(&self) -> u64 {
        self.layer_size()
    }
    fn logical_sector_size(&self) -> u32 {
        self.image.file().logical_sector_size()
    }
    fn physical_sector_size(&self) -> u32 {
        self.image.file().physical_sector_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        read_layer(self, buf, offset).map_err(|e| match &self.path {
            Some(p) => e.in_file(p),
            None => e,
        })
    }
    fn block_status(&self, offset: u64, length: u64) -> Result<Extent> {
        layer_status(self, offset, length)
    }
    fn visit_extents(
        &self,
        offset: u64,
        length: u64,
        f: &mut dyn FnMut(Extent) -> Result<()>,
    ) -> Result<()> {
        layer_extents(self, offset, length, f)
    }
    fn host_file(&self, depth: u32) -> Option<&std::fs::File> {
        let mut disk = self;
        for _ in 0..depth {
            disk = disk.parent.as_deref()?;
        }
        disk.image.file().storage().as_file()
    }
}
