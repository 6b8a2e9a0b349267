//! Fuzz target: what the guest sees — partition tables, volume detection and the ext/NTFS
//! free-space maps — over a raw disk in memory: patches (`[u32 LE offset][u8 length][bytes]`,
//! offsets modulo the disk size) to testdata/fuzz/base.guest.raw.gz, a 12 MiB disk with a
//! GPT, an ext4 volume and an NTFS volume.
//!
//! Checked besides "no panic": free ranges are sorted, do not overlap and lie inside their
//! volume.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use vhdx_core::guest::freespace::{free_ranges, FreeMap, FreeSpace};
use vhdx_core::storage::{MemStorage, Overlay, Storage};
use vhdx_core::{Disk, Format, OpenOptions};
use vhdx_fuzz::{apply_patches, embedded};

fn base() -> Arc<dyn Storage> {
    static B: OnceLock<Arc<dyn Storage>> = OnceLock::new();
    B.get_or_init(|| {
        Arc::new(MemStorage::new(embedded(include_bytes!(
            "../../testdata/fuzz/base.guest.raw.gz"
        ))))
    })
    .clone()
}

fn raw_disk(storage: Arc<dyn Storage>) -> Option<Disk> {
    let opts = OpenOptions {
        format: Some(Format::Raw),
        ..OpenOptions::default()
    };
    Disk::from_storages(vec![(storage, "guest".into())], &opts).ok()
}

fuzz_target!(|data: &[u8]| {
    let base = base();
    let len = base.len().unwrap_or(1);
    let Ok(mut ov) = Overlay::new(base) else {
        return;
    };
    apply_patches(&mut ov, data, 0, len);
    let Some(disk) = raw_disk(Arc::new(ov)) else {
        return;
    };
    if let Ok(layout) = vhdx_core::guest::inspect(&disk) {
        for v in &layout.volumes {
            if let Ok(FreeSpace::Free(ranges)) = free_ranges(&disk, v) {
                let mut prev_end = v.offset;
                for &(o, l) in &ranges {
                    assert!(o >= prev_end, "free ranges unsorted or overlapping");
                    let end = o.checked_add(l).expect("free range overflows");
                    assert!(end <= v.offset + v.length, "free range past its volume");
                    prev_end = end;
                }
            }
        }
    }
    if let Ok(map) = FreeMap::read(&disk) {
        let _ = map.coverage(0, 1 << 20);
        let _ = map.coverage(6 << 20, 4 << 20);
    }
});
