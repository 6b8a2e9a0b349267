//! Operations written once against [`crate::VirtualDisk`] and [`crate::Disk`].

pub mod info;
