//! Integration tests of vhdx-core (one test binary; one module per area).

mod chain;
mod chain_usage;
mod common;
mod compact;
mod concurrency;
mod convert;
mod crash;
mod create;
mod faults;
mod fscompact;
mod fuzz_regressions;
mod guest;
mod hostile;
mod locking;
mod merge;
mod mutate;
mod ntfs_edit;
mod relink;
mod resize;
mod resize_partitions;
mod vhd_read;
mod vhdx_log;
mod vhdx_read;
mod vhdx_structure;
mod write;
