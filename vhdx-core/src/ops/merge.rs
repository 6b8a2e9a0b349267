//! `vhdx merge` and `vhdx flatten`: fold the content of differencing disks into one disk.
//!
//! [`merge`] writes what a differencing disk and the disks between it and one of its
//! ancestors hold into that ancestor (like Hyper-V's `Merge-VHD`), so that the ancestor then
//! reads exactly as the child did; [`flatten`] writes a whole chain into a new standalone
//! disk (a [`convert`] of the chain).
//!
//! # How a merge works
//! 1. The child's chain is opened read-only (no locks, a dirty log replayed in memory). The
//!    child and the disks between it and the ancestor are then locked as QEMU locks backing
//!    files, so nobody writes them during the merge; they are only read.
//! 2. Before anything is written, the chain's allocation map gives the ranges some disk
//!    above the ancestor holds: data, or an explicit zero (a VHDX ZERO block). Only these
//!    ranges are ever read, so the read-only view never looks at the ancestor that is
//!    about to change.
//! 3. The ancestor is opened for writing ([`crate::WritableDisk`]: locked, crash-safe). Zero
//!    ranges are trimmed; data is written in pieces of at most 8 MiB; an all-zero piece is
//!    trimmed, or skipped where the ancestor already reads zeros. Then it is closed.
//! 4. With [`MergeOptions::delete`], the merged disks are removed, only after the ancestor
//!    was closed.
//!
//! # Crash safety
//! Every change goes through the write path's commits, so a merge killed at any moment
//! leaves an ancestor that opens and checks clean, holding its old content with some of
//! the child's ranges already written. The merged disks are never changed, so running the
//! merge again writes the same bytes again and completes it.
//!
//! One thing stands in the way of that re-run: the first write gives a VHDX ancestor a new
//! DataWriteGuid, which the child (or the disk just above the ancestor) no longer matches.
//! So before the first write a small marker file is put beside the ancestor,
//! `.NAME.vhdx-merge`, naming the child (its identity) and the ancestor's identity before
//! the merge; a later merge of the same child into the same ancestor accepts that one
//! mismatch, and the marker is removed once the ancestor is closed. Any other mismatch is
//! refused as a normal open refuses it.
//!
//! # Other children of the ancestor
//! A merge changes the ancestor's content (a VHDX gets a new DataWriteGuid, as with Hyper-V),
//! so every other differencing disk made from it, or from a merged disk, no longer reads
//! what it was made over. [`merge`] looks for such disks in the folders of the merged disks
//! and of the ancestor and lists them in [`MergeStats::invalidated`].

use super::convert::{convert, ConvertOptions, ConvertStats};
use crate::bytes::is_zero;
use crate::chain::{Disk, OpenOptions};
use crate::disk::{Status, VirtualDisk};
use crate::error::{Error, ErrorKind, Result};
use crate::ops::info::{DiskType, Format};
use crate::storage::lock::{lock_unchanging, LockError};
use crate::WritableDisk;
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to merge into, and what to do afterwards.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// The ancestor to merge into, by path (any path naming the same file); `None` merges
    /// into the child's immediate parent.
    pub into: Option<PathBuf>,
    /// Remove the child and the disks between it and the ancestor once the merge is
    /// complete and the ancestor closed.
    pub delete: bool,
    /// How the child's chain is opened (parents given by the caller, path policy, linkage
    /// verification). `require_parent` is ignored: a merge needs the whole chain.
    pub open: OpenOptions,
}

