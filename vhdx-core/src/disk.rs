//! The one virtual-disk abstraction. Every format (VHDX, VHD, raw) and every chain of
//! differencing disks implements [`VirtualDisk`]; every later operation (check, map, convert,
//! compact, merge, guest inspection) is written once against it.
//!
//! Image formats describe *where bytes come from* through [`Layer::resolve`]: a list of
//! [`Segment`]s, each either data at a file offset, zeros, or "not in this file" (the parent,
//! or zeros when there is none). [`read_layer`] and [`layer_status`] turn that description
//! into reads and allocation status, coalescing adjacent file ranges so a run of contiguous
//! present blocks is read with one system call straight into the caller's buffer.

use crate::error::{Error, Result};
use crate::storage::Storage;
use std::sync::Arc;

/// Where one range of the virtual disk comes from, as seen by one image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Bytes stored in this file at `file_offset`.
    Data {
        /// Byte offset in the image file.
        file_offset: u64,
    },
    /// The range reads as zeros, hiding any parent.
    Zero,
    /// This file holds nothing for the range: read the parent, or zeros if there is none.
    Parent,
}

/// A run of the virtual disk with a single [`Source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Length in bytes.
    pub length: u64,
    /// Where the bytes come from.
    pub source: Source,
}

/// Appends `length` bytes from `source` to `out`, merging them into the previous segment when
/// both continue each other (same kind, and for data adjacent file offsets).
pub fn push_segment(out: &mut Vec<Segment>, length: u64, source: Source) {
    let seg = Segment { length, source };
    if seg.length == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        let merged = match (last.source, seg.source) {
            (Source::Zero, Source::Zero) | (Source::Parent, Source::Parent) => true,
            (Source::Data { file_offset: a }, Source::Data { file_offset: b }) => {
                a.checked_add(last.length) == Some(b)
            }
            _ => false,
        };
        if merged {
            last.length += seg.length;
            return;
        }
    }
    out.push(seg);
}

/// The allocation status of a range of a virtual disk (after following the whole chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// Data stored in the image at `depth` (0 = the disk itself, 1 = its parent, …).
    Data {
        /// Chain depth of the image holding the bytes.
        depth: u32,
        /// Byte offset in that image file, when the bytes are stored contiguously there.
        file_offset: Option<u64>,
    },
    /// Reads as zeros because the image at `depth` says so explicitly (a ZERO block).
    Zero {
        /// Chain depth of the image that declares the zeros.
        depth: u32,
    },
    /// No image in the chain holds the range: it reads as zeros.
    Unallocated,
}

/// A range of the virtual disk with one [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Extent {
    /// Virtual offset in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// What the range holds.
    #[serde(flatten)]
    pub status: Status,
}

/// A virtual disk: a flat array of bytes of a fixed size, read with positional calls.
///
/// Every format, chain and raw file reads the same way; the allocation status says which
/// ranges hold data, so an operation can skip the rest without reading it:
///
/// ```
/// # use vhdx_core::create::{create, CreateOptions};
/// use vhdx_core::{Disk, Status, VirtualDisk};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("disk.vhdx");
/// # create(&path, &CreateOptions::new().size(64 << 20).block_size(1 << 20))?;
/// # let w = Disk::open_rw(&path, &Default::default())?;
/// # w.write_at(b"data", 5 << 20)?;
/// # w.close()?;
/// let disk = Disk::open(&path)?;
/// let mut with_data = 0;
/// disk.visit_extents(0, disk.size(), &mut |e| {
///     if matches!(e.status, Status::Data { .. }) {
///         with_data += e.length;
///     }
///     Ok(())
/// })?;
/// assert_eq!(with_data, 1 << 20); // one 1 MiB block
/// let mut buf = [0u8; 4];
/// disk.read_at(&mut buf, 5 << 20)?;
/// assert_eq!(&buf, b"data");
/// # Ok::<(), vhdx_core::Error>(())
/// ```
pub trait VirtualDisk: Send + Sync {
    /// Virtual size in bytes.
    fn size(&self) -> u64;

    /// Logical sector size the guest sees (512 or 4096).
    fn logical_sector_size(&self) -> u32;

