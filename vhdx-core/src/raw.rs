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
    fn resolve(&self, offset: u64, length: u64, out: &mut Vec<Segment>) -> Result<()> {
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
