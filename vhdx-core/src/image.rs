//! What every image format provides beyond the [`Layer`] description of its bytes: identity,
//! type, parent request, findings, info and deep checks. [`Image`] is the closed set of
//! formats, so callers that need format-specific access can match on it.

use crate::chain::ParentRequest;
use crate::disk::Layer;
use crate::error::Result;
use crate::ops::info::{DiskType, Format, Info};
use crate::raw::RawImage;
use crate::report::{Finding, Report};
use crate::vhd::Vhd;
use crate::vhdx::Vhdx;
use uuid::Uuid;

/// Behaviour shared by every image format.
pub trait ImageFile: Layer + Send + Sync {
    /// The format.
    fn format(&self) -> Format;

    /// Fixed, dynamic or differencing.
    fn disk_type(&self) -> DiskType;

    /// Logical sector size.
    fn logical_sector_size(&self) -> u32;

    /// Physical sector size.
    fn physical_sector_size(&self) -> u32;

    /// For a differencing image: where its parent may be and which identity it must carry.
    fn parent_request(&self) -> Option<ParentRequest>;

    /// The identity children of this image record (VHDX DataWriteGuid, VHD UniqueId).
    fn linkage_id(&self) -> Uuid;

    /// Problems tolerated while opening.
    fn findings(&self) -> Vec<Finding>;

    /// Facts for `vhdx info`. `scan` asks for block statistics even when the block table is
    /// large enough that scanning it costs more than the rest of the open.
    fn info(&self, scan: bool) -> Result<Info>;

    /// Deep check of every structure, appending findings to `report`. Never fails: what it
    /// cannot read becomes a finding.
    fn check(&self, report: &mut Report);
}

/// An opened image file of any supported format (without its parents).
// One `Image` exists per open file, so the size difference between variants costs nothing
// worth an extra indirection on every read.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Image {
    /// A VHDX file.
    Vhdx(Vhdx),
    /// A VHD file.
    Vhd(Vhd),
    /// A raw image.
    Raw(RawImage),
}

impl Image {
    /// The format-independent view.
    pub fn file(&self) -> &dyn ImageFile {
        match self {
            Image::Vhdx(i) => i,
            Image::Vhd(i) => i,
            Image::Raw(i) => i,
        }
    }
}