/// A differencing disk that a merge leaves reading something other than what it was made
/// over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invalidated {
    /// The differencing disk.
    pub path: String,
    /// The disk its parent link names: the ancestor, or one of the merged disks.
    pub parent: String,
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergeStats {
    /// The child whose content was merged.
    pub child: String,
    /// The ancestor written.
    pub ancestor: String,
    /// Format of the chain.
    pub format: Format,
    /// The disks whose content went into the ancestor, the child first.
    pub merged: Vec<String>,
    /// Virtual size.
    pub size: u64,
    /// Bytes of the virtual disk that the merged disks hold (data and explicit zeros).
    pub bytes_merged: u64,
    /// Bytes of data written into the ancestor.
    pub bytes_written: u64,
    /// Bytes made to read as zeros in the ancestor (trimmed).
    pub bytes_zeroed: u64,
    /// Bytes of zeros not written because the ancestor already read zeros there.
    pub bytes_skipped: u64,
    /// The name of the ancestor's identity that children record: `"DataWriteGuid"` (VHDX)
    /// or `"UniqueId"` (VHD).
    pub linkage_id_name: &'static str,
    /// The ancestor's identity before this run (braced GUID).
    pub linkage_id_before: String,
    /// The ancestor's identity after the merge: a VHDX gets a new DataWriteGuid when its
    /// content changes; a VHD keeps its UniqueId.
    pub linkage_id_after: String,
    /// Whether this run completed a merge that had been interrupted.
    pub resumed: bool,
    /// The files removed (with [`MergeOptions::delete`]).
    pub deleted: Vec<String>,
    /// Differencing disks beside the merged ones and the ancestor that the merge
    /// invalidated: made from the ancestor or from a merged disk, when the ancestor changed;
    /// made from a disk removed.
    pub invalidated: Vec<Invalidated>,
    /// Seconds the merge took.
    pub seconds: f64,
}

/// Read and write unit of a merge (as in [`convert`]): a power of two, so pieces align with
/// every block size.
const PIECE: u64 = 8 << 20;
/// Unit of a zero range handed to one trim: bounds the metadata one call stages.
const TRIM_PIECE: u64 = 64 << 20;

/// A range of the virtual disk a disk above the ancestor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    offset: u64,
    length: u64,
    /// Data to copy (`false`: an explicit zero).
    data: bool,
}

