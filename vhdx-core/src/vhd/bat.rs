//! The VHD block allocation table (FORMATS.md B.7), read on demand (see
//! [`crate::storage::table`]): big-endian u32 sector numbers, 0xFFFFFFFF = not allocated.

use crate::storage::table::Table;

/// The VHD BAT.
pub type BatReader = Table<u32>;

/// A reader for the `entries`-entry BAT at file `offset`.
pub fn bat_reader(offset: u64, entries: u64) -> BatReader {
    Table::new("VHD BAT", offset, entries)
}
