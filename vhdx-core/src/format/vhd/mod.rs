//! VHD on-disk structures (VHD spec; FORMATS.md part B). All integers big-endian.