    /// Physical sector size reported to the guest (512 or 4096).
    fn physical_sector_size(&self) -> u32;

    /// Fills `buf` with the virtual bytes at `offset`. The range must lie inside the disk.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// The status of the range starting at `offset`: returns the longest extent (at most
    /// `length` bytes, and at least one byte when `length > 0`) whose status is uniform.
    fn block_status(&self, offset: u64, length: u64) -> Result<Extent>;

    /// Calls `f` with consecutive extents covering `[offset, offset + length)` (inside the
    /// disk), in order; neighbours may share a status. The default asks
    /// [`block_status`](Self::block_status) once per extent; layered disks override it to
    /// resolve each range once, so the cost grows with the number of extents instead of with
    /// the extents times the size of the resolution window.
    fn visit_extents(
        &self,
        offset: u64,
        length: u64,
        f: &mut dyn FnMut(Extent) -> Result<()>,
    ) -> Result<()> {
        check_range(self.size(), offset, length)?;
        let end = offset + length;
        let mut off = offset;
        while off < end {
            let e = self.block_status(off, end - off)?;
            if e.length == 0 || e.length > end - off {
                return Err(Error::new(
                    crate::ErrorKind::Corrupt,
                    format!("internal: extent of {} bytes at {off:#x}", e.length),
                ));
            }
            off += e.length;
            f(e)?;
        }
        Ok(())
    }

    /// The host file that holds the bytes of the image at chain depth `depth` at the
    /// `file_offset`s [`Status::Data`] reports, when those bytes can be taken from it as they
    /// are (no dirty log replayed in memory over them): bulk copies then run in the kernel
    /// instead of through a buffer. `None` (the default) means "read through
    /// [`read_at`](Self::read_at)".
    fn host_file(&self, depth: u32) -> Option<&std::fs::File> {
        let _ = depth;
        None
    }
}

impl<T: VirtualDisk + ?Sized> VirtualDisk for Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn logical_sector_size(&self) -> u32 {
        (**self).logical_sector_size()
    }
    fn physical_sector_size(&self) -> u32 {
        (**self).physical_sector_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        (**self).read_at(buf, offset)
    }
    fn block_status(&self, offset: u64, length: u64) -> Result<Extent> {
        (**self).block_status(offset, length)
    }
    fn visit_extents(
        &self,
        offset: u64,
        length: u64,
        f: &mut dyn FnMut(Extent) -> Result<()>,
    ) -> Result<()> {
        (**self).visit_extents(offset, length, f)
    }
    fn host_file(&self, depth: u32) -> Option<&std::fs::File> {
        (**self).host_file(depth)
    }
}

/// One image file seen as a layer of a chain: its geometry, its bytes, and a description of
/// where each virtual range comes from. Formats implement this; [`read_layer`] and
/// [`layer_status`] implement [`VirtualDisk`] on top of it.
pub trait Layer {
    /// Virtual size in bytes.
    fn layer_size(&self) -> u64;

    /// The image file's bytes (after any in-memory log replay).
    fn storage(&self) -> &dyn Storage;

    /// Appends to `out` segments covering exactly `[offset, offset + length)`, which lies
    /// inside the disk. Implementations push through [`push_segment`] so runs coalesce.
    fn resolve(&self, offset: u64, length: u64, out: &mut Vec<Segment>) -> Result<()>;

    /// The parent disk where [`Source::Parent`] ranges are read: `Ok(None)` for an image
    /// without a parent (those ranges read as zeros), an error for a differencing image whose
    /// parent was not opened (its reads cannot be answered).
    fn parent_disk(&self) -> Result<Option<&dyn VirtualDisk>> {
        Ok(None)
    }

    /// Name of the image, for error messages.
    fn describe(&self) -> String;

    /// Payload reads may extend past the end of the file (a short last block some writers
    /// leave); those bytes read as zeros. Formats that do not tolerate it return false.
    fn tolerate_short_data(&self) -> bool {
        true
    }
}

/// Resolution window: bounds the segment list held at once, whatever the read size.
const WINDOW: u64 = 64 << 20;

/// Checks that `[offset, offset + len)` lies inside a disk of `size` bytes.
pub fn check_range(size: u64, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::invalid_argument(format!(
            "range {offset:#x}+{len:#x} lies outside the virtual disk of {size} bytes"
        ))),
    }
}