/// Merges `child` into one of its ancestors as `opts` says (see the module documentation).
/// `progress(done, total)` is called as the merge advances (bytes of the ranges the merged
/// disks hold), last with `done == total`.
///
/// Refused before anything is written when `child` is not a differencing disk, when
/// [`MergeOptions::into`] is not in its chain, when the ancestor's size differs from the
/// child's, when a disk of the chain does not match its child's record (except after an
/// interrupted merge of this child), and when the ancestor or a merged disk is in use.
///
/// ```
/// # use vhdx_core::create::{create, CreateOptions};
/// use vhdx_core::ops::merge::{merge, MergeOptions};
/// use vhdx_core::{Disk, VirtualDisk};
/// # let dir = tempfile::tempdir().unwrap();
/// # let base = dir.path().join("base.vhdx");
/// # create(&base, &CreateOptions::new().size(8 << 20))?;
/// let child = dir.path().join("child.avhdx");
/// create(&child, &CreateOptions::new().parent(&base))?;
/// let w = Disk::open_rw(&child, &Default::default())?;
/// w.write_at(b"checkpoint", 4096)?;
/// w.close()?;
/// let stats = merge(&child, &MergeOptions::default(), None)?; // into its parent
/// assert_eq!(stats.merged.len(), 1);
/// let mut buf = [0u8; 10];
/// Disk::open(&base)?.read_at(&mut buf, 4096)?;
/// assert_eq!(&buf, b"checkpoint");
/// # Ok::<(), vhdx_core::Error>(())
/// ```
pub fn merge(
    child: &Path,
    opts: &MergeOptions,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<MergeStats> {
    let start = Instant::now();
    let mut open = opts.open.clone();
    open.require_parent = true;
    // Mismatches are judged below, where an interrupted merge of this child is recognised.
    open.verify_linkage = false;
    let disk = Disk::open_with(child, &open)?;
    let chain = disk.chain();
    if chain.len() < 2 {
        return Err(Error::invalid_argument(
            "not a differencing disk: it has no parent to merge into",
        )
        .in_file(child));
    }
    let paths: Vec<PathBuf> = chain
        .iter()
        .map(|d| d.path().map(Path::to_path_buf).unwrap_or_default())
        .collect();
    let depth = ancestor_depth(&paths, opts.into.as_deref()).map_err(|e| e.in_file(child))?;
    let ancestor = &paths[depth];
    let marker = Marker::of(chain[0], ancestor);
    let resumed = verify_links(&chain, depth, &marker, opts.open.verify_linkage)?;
    if chain[depth].size() != disk.size() {
        return Err(Error::unsupported(
            "virtual size",
            0,
            format!(
                "the ancestor {} is {} bytes and the child {} bytes; merging needs equal sizes",
                ancestor.display(),
                chain[depth].size(),
                disk.size()
            ),
        )
        .in_file(child));
    }
    // Nobody may write the disks read; the ancestor's own parents are locked by its open.
    let held: Vec<std::fs::File> = paths[..depth]
        .iter()
        .map(|p| hold_unchanging(p))
        .collect::<Result<_>>()?;
    let invalidated = invalidated_children(&paths, depth, &opts.open);
    let plan = plan(&disk, depth as u32)?;
    let total: u64 = plan.iter().map(|r| r.length).sum();
    let file = chain[depth].image().file();
    let linkage_id_name = match file.format() {
        Format::Vhd => "UniqueId",
        _ => "DataWriteGuid",
    };
    let linkage_id_before = braced(file.linkage_id());

    let rw_opts = OpenOptions {
        parents: paths[depth + 1..].to_vec(),
        verify_linkage: opts.open.verify_linkage,
        require_parent: true,
        max_depth: opts.open.max_depth,
        backend: opts.open.backend,
        ..OpenOptions::default()
    };
    let rw = Disk::open_rw(ancestor, &rw_opts)?;
    if !resumed {
        marker.write(&linkage_id_before)?;
    }
    let mut stats = MergeStats {
        child: child.display().to_string(),
        ancestor: ancestor.display().to_string(),
        format: disk.format(),
        merged: paths[..depth]
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        size: disk.size(),
        bytes_merged: total,
        bytes_written: 0,
        bytes_zeroed: 0,
        bytes_skipped: 0,
        linkage_id_name,
        linkage_id_before,
        linkage_id_after: String::new(),
        resumed,
        deleted: Vec::new(),
        invalidated,
        seconds: 0.0,
    };
    copy_ranges(&disk, &rw, &plan, &mut stats, &|done| {
        if let Some(p) = progress {
            p(done, total);
        }
    })?;
    rw.close()?;
    drop(rw);
    marker.remove()?;
    if let (Some(p), 0) = (progress, total) {
        p(0, 0);
    }
    let alone = OpenOptions {
        require_parent: false,
        max_depth: 0,
        ..OpenOptions::default()
    };
    stats.linkage_id_after = braced(
        Disk::open_with(ancestor, &alone)?
            .image()
            .file()
            .linkage_id(),
    );
    if opts.delete {
        drop(held);
        for p in &paths[..depth] {
            std::fs::remove_file(p).map_err(|e| {
                Error::io(
                    e,
                    "the merge is complete, but this merged disk could not be removed",
                )
                .in_file(p)
            })?;
            stats.deleted.push(p.display().to_string());
        }
    }
    // A merge that wrote nothing left the ancestor as it was: only the children of the disks
    // removed lost what they read.
    let changed = stats.resumed || stats.bytes_written + stats.bytes_zeroed > 0;
    let deleted = &stats.deleted;
    stats
        .invalidated
        .retain(|i| changed || deleted.contains(&i.parent));
    stats.seconds = start.elapsed().as_secs_f64();
    Ok(stats)
}

/// The chain depth of the ancestor to merge into: the one `into` names, else the parent.
fn ancestor_depth(paths: &[PathBuf], into: Option<&Path>) -> Result<usize> {
    let Some(into) = into else { return Ok(1) };
    let target = std::fs::canonicalize(into)
        .map_err(|e| Error::io(e, "the disk to merge into cannot be found").in_file(into))?;
    match paths
        .iter()
        .position(|p| std::fs::canonicalize(p).is_ok_and(|c| c == target))
    {
        Some(0) => Err(Error::invalid_argument(format!(
            "{} is the child itself; --into names one of its ancestors",
            into.display()
        ))),
        Some(i) => Ok(i),
        None => Err(Error::invalid_argument(format!(
            "{} is not in the child's chain ({})",
            into.display(),
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" → ")
        ))),
    }
}

