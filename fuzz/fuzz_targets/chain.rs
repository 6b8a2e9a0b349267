//! Fuzz target: a differencing disk and its parent, both supplied by the fuzzer as patches
//! to a real chain (testdata/chain: `vhdx512`, `vhdx4k` or `vhd`, base <- child), opened
//! together from memory with `Disk::from_storages` and read through.
//!
//! Input: `[mode][u16 LE n][n bytes of child patches][parent patches…]`. Mode bits 0-1 pick
//! the chain; bit 2 turns the linkage check off (the explicit override). Patch offsets are
//! taken modulo 4 MiB (headers, metadata, block tables, bitmaps and the first blocks).
//! Whatever the bytes, the chain either fails to open with an error or reads without a
//! panic; with the linkage check on, an opened parent carries an identity the child names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use vhdx_core::storage::{MemStorage, Overlay, Storage};
use vhdx_core::{Disk, OpenOptions};
use vhdx_fuzz::{apply_patches, embedded, exercise_within, read_data_ranges};

type Pair = (Arc<dyn Storage>, Arc<dyn Storage>);

fn chains() -> &'static [Pair; 3] {
    static C: OnceLock<[Pair; 3]> = OnceLock::new();
    C.get_or_init(|| {
        let s = |gz: &[u8]| Arc::new(MemStorage::new(embedded(gz))) as Arc<dyn Storage>;
        [
            (
                s(include_bytes!("../../testdata/chain/vhdx512/child.vhdx.gz")),
                s(include_bytes!("../../testdata/chain/vhdx512/base.vhdx.gz")),
            ),
            (
                s(include_bytes!("../../testdata/chain/vhdx4k/child.vhdx.gz")),
                s(include_bytes!("../../testdata/chain/vhdx4k/base.vhdx.gz")),
            ),
            (
                s(include_bytes!("../../testdata/chain/vhd/child.vhd.gz")),
                s(include_bytes!("../../testdata/chain/vhd/base.vhd.gz")),
            ),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let mode = data[0];
    let n = usize::from(u16::from_le_bytes([data[1], data[2]])).min(data.len() - 3);
    let (child_p, parent_p) = data[3..].split_at(n);
    let (child, parent) = &chains()[usize::from(mode & 3) % 3];
    let patched = |base: &Arc<dyn Storage>, p: &[u8]| -> Option<Arc<dyn Storage>> {
        let mut ov = Overlay::new(base.clone()).ok()?;
        apply_patches(&mut ov, p, 0, 4 << 20);
        Some(Arc::new(ov))
    };
    let (Some(c), Some(p)) = (patched(child, child_p), patched(parent, parent_p)) else {
        return;
    };
    let opts = OpenOptions {
        verify_linkage: mode & 4 == 0,
        ..OpenOptions::default()
    };
    let Ok(disk) = Disk::from_storages(vec![(c, "child".into()), (p, "parent".into())], &opts)
    else {
        return;
    };
    if opts.verify_linkage {
        let info = disk
            .parent_info()
            .expect("a differencing disk has parent info");
        assert_eq!(
            info.status, "ok",
            "a parent was followed without a matching identity"
        );
    }
    // The first blocks sector by sector (unaligned pieces), then what the map says is
    // stored, up to a bound that keeps a run near 10 ms.
    exercise_within(&disk, 2 << 20);
    let _ = read_data_ranges(&disk, 4 << 20);
});