/// Reads `[offset, offset + buf.len())` of a layer into `buf`, following the parent where the
/// layer holds nothing.
pub fn read_layer<L: Layer + ?Sized>(layer: &L, buf: &mut [u8], offset: u64) -> Result<()> {
    check_range(layer.layer_size(), offset, buf.len() as u64)?;
    let mut segs = Vec::new();
    let mut done = 0usize;
    while done < buf.len() {
        let want = ((buf.len() - done) as u64).min(WINDOW);
        segs.clear();
        layer.resolve(offset + done as u64, want, &mut segs)?;
        let mut pos = done;
        for s in &segs {
            let n = s.length as usize;
            let dst = &mut buf[pos..pos + n];
            let voff = offset + pos as u64;
            match s.source {
                Source::Data { file_offset } => {
                    let r = if layer.tolerate_short_data() {
                        layer.storage().read_at_zero_tail(dst, file_offset)
                    } else {
                        layer.storage().read_exact_at(dst, file_offset)
                    };
                    r.map_err(|e| {
                        Error::read_failed("payload data", file_offset, e)
                            .structure(format!("payload data of {}", layer.describe()))
                    })?;
                }
                Source::Zero => dst.fill(0),
                Source::Parent => match layer.parent_disk()? {
                    Some(p) => {
                        // A parent smaller than its child reads as zeros past its end.
                        let inside = p.size().saturating_sub(voff).min(n as u64) as usize;
                        let (head, tail) = dst.split_at_mut(inside);
                        if !head.is_empty() {
                            p.read_at(head, voff)?;
                        }
                        tail.fill(0);
                    }
                    None => dst.fill(0),
                },
            }
            pos += n;
        }
        if pos - done != want as usize {
            return Err(Error::new(
                crate::ErrorKind::Corrupt,
                format!(
                    "internal: {} resolved {} of {} bytes at {:#x}",
                    layer.describe(),
                    pos - done,
                    want,
                    offset + done as u64
                ),
            ));
        }
        done = pos;
    }
    Ok(())
}

/// The uniform-status extent of a layer starting at `offset` (see
/// [`VirtualDisk::block_status`]).
pub fn layer_status<L: Layer + ?Sized>(layer: &L, offset: u64, length: u64) -> Result<Extent> {
    let size = layer.layer_size();
    if offset >= size {
        return Err(Error::invalid_argument(format!(
            "offset {offset:#x} lies outside the virtual disk of {size} bytes"
        )));
    }
    let length = length.min(size - offset).min(WINDOW);
    let mut segs = Vec::new();
    layer.resolve(offset, length, &mut segs)?;
    let first = segs
        .first()
        .copied()
        .ok_or_else(|| Error::new(crate::ErrorKind::Corrupt, "internal: empty resolution"))?;
    let status = match first.source {
        Source::Data { file_offset } => Status::Data {
            depth: 0,
            file_offset: Some(file_offset),
        },
        Source::Zero => Status::Zero { depth: 0 },
        Source::Parent => match layer.parent_disk()? {
            Some(p) if offset < p.size() => {
                let e = p.block_status(offset, first.length.min(p.size() - offset))?;
                return Ok(Extent {
                    offset,
                    length: e.length,
                    status: one_level_deeper(e.status),
                });
            }
            _ => Status::Unallocated,
        },
    };
    Ok(Extent {
        offset,
        length: first.length,
        status,
    })
}

/// A parent's status as its child reports it: the same, one level deeper in the chain.
fn one_level_deeper(status: Status) -> Status {
    match status {
        Status::Data { depth, file_offset } => Status::Data {
            depth: depth + 1,
            file_offset,
        },
        Status::Zero { depth } => Status::Zero { depth: depth + 1 },
        Status::Unallocated => Status::Unallocated,
    }
}