/// Refuses a chain whose links do not match, as an open that verifies linkage does, except
/// (when the marker says so) the link into the ancestor of an interrupted merge of this
/// child. Returns whether the merge resumes an interrupted one.
fn verify_links(chain: &[&Disk], depth: usize, marker: &Marker, verify: bool) -> Result<bool> {
    let mut resumed = false;
    for (i, d) in chain.iter().enumerate().take(chain.len() - 1) {
        let Some(info) = d.parent_info() else {
            continue;
        };
        if info.status != "ignored_mismatch" {
            continue;
        }
        if i + 1 == depth && marker.accepts(&info.expected_ids) {
            resumed = true;
            continue;
        }
        if !verify {
            continue;
        }
        let id_name = d
            .image()
            .file()
            .parent_request()
            .map_or("identity", |r| r.id_name);
        let path = d.path().unwrap_or(Path::new(""));
        return Err(Error::new(
            ErrorKind::LinkageMismatch,
            format!(
                "the parent {} is not the disk this child was made from: its {id_name} differs",
                info.resolved_path.as_deref().unwrap_or("?")
            ),
        )
        .structure("parent linkage")
        .expected(info.expected_ids.join(" or "))
        .found(info.actual_id.as_deref().unwrap_or("?"))
        .in_file(path));
    }
    Ok(resumed)
}

/// Opens `path` and holds the locks of a reader that needs it unchanged (see
/// [`lock_unchanging`]) for as long as the returned file stays open.
fn hold_unchanging(path: &Path) -> Result<std::fs::File> {
    let f = std::fs::File::open(path)
        .map_err(|e| Error::io(e, "cannot open the disk to lock it").in_file(path))?;
    match lock_unchanging(&f) {
        Ok(()) => Ok(f),
        Err(LockError::InUse(why)) => Err(Error::new(
            ErrorKind::InUse,
            format!("the disk is in use: {why}; a disk being merged must not change"),
        )
        .in_file(path)),
        Err(LockError::Io(e)) => Err(Error::io(e, "cannot lock the disk").in_file(path)),
    }
}

/// The ranges that a disk above `depth` holds, in order, neighbours of one kind joined.
fn plan(disk: &Disk, depth: u32) -> Result<Vec<Range>> {
    let mut out: Vec<Range> = Vec::new();
    disk.visit_extents(0, disk.size(), &mut |e| {
        let data = match e.status {
            Status::Data { depth: d, .. } if d < depth => true,
            Status::Zero { depth: d } if d < depth => false,
            _ => return Ok(()),
        };
        match out.last_mut() {
            Some(r) if r.data == data && r.offset + r.length == e.offset => r.length += e.length,
            _ => out.push(Range {
                offset: e.offset,
                length: e.length,
                data,
            }),
        }
        Ok(())
    })?;
    Ok(out)
}

