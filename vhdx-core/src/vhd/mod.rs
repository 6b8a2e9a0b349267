//! VHD images. PLACEHOLDER being replaced in this session by the VHD work.

use crate::chain::ParentRequest;
use crate::disk::{Layer, Segment};
use crate::error::{Error, Result};
use crate::image::ImageFile;
use crate::ops::info::{DiskType, Format, Info};
use crate::report::{Finding, Report};
use crate::storage::Storage;
use std::sync::Arc;
use uuid::Uuid;

/// An opened VHD file (without its parents).
#[derive(Debug)]
pub struct Vhd {
    storage: Arc<dyn Storage>,
}

impl Vhd {
    /// Opens a VHD image.
    pub fn open(storage: Arc<dyn Storage>, _name: &str) -> Result<Vhd> {
        let _ = &storage;
        Err(Error::unsupported("VHD", 0, "VHD support is being written"))
    }
}

impl Layer for Vhd {
    fn layer_size(&self) -> u64 {
        0
    }
    fn storage(&self) -> &dyn Storage {
        &*self.storage
    }
    fn resolve(&self, _offset: u64, _length: u64, _out: &mut Vec<Segment>) -> Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        String::new()
    }
}

impl ImageFile for Vhd {
    fn format(&self) -> Format {
        Format::Vhd
    }
    fn disk_type(&self) -> DiskType {
        DiskType::Dynamic
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
        Err(Error::unsupported("VHD", 0, "VHD support is being written"))
    }
    fn check(&self, _report: &mut Report) {}
}