/// [`VirtualDisk::visit_extents`] for a layer: each window of the layer is resolved once and
/// the ranges it leaves to the parent are visited in the parent, one level deeper.
pub fn layer_extents<L: Layer + ?Sized>(
    layer: &L,
    offset: u64,
    length: u64,
    f: &mut dyn FnMut(Extent) -> Result<()>,
) -> Result<()> {
    check_range(layer.layer_size(), offset, length)?;
    let end = offset + length;
    let mut segs = Vec::new();
    let mut pos = offset;
    while pos < end {
        let want = (end - pos).min(WINDOW);
        segs.clear();
        layer.resolve(pos, want, &mut segs)?;
        let mut voff = pos;
        for s in &segs {
            let status = match s.source {
                Source::Data { file_offset } => Some(Status::Data {
                    depth: 0,
                    file_offset: Some(file_offset),
                }),
                Source::Zero => Some(Status::Zero { depth: 0 }),
                Source::Parent => match layer.parent_disk()? {
                    Some(p) => {
                        // A parent smaller than its child holds nothing past its end.
                        let inside = p.size().saturating_sub(voff).min(s.length);
                        if inside > 0 {
                            p.visit_extents(voff, inside, &mut |e| {
                                f(Extent {
                                    status: one_level_deeper(e.status),
                                    ..e
                                })
                            })?;
                        }
                        if inside < s.length {
                            f(Extent {
                                offset: voff + inside,
                                length: s.length - inside,
                                status: Status::Unallocated,
                            })?;
                        }
                        None
                    }
                    None => Some(Status::Unallocated),
                },
            };
            if let Some(status) = status {
                f(Extent {
                    offset: voff,
                    length: s.length,
                    status,
                })?;
            }
            voff += s.length;
        }
        if voff - pos != want {
            return Err(Error::new(
                crate::ErrorKind::Corrupt,
                format!(
                    "internal: {} resolved {} of {want} bytes at {pos:#x}",
                    layer.describe(),
                    voff - pos
                ),
            ));
        }
        pos = voff;
    }
    Ok(())
}

/// Every extent of `disk`, merged where neighbours share a status (file offsets are dropped
/// from merged data extents that are not contiguous in the file).
pub fn extents(disk: &dyn VirtualDisk) -> Result<Vec<Extent>> {
    let mut out: Vec<Extent> = Vec::new();
    disk.visit_extents(0, disk.size(), &mut |e| {
        push_extent(&mut out, e);
        Ok(())
    })?;
    Ok(out)
}

fn push_extent(out: &mut Vec<Extent>, e: Extent) {
    if let Some(last) = out.last_mut() {
        let merged = match (last.status, e.status) {
            (Status::Unallocated, Status::Unallocated) => Some(Status::Unallocated),
            (Status::Zero { depth: a }, Status::Zero { depth: b }) if a == b => {
                Some(Status::Zero { depth: a })
            }
            (
                Status::Data {
                    depth: a,
                    file_offset: fa,
                },
                Status::Data {
                    depth: b,
                    file_offset: fb,
                },
            ) if a == b => {
                let contiguous =
                    matches!((fa, fb), (Some(x), Some(y)) if x.checked_add(last.length) == Some(y));
                // Like `qemu-img map`, keep runs apart when they are not contiguous in the file.
                contiguous.then_some(Status::Data {
                    depth: a,
                    file_offset: fa,
                })
            }
            _ => None,
        };
        if let Some(status) = merged {
            last.length += e.length;
            last.status = status;
            return;
        }
    }
    out.push(e);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_coalesce() {
        let mut v = Vec::new();
        push_segment(&mut v, 10, Source::Data { file_offset: 100 });
        push_segment(&mut v, 5, Source::Data { file_offset: 110 });
        push_segment(&mut v, 5, Source::Data { file_offset: 200 });
        push_segment(&mut v, 0, Source::Zero);
        push_segment(&mut v, 3, Source::Zero);
        push_segment(&mut v, 3, Source::Zero);
        assert_eq!(
            v,
            vec![
                Segment {
                    length: 15,
                    source: Source::Data { file_offset: 100 }
                },
                Segment {
                    length: 5,
                    source: Source::Data { file_offset: 200 }
                },
                Segment {
                    length: 6,
                    source: Source::Zero
                },
            ]
        );
    }

    #[test]
    fn range_check() {
        assert!(check_range(10, 0, 10).is_ok());
        assert!(check_range(10, 1, 10).is_err());
        assert!(check_range(10, u64::MAX, 2).is_err());
    }
}
