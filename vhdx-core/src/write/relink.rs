//! Setting the parent of a differencing disk ([`set_parent`]; `vhdx set-parent`, like
//! Hyper-V's `Set-VHD -ParentPath`): after the parent moved, or to point a child at a copy
//! of its parent.
//!
//! The child's parent locators are rewritten the way [`crate::create`] writes them (a path
//! relative to the child's folder and an absolute one), so that the child finds the new
//! parent again. The new parent must be the disk the child was made from: its identity
//! (VHDX: the current DataWriteGuid; VHD: the footer's UniqueId) must be one the child
//! recorded. With `ignore_id_mismatch` a different identity is accepted and recorded as the
//! new linkage (for a parent whose content is known to be unchanged, e.g. a copy or a parent
//! whose identity changed without a change of the data the child depends on).
//!
//! VHDX locator keys other tools wrote are kept, except `volume_path` (it names the old
//! place) and `parent_linkage2` (an identity of the old parent during a merge). VHD locator
//! entries other than W2ru and W2ku are left as they are; ParentUnicodeName becomes the new
//! parent's file name.
//!
//! The child's content does not change, so a VHDX keeps its DataWriteGuid (its own children
//! stay linked); only the FileWriteGuid changes.
//!
//! # Crash safety
//! - VHDX: the new parent locator item and its metadata table entry are written through the
//!   log in one entry. The item stays in its place when it fits there; otherwise it goes to
//!   the first free space of the metadata region that holds it. A crash leaves the old
//!   locator or the new one.
//! - VHD (no log): the locator data is written first — in place when it fits the space the
//!   entry reserves, else into new space at the end of the file (the footer moves first) —
//!   and flushed; then the dynamic header (parent identity, time stamp, name, locator
//!   entries, checksum) is written in one piece and flushed. A crash before the header write
//!   leaves the old header: with new data in place its recorded length may cut the new path
//!   short, so the child still opens with `--parent` and running `set-parent` again repairs
//!   it; the disk's content is never touched.

