//! The VHDX block allocation table, read on demand (see [`crate::storage::table`]).

use crate::storage::table::Table;

/// The VHDX BAT: little-endian u64 entries.
pub type BatReader = Table<u64>;

/// A reader for the `entries`-entry BAT at file `offset`.
pub fn bat_reader(offset: u64, entries: u64) -> BatReader {
    Table::new("VHDX BAT", offset, entries)
}
