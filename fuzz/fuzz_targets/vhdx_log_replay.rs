//! Fuzz target: a VHDX whose log is patched (testdata/dirty-log-a.vhdx, a QEMU log with one
//! entry awaiting replay), replayed twice — in memory by a read-only open, and onto a
//! copy-on-write "file" by `replay_onto_file` — and the two results compared: both must
//! read the same bytes wherever both open.
//!
//! Input: `[mode][patches…]`. Mode bit 0 set: patch offsets are relative to the log region
//! (modulo its length); clear: relative to the file start (modulo 4 MiB, which covers the
//! headers, region tables, log, metadata and BAT of the base).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use vhdx_core::storage::{MemStorage, Overlay, Storage};
use vhdx_core::{Disk, Image, VirtualDisk};
use vhdx_fuzz::{apply_patches, read_data_ranges, CowStorage};

/// Virtual bytes read per disk per input.
const CAP: u64 = 8 << 20;

fn base() -> &'static (Arc<dyn Storage>, u64, u64) {
    static B: OnceLock<(Arc<dyn Storage>, u64, u64)> = OnceLock::new();
    B.get_or_init(|| {
        let bytes = vhdx_fuzz::embedded(include_bytes!("../../testdata/dirty-log-a.vhdx.gz"));
        let s: Arc<dyn Storage> = Arc::new(MemStorage::new(bytes));
        let d = Disk::from_storage(s.clone(), "base").expect("base image opens");
        let Image::Vhdx(v) = d.image() else {
            panic!("base is a VHDX")
        };
        let li = v.log_info();
        (s, li.offset, u64::from(li.length))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, patches)) = data.split_first() else {
        return;
    };
    let (base, log_off, log_len) = base();
    // Two copies of the patched image: one read through an in-memory replay, one replayed
    // onto.
    let patched = || {
        let mut ov = Overlay::new(base.clone()).ok()?;
        if mode & 1 == 1 {
            apply_patches(&mut ov, patches, *log_off, *log_len);
        } else {
            apply_patches(&mut ov, patches, 0, 4 << 20);
        }
        Some(Arc::new(CowStorage::new(ov)))
    };
    let (Some(read_only), Some(patched)) = (patched(), patched()) else {
        return;
    };
    // 1. In memory (read-only open).
    let in_memory = Disk::from_storage(read_only, "fuzz");
    let a = in_memory.as_ref().ok().map(|d| {
        let _ = d.info(false);
        let _ = d.check();
        read_data_ranges(d, CAP)
    });
    // 2. Onto the "file".
    let replayed = vhdx_core::vhdx::log::replay_onto_file(&*patched);
    if replayed.is_err() {
        return;
    }
    let Ok(after) = Disk::from_storage(patched.clone(), "fuzz-replayed") else {
        return;
    };
    let _ = after.check();
    let (Some(a), Ok(disk_a)) = (a, in_memory) else {
        return;
    };
    assert_eq!(
        disk_a.size(),
        after.size(),
        "virtual size differs after replay onto the file"
    );
    for (off, bytes) in &a {
        let mut b = vec![0u8; bytes.len()];
        if after.read_at(&mut b, *off).is_ok() {
            assert!(b == *bytes, "in-memory and on-file replays differ at {off}");
        }
    }
    for (off, bytes) in read_data_ranges(&after, CAP) {
        let mut b = vec![0u8; bytes.len()];
        if disk_a.read_at(&mut b, off).is_ok() {
            assert!(b == bytes, "on-file and in-memory replays differ at {off}");
        }
    }
});