use super::layout;
use super::{Engine, Target, WritableDisk};
use crate::chain::{Disk, OpenOptions};
use crate::create::parent_facts;
use crate::disk::VirtualDisk;
use crate::error::{Error, ErrorKind, Result};
use crate::format::vhd::parent_locator::PLATFORM_NONE;
use crate::format::vhdx::metadata::{self as md, MAX_ITEM_LENGTH};
use crate::format::vhdx::Guid;
use crate::image::Image;
use crate::ops::info::{Format, LocatorInfo};
use crate::vhd::Vhd;
use crate::vhdx::Vhdx;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What [`set_parent`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetParentStats {
    /// The child.
    pub path: String,
    /// The new parent, as given.
    pub parent: String,
    /// The child's format.
    pub format: Format,
    /// The relative path recorded (relative to the child's folder, backslashes).
    pub relative_path: String,
    /// The absolute path recorded.
    pub absolute_path: String,
    /// The parent identity recorded (VHDX DataWriteGuid, VHD UniqueId), `{…}`.
    pub parent_id: String,
    /// The identities the child recorded before.
    pub previous_ids: Vec<String>,
    /// Whether the new parent's identity differed from the recorded one and was recorded
    /// instead (`ignore_id_mismatch`).
    pub id_mismatch_ignored: bool,
    /// The locators before the change.
    pub previous_locators: Vec<LocatorInfo>,
    /// A remark, e.g. that the sizes of child and parent differ.
    pub note: Option<String>,
}

/// Points the differencing disk `child` at `parent` (see the module documentation).
/// Refused with [`ErrorKind::LinkageMismatch`] when `parent`'s identity is not one the child
/// recorded, unless `ignore_id_mismatch`; with [`ErrorKind::InvalidArgument`] when `child` is
/// not a differencing disk or `parent` is of another format, has other sector sizes, or is
/// the child or one of its descendants.
///
/// ```
/// # use vhdx_core::create::{create, CreateOptions};
/// use vhdx_core::write::set_parent;
/// use vhdx_core::Disk;
/// # let dir = tempfile::tempdir().unwrap();
/// # let base = dir.path().join("base.vhdx");
/// # create(&base, &CreateOptions::new().size(8 << 20))?;
/// # let child = dir.path().join("child.avhdx");
/// # create(&child, &CreateOptions::new().parent(&base))?;
/// // The parent moved to another folder: the child cannot find it any more.
/// let moved = dir.path().join("moved.vhdx");
/// std::fs::rename(&base, &moved).unwrap();
/// assert!(Disk::open(&child).is_err());
/// let stats = set_parent(&child, &moved, false)?; // its identity is checked
/// assert_eq!(stats.relative_path, r".\moved.vhdx"); // as Hyper-V records it
/// assert!(Disk::open(&child).is_ok());
/// # Ok::<(), vhdx_core::Error>(())
/// ```
pub fn set_parent(child: &Path, parent: &Path, ignore_id_mismatch: bool) -> Result<SetParentStats> {
    // The old parent may be missing or wrong: that is what this repairs. It is never
    // opened (depth 0): only the child's own structures are needed, and a parent followed
    // without the linkage check is a path a crafted child could aim anywhere.
    let opts = OpenOptions {
        require_parent: false,
        max_depth: 0,
        ..OpenOptions::default()
    };
    let disk = WritableDisk::open(child, &opts)?;
    let r = disk
        .set_parent_inner(parent, ignore_id_mismatch)
        .map_err(|e| e.in_file(child));
    let closed = disk.close();
    let stats = r?;
    closed?;
    Ok(stats)
}

impl WritableDisk {
    fn set_parent_inner(&self, parent: &Path, ignore: bool) -> Result<SetParentStats> {
        let d = &self.disk;
        let req = d.image().file().parent_request().ok_or_else(|| {
            Error::invalid_argument(
                "not a differencing disk: only a differencing disk has a parent to set",
            )
        })?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let facts = parent_facts(parent, &dir)?;
        check_not_a_descendant(&self.path, parent)?;
        let pf = facts.image.file();
        if pf.format() != req.format {
            return Err(Error::invalid_argument(format!(
                "the parent {} is a {} image; a {} differencing disk needs a {} parent",
                parent.display(),
                pf.format().as_str(),
                req.format.as_str(),
                req.format.as_str()
            )));
        }
        if pf.logical_sector_size() != req.logical_sector_size {
            return Err(Error::invalid_argument(format!(
                "the parent {} has {}-byte logical sectors; the child has {}",
                parent.display(),
                pf.logical_sector_size(),
                req.logical_sector_size
            )));
        }
        let actual = pf.linkage_id();
        let mismatch = !req.expected.contains(&actual);
        let braced = |u: &uuid::Uuid| format!("{{{u}}}");
        let previous_ids: Vec<String> = req.expected.iter().map(braced).collect();
        if mismatch && !ignore {
            return Err(Error::new(
                ErrorKind::LinkageMismatch,
                format!(
                    "{} is not the disk this child was made from: its {} differs from the one \
                     the child recorded. If it holds the same data the child was made on (a \
                     copy, or a parent whose identity changed without a change to that data), \
                     pass --ignore-id-mismatch (Python: ignore_id_mismatch=True) to record its \
                     identity; linking a child to a parent with other data corrupts what the \
                     child reads",
                    parent.display(),
                    req.id_name
                ),
            )
            .structure("parent linkage")
            .expected(previous_ids.join(" or "))
            .found(braced(&actual)));
        }
        let parent_size = pf.layer_size();
        let note = (parent_size != d.size()).then(|| {
            format!(
                "the parent's virtual size ({parent_size} bytes) differs from the child's \
                 ({} bytes); a differencing disk must have its parent's size: run `vhdx resize \
                 CHILD {parent_size}`",
                d.size()
            )
        });
        let previous_locators = d
            .parent_info()
            .map(|p| p.locators.clone())
            .unwrap_or_default();
        let mut st = self.state();
        let t = self.target();
        let (relative_path, absolute_path) = match (&mut st.engine, d.image()) {
            (Engine::Vhdx(e), Image::Vhdx(v)) => {
                let link = crate::create::vhdx::ParentLink::new(&facts, Guid::from_uuid(actual));
                relink_vhdx(e, &t, v, &link)?;
                (link.relative, link.absolute)
            }
            (Engine::Vhd(e), Image::Vhd(v)) => {
                let link = crate::create::vhd::ParentLink::new(&facts)?;
                relink_vhd(e, &t, v, &link)?;
                (link.relative, link.absolute)
            }
            _ => unreachable!("differencing disks are VHDX or VHD"),
        };
        Ok(SetParentStats {
            path: self.path.display().to_string(),
            parent: parent.display().to_string(),
            format: req.format,
            relative_path,
            absolute_path,
            parent_id: braced(&actual),
            previous_ids,
            id_mismatch_ignored: mismatch,
            previous_locators,
            note,
        })
    }
}

/// Refuses a parent that is the child itself or has the child in its own chain (a loop).
fn check_not_a_descendant(child: &Path, parent: &Path) -> Result<()> {
    let me = std::fs::canonicalize(child).map_err(|e| Error::io(e, "resolving the child"))?;
    let opts = OpenOptions {
        verify_linkage: false,
        require_parent: false,
        ..OpenOptions::default()
    };
    let chain = Disk::open_with(parent, &opts)?;
    for d in chain.chain() {
        let same = d
            .path()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .is_some_and(|p| p == me);
        if same {
            return Err(Error::new(
                ErrorKind::ChainLoop,
                format!(
                    "{} is the child itself or one of its descendants; the chain would loop",
                    parent.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Writes `link` as the VHDX parent locator through the log (see the module documentation).
fn relink_vhdx(
    e: &mut super::vhdx::VhdxEngine,
    t: &Target<'_>,
    v: &Vhdx,
    link: &crate::create::vhdx::ParentLink,
) -> Result<()> {
    const S: &str = "VHDX metadata table";
    let m = v.metadata();
    let region = v.regions().metadata;
    let base = region.offset;
    let index = m
        .entries
        .iter()
        .position(|it| it.item_id == md::PARENT_LOCATOR && it.flags & md::FLAG_IS_USER == 0)
        .ok_or_else(|| Error::corrupt(S, base, "a differencing disk without a parent locator"))?;
    let old = m.entries[index];
    // Keys that are not paths or linkage (written by other tools) are kept, after ours.
    let replaced = [
        "parent_linkage",
        "parent_linkage2",
        "relative_path",
        "volume_path",
        "absolute_win32_path",
    ];
    let mut pairs = link.pairs();
    pairs.extend(
        m.parent_locator
            .iter()
            .flatten()
            .filter(|(k, _)| !replaced.contains(&k.as_str()))
            .cloned(),
    );
    let item = crate::create::vhdx::encode_parent_locator(&pairs)?;
    let len = u32::try_from(item.len())
        .ok()
        .filter(|&l| l <= MAX_ITEM_LENGTH)
        .ok_or_else(|| Error::invalid_argument("the parent locator would exceed 1 MiB"))?;
    let others: Vec<(u64, u64)> = m
        .entries
        .iter()
        .enumerate()
        .filter(|&(i, it)| i != index && it.length > 0)
        .map(|(_, it)| {
            (
                u64::from(it.offset),
                u64::from(it.offset) + u64::from(it.length),
            )
        })
        .collect();
    let fits = |at: u64| {
        at >= md::TABLE_SIZE as u64
            && at + u64::from(len) <= region.length
            && others
                .iter()
                .all(|&(s, end)| at + u64::from(len) <= s || end <= at)
    };
    // Its own place first, then the free space after the table and after each item.
    let at = std::iter::once(u64::from(old.offset))
        .chain(std::iter::once(md::TABLE_SIZE as u64))
        .chain(others.iter().map(|&(_, end)| end.next_multiple_of(8)))
        .find(|&at| fits(at))
        .ok_or_else(|| {
            Error::unsupported(
                S,
                base,
                "the metadata region has no free space for the new parent locator",
            )
            .found(format!("{len} bytes needed"))
        })?;
    let stage = |off: u64, bytes: &[u8]| {
        t.journal
            .stage(base + off, bytes)
            .map_err(|err| Error::io(err, "staging VHDX metadata").offset(base + off))
    };
    e.begin(t, false)?;
    // What is left of the old item outside the new one is zeroed (no stale paths remain).
    let (os, oe) = (
        u64::from(old.offset),
        u64::from(old.offset) + u64::from(old.length),
    );
    let (ns, ne) = (at, at + u64::from(len));
    for (a, b) in [(os, oe.min(ns)), (os.max(ne), oe)] {
        if a < b {
            stage(a, &vec![0u8; (b - a) as usize])?;
        }
    }
    stage(at, &item)?;
    let entry_at = 32 + 32 * index as u64 + 16;
    let mut entry = [0u8; 8];
    entry[..4].copy_from_slice(&(at as u32).to_le_bytes());
    entry[4..].copy_from_slice(&len.to_le_bytes());
    stage(entry_at, &entry)?;
    e.commit(t)
}

/// Writes `link` into the VHD's locators and dynamic header (see the module documentation).
fn relink_vhd(
    e: &mut super::vhd::VhdEngine,
    t: &Target<'_>,
    v: &Vhd,
    link: &crate::create::vhd::ParentLink,
) -> Result<()> {
    let sp = v.sparse().expect("a differencing VHD is sparse");
    let lay = layout::vhd_layout(v, t.journal)?.expect("a differencing VHD is sparse");
    lay.validate("VHD layout")?;
    let mut h = sp.header;
    link.apply(&mut h);
    for (code, data) in link.locators() {
        let slot = h
            .parent_locators
            .iter()
            .position(|l| l.platform_code == code)
            .or_else(|| {
                h.parent_locators
                    .iter()
                    .position(|l| l.platform_code == PLATFORM_NONE)
            })
            .ok_or_else(|| {
                Error::unsupported(
                    "VHD dynamic header",
                    sp.header_offset + 576,
                    "every parent locator slot is taken",
                )
            })?;
        let l = &mut h.parent_locators[slot];
        let len = data.len() as u64;
        let in_place = l.is_used() && len <= l.data_space_bytes();
        let (at, space) = if in_place {
            (l.platform_data_offset.get(), l.data_space_bytes())
        } else {
            let space = crate::create::vhd::locator_space(data.len());
            (e.reserve(t, v, 0, space, 512, 0)?, space)
        };
        let mut padded = data;
        padded.resize(space as usize, 0);
        t.file
            .write_all_at(&padded, at)
            .map_err(|err| Error::io(err, "writing VHD parent locator data").offset(at))?;
        let space32 = u32::try_from(space)
            .map_err(|_| Error::invalid_argument("a parent path is too long"))?;
        l.platform_code = code;
        if !in_place {
            l.platform_data_space.set(space32);
        }
        l.platform_data_length.set(len as u32);
        l.platform_data_offset.set(at);
    }
    t.file
        .sync()
        .map_err(|err| Error::io(err, "flushing VHD parent locator data"))?;
    e.write_header(t, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{create, CreateOptions};
    use crate::VirtualDisk;

    #[test]
    fn moved_parents_are_found_again_and_strangers_refused() {
        let dir = tempfile::tempdir().unwrap();
        for ext in ["vhdx", "vhd"] {
            let base = dir.path().join(format!("base.{ext}"));
            let child = dir.path().join(format!("child.{ext}"));
            create(&base, &CreateOptions::new().size(8 << 20)).unwrap();
            create(&child, &CreateOptions::new().parent(&base)).unwrap();
            let sub = dir.path().join(format!("moved-{ext}"));
            std::fs::create_dir(&sub).unwrap();
            let moved = sub.join(format!("a much longer name for the base disk.{ext}"));
            std::fs::rename(&base, &moved).unwrap();
            assert_eq!(
                Disk::open(&child).unwrap_err().kind(),
                ErrorKind::ParentNotFound
            );
            let s = set_parent(&child, &moved, false).unwrap();
            assert!(!s.id_mismatch_ignored);
            let d = Disk::open(&child).unwrap();
            assert_eq!(d.size(), 8 << 20);
            assert_eq!(d.chain().len(), 2);
            let stranger = dir.path().join(format!("stranger.{ext}"));
            create(&stranger, &CreateOptions::new().size(8 << 20)).unwrap();
            let err = set_parent(&child, &stranger, false).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::LinkageMismatch, "{err}");
            let s = set_parent(&child, &stranger, true).unwrap();
            assert!(s.id_mismatch_ignored);
            Disk::open(&child).unwrap();
            assert_eq!(
                set_parent(&child, &child, true).unwrap_err().kind(),
                ErrorKind::ChainLoop
            );
            assert_eq!(
                set_parent(&stranger, &child, true).unwrap_err().kind(),
                ErrorKind::InvalidArgument
            );
        }
    }
}
