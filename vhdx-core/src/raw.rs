//! Raw disk images: the file is the disk, byte for byte.

use crate::chain::ParentRequest;
use crate::disk::{push_segment, Layer, Segment, Source};
use crate::error::Result;
use crate::image::ImageFile;
use crate::ops::info::{DiskType, Format, Info};
use crate::report::{Finding, Report};
use crate::storage::Storage;
use std::sync::Arc;
use uuid::Uuid;

/// Ranges at least this long are checked for holes of the host file.
const HOLE_AWARE_MIN: u64 = 2 << 20;

/// A raw image: virtual offset = file offset.
#[derive(Debug)]
pub struct RawImage {
    storage: Arc<dyn Storage>,
    size: u64,
    name: String,
}

impl RawImage {
    /// Opens `storage` as a raw disk whose size is the file length.
    pub fn open(storage: Arc<dyn Storage>, name: &str) -> Result<Self> {
        let size = storage
            .len()
            .map_err(|e| crate::Error::io(e, "reading the file length"))?;
        Ok(RawImage {
            storage,
            size,
            name: name.to_string(),
        })
    }
}

impl Layer for RawImage {
    fn layer_size(&self) -> u64 {
        self.size
    }
    fn storage(&self) -> &dyn Storage {
        &*self.storage
    }
    /// Holes of a sparse host file are reported as unallocated (as `qemu-img map` does), for
    /// ranges of 2 MiB and more: allocation maps and conversions skip them,
    /// while small reads cost no extra system call.
    fn resolve(&self, offset: u64, length: u64, out: &mut Vec<Segment>) -> Result<()> {
        let end = offset + length;
        let mut pos = offset;
        if length >= HOLE_AWARE_MIN {
            // Past the end of the file (a file that shrank after it was opened) is not a
            // hole: it stays data, so reading it fails.
            let in_file = self
                .storage
                .len()
                .map_err(|e| crate::Error::io(e, "reading the file length"))?
                .clamp(offset, end);
            while pos < in_file {
                let next = self
                    .storage
                    .next_data(pos)
                    .map_err(|e| crate::Error::read_failed("raw image", pos, e))?;
                let Some((s, e)) = next.filter(|&(s, _)| s < in_file) else {
                    break;
                };
                let s = s.max(pos);
                push_segment(out, s - pos, Source::Parent);
                let e = e.min(in_file);
                push_segment(out, e - s, Source::Data { file_offset: s });
                pos = e;
            }
            push_segment(out, in_file - pos, Source::Parent);
            push_segment(
                out,
                end - in_file,
                Source::Data {
                    file_offset: in_file,
                },
            );
            return Ok(());
        }
        push_segment(
            out,
            length,
            Source::Data {
                file_offset: offset,
            },
        );
        Ok(())
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
    fn tolerate_short_data(&self) -> bool {
        false
    }
}

impl ImageFile for RawImage {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn disk_type(&self) -> DiskType {
        DiskType::Fixed
    }
    fn logical_sector_size(&self) -> u32 {
        512
    }
    fn physical_sector_size(&self) -> u32 {
        512
    }
    fn parent_request(&self) -> Option<ParentRequest> {
        None
    }
    fn linkage_id(&self) -> Uuid {
        Uuid::nil()
    }
    fn findings(&self) -> Vec<Finding> {
        Vec::new()
    }
    fn info(&self, _scan: bool) -> Result<Info> {
        Ok(Info::new(
            Format::Raw,
            DiskType::Fixed,
            self.size,
            self.size,
        ))
    }
    fn check(&self, _report: &mut Report) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FileStorage;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_of_a_sparse_file_are_unallocated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.raw");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(&[7u8; 4096], 8 << 20).unwrap();
        drop(f);
        let img = RawImage::open(Arc::new(FileStorage::open(&p).unwrap()), "s").unwrap();
        let mut segs = Vec::new();
        img.resolve(0, 16 << 20, &mut segs).unwrap();
        // The file system may allocate more than the 4 KiB written, but the data lies
        // between holes and the first MiBs are a hole.
        assert_eq!(segs[0].source, Source::Parent);
        assert!(segs[0].length >= 4 << 20);
        let data: Vec<_> = segs
            .iter()
            .filter(|s| matches!(s.source, Source::Data { .. }))
            .collect();
        assert_eq!(data.len(), 1);
        assert_eq!(segs.last().unwrap().source, Source::Parent);
        assert_eq!(segs.iter().map(|s| s.length).sum::<u64>(), 16 << 20);
        // Small ranges are data without asking.
        segs.clear();
        img.resolve(0, 4096, &mut segs).unwrap();
        assert!(matches!(segs[0].source, Source::Data { file_offset: 0 }));
    }
}