/// Writes `plan`, read from `disk`, into `rw`, counting in `stats`; `progress(done)` after
/// each piece.
fn copy_ranges(
    disk: &Disk,
    rw: &WritableDisk,
    plan: &[Range],
    stats: &mut MergeStats,
    progress: &dyn Fn(u64),
) -> Result<()> {
    let mut buf = vec![0u8; PIECE.min(disk.size()) as usize];
    let mut done = 0;
    for r in plan {
        let end = r.offset + r.length;
        let mut pos = r.offset;
        while pos < end {
            let unit = if r.data { PIECE } else { TRIM_PIECE };
            let n = (end - pos).min(unit - pos % unit);
            let zero = if r.data {
                let piece = &mut buf[..n as usize];
                disk.read_at(piece, pos)?;
                is_zero(piece)
            } else {
                true
            };
            if !zero {
                rw.write_at(&buf[..n as usize], pos)?;
                stats.bytes_written += n;
            } else if reads_zero(rw, pos, n)? {
                stats.bytes_skipped += n;
            } else {
                rw.trim(pos, n)?;
                stats.bytes_zeroed += n;
            }
            pos += n;
            done += n;
            progress(done);
        }
    }
    Ok(())
}

/// Whether `disk` reads zeros all over `[offset, offset + length)` by its allocation map.
fn reads_zero(disk: &dyn VirtualDisk, offset: u64, length: u64) -> Result<bool> {
    let mut zero = true;
    disk.visit_extents(offset, length, &mut |e| {
        zero &= !matches!(e.status, Status::Data { .. });
        Ok(())
    })?;
    Ok(zero)
}

/// A GUID as the reports print it.
fn braced(id: uuid::Uuid) -> String {
    format!("{{{id}}}")
}

/// The differencing disks in the folders of `paths[..=depth]` (the merged disks and the
/// ancestor), outside the chain, whose parent link resolves to one of those disks. Best
/// effort: a file that cannot be opened is passed over.
fn invalidated_children(paths: &[PathBuf], depth: usize, open: &OpenOptions) -> Vec<Invalidated> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    let in_chain: HashSet<PathBuf> = paths.iter().filter_map(|p| canon(p)).collect();
    let targets: Vec<(PathBuf, &PathBuf)> = paths[..=depth]
        .iter()
        .filter_map(|p| Some((canon(p)?, p)))
        .collect();
    // Each folder once, named as the caller named its disk (so the paths reported read like
    // the caller's).
    let mut folders: Vec<(PathBuf, &Path)> = Vec::new();
    for (c, p) in &targets {
        let (Some(f), Some(named)) = (c.parent(), p.parent()) else {
            continue;
        };
        if !folders.iter().any(|(x, _)| x == f) {
            folders.push((f.to_path_buf(), named));
        }
    }
    // One level of parents is enough to see where each link leads.
    let sibling_opts = OpenOptions {
        require_parent: false,
        verify_linkage: false,
        max_depth: 1,
        policy: open.policy,
        ..OpenOptions::default()
    };
    let mut out = Vec::new();
    for (folder, named) in folders {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| Some(named.join(e.ok()?.file_name())))
            .filter(|p| p.is_file() && crate::create::format_from_extension(p).is_some())
            .collect();
        files.sort();
        for f in files {
            if canon(&f).is_some_and(|c| in_chain.contains(&c)) {
                continue;
            }
            let Ok(d) = Disk::open_with(&f, &sibling_opts) else {
                continue;
            };
            let Some(parent) = d
                .parent_info()
                .and_then(|i| i.resolved_path.as_deref())
                .and_then(|p| canon(Path::new(p)))
            else {
                continue;
            };
            if let Some((_, named)) = targets.iter().find(|(c, _)| *c == parent) {
                out.push(Invalidated {
                    path: f.display().to_string(),
                    parent: named.display().to_string(),
                });
            }
        }
    }
    out
}

/// The file beside the ancestor that marks a merge in progress (see the module
/// documentation).
struct Marker {
    path: PathBuf,
    /// The child's own identity (VHDX DataWriteGuid, VHD UniqueId), which a merge keeps.
    child_id: String,
}

