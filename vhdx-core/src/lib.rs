//! # vhdx-core
//!
//! Exact reading of Microsoft virtual disks — VHDX and VHD, fixed, dynamic and differencing,
//! with chains of any depth and in-memory replay of a dirty VHDX log — behind one
//! [`VirtualDisk`] trait that every later operation (check, map, convert, compact, merge,
//! guest inspection) is written against.
//!
//! Layers, bottom up:
//! - [`storage`]: positional I/O backends (file, memory map, memory, log-replay overlay).
//! - [`format`](mod@format): the on-disk structures as `zerocopy` types, read in place; no I/O, no policy.
//! - [`vhdx`], [`vhd`], [`raw`]: one module per format, turning structures into a
//!   [`disk::Layer`] (where each virtual range comes from).
//! - [`chain`]: opening a disk with its parents ([`Disk`]), which implements [`VirtualDisk`].
//! - [`ops`]: operations written once on the trait (`info`, `check`, `map`, `convert`).
//! - [`guest`]: what the guest sees: partition tables, volumes and their file systems.
//! - [`create`] and [`mod@write`]: new disks, and [`WritableDisk`] (`Disk::open_rw`) for writes
//!   that a crash never turns into corruption (VHDX metadata goes through the log).
//!
//! ```no_run
//! use vhdx_core::{Disk, VirtualDisk};
//! let disk = Disk::open("disk.vhdx")?;
//! let mut sector = vec![0u8; 512];
//! disk.read_at(&mut sector, 0)?;
//! println!("{} bytes, first sector ends {:02x}{:02x}", disk.size(), sector[510], sector[511]);
//! # Ok::<(), vhdx_core::Error>(())
//! ```
//!
//! Writing (the file is locked against other writers, QEMU included, while it is open):
//!
//! ```no_run
//! use vhdx_core::{Disk, OpenOptions};
//! let disk = Disk::open_rw("disk.vhdx", &OpenOptions::default())?;
//! disk.write_at(b"hello", 1 << 20)?;  // any offset and length
//! disk.flush()?;                       // durable from here on
//! disk.close()?;                       // commits, marks the log clean, unlocks
//! # Ok::<(), vhdx_core::Error>(())
//! ```
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod bytes;
pub mod chain;
pub mod create;
pub mod disk;
pub mod error;
pub mod format;
pub mod guest;
pub mod image;
pub mod ops;
pub mod raw;
pub mod report;
pub mod storage;
pub mod vhd;
pub mod vhdx;
pub mod write;

pub use chain::{Backend, Disk, OpenOptions, ParentPolicy};
pub use disk::{Extent, Status, VirtualDisk};
pub use error::{Error, ErrorKind, Result};
pub use image::{Image, ImageFile};
pub use ops::info::{DiskType, Format, Info};
pub use report::{CheckSummary, Finding, Report, Severity};
pub use write::{CompactMode, CompactOptions, CompactStats, WritableDisk};
