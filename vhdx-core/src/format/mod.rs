//! Raw on-disk structures of both formats, as `zerocopy` types with explicit-endian fields,
//! read in place from byte buffers. Only layouts, constants and pure helpers (checksums,
//! GUID conversion) live here: no I/O and no policy.

pub mod utf16;
pub mod vhd;
pub mod vhdx;