impl Marker {
    const CHILD: &'static str = "child: ";
    const ANCESTOR: &'static str = "ancestor before the merge: ";

    fn of(child: &Disk, ancestor: &Path) -> Marker {
        let name = ancestor
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Marker {
            path: ancestor.with_file_name(format!(".{name}.vhdx-merge")),
            child_id: braced(child.image().file().linkage_id()),
        }
    }

    /// Whether the marker records an interrupted merge of this child into an ancestor that
    /// carried one of `expected` (the ids the disk above the ancestor records).
    fn accepts(&self, expected: &[String]) -> bool {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return false;
        };
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::to_string)
        };
        field(Self::CHILD).as_deref() == Some(self.child_id.as_str())
            && field(Self::ANCESTOR).is_some_and(|a| expected.contains(&a))
    }

    /// Records, durably, that the child is being merged into an ancestor whose identity is
    /// `ancestor_id`.
    fn write(&self, ancestor_id: &str) -> Result<()> {
        use std::io::Write;
        let text = format!(
            "vhdx merge in progress: run the merge again to complete it\n{}{}\n{}{ancestor_id}\n",
            Self::CHILD,
            self.child_id,
            Self::ANCESTOR
        );
        let err = |e| Error::io(e, "cannot write the merge marker").in_file(&self.path);
        let mut f = std::fs::File::create(&self.path).map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        sync_folder(&self.path).map_err(err)
    }

    fn remove(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(e, "cannot remove the merge marker").in_file(&self.path)),
        }
    }
}

/// Makes the creation of `path` durable.
fn sync_folder(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let folder = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(folder)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// What [`flatten`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlattenOptions {
    /// Output format; `None`: the chain's format.
    pub format: Option<Format>,
    /// Dynamic or fixed.
    pub disk_type: DiskType,
    /// Whether an existing output file may be replaced (atomically, once the new one is
    /// complete).
    pub overwrite: bool,
}

impl Default for FlattenOptions {
    fn default() -> Self {
        FlattenOptions {
            format: None,
            disk_type: DiskType::Dynamic,
            overwrite: false,
        }
    }
}

/// Writes the content of `disk` (a differencing disk with its chain, or any disk) into a new
/// standalone disk at `out`: [`convert`] with the chain's format unless
/// [`FlattenOptions::format`] names another. Refused when `out`'s extension names another
/// format than the one written, and when `out` is a disk of the chain.
pub fn flatten(
    disk: &Disk,
    out: &Path,
    opts: &FlattenOptions,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<ConvertStats> {
    let format = opts.format.unwrap_or(disk.format());
    if opts.format.is_none() {
        let named = crate::create::format_from_extension(out).or_else(|| {
            let ext = out.extension()?.to_str()?.to_ascii_lowercase();
            ["raw", "img", "bin"]
                .contains(&ext.as_str())
                .then_some(Format::Raw)
        });
        if let Some(named) = named.filter(|f| *f != format) {
            return Err(Error::invalid_argument(format!(
                "the output's extension names {} but the chain is {}; name the output format \
                 (--format {}, Python format=\"{}\") to write {}",
                named.as_str(),
                format.as_str(),
                named.as_str(),
                named.as_str(),
                named.as_str()
            ))
            .in_file(out));
        }
    }
    if let Ok(o) = std::fs::canonicalize(out) {
        let member = disk
            .chain()
            .into_iter()
            .filter_map(|d| d.path())
            .any(|p| std::fs::canonicalize(p).is_ok_and(|c| c == o));
        if member {
            return Err(Error::invalid_argument(
                "the output is a disk of the chain being flattened; write it elsewhere",
            )
            .in_file(out));
        }
    }
    let mut c = ConvertOptions::new(format).overwrite(opts.overwrite);
    if format != Format::Raw {
        c = c.disk_type(opts.disk_type);
    }
    convert(disk, out, &c, progress)
}
