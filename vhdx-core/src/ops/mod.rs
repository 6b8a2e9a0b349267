//! Operations written once against [`crate::VirtualDisk`] and [`crate::Disk`].

pub mod compare;
pub mod convert;
pub mod info;
pub mod map;
pub mod merge;
