//! One test per crash the fuzz targets found (fuzz/README.md), on stable Rust: each input is
//! kept as the target saw it (a patch list, `[u32 LE offset][u8 length][bytes]`, over a
//! base image from testdata) and replayed through the same library calls.

use super::common::testdata;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vhdx_core::storage::{MemStorage, Overlay, Storage};
use vhdx_core::{Disk, Image};

fn gunzip(rel: &str) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(testdata().join(rel)).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Applies `patches` as fuzz/src/lib.rs `apply_patches` does: offsets modulo `window`, from
/// `start`, clipped to the image.
fn patched(base: Vec<u8>, patches: &[u8], start: u64, window: u64) -> Arc<dyn Storage> {
    let mut ov = Overlay::new(Arc::new(MemStorage::new(base))).unwrap();
    let len = ov.len().unwrap();
    let mut p = patches;
    while p.len() >= 5 {
        let rel = u64::from(u32::from_le_bytes([p[0], p[1], p[2], p[3]])) % window.max(1);
        let off = (start + rel).min(len);
        let n = usize::from(p[4]).min(p.len() - 5);
        let m = n.min((len - off) as usize);
        ov.write(off, &p[5..5 + m]);
        p = &p[5 + n..];
    }
    Arc::new(ov)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// metadata_locator, 2026-11-27: a VHD whose dynamic header claims a BAT of ~2.6 million
/// entries that all lie beyond the virtual size made `check` keep one finding per entry —
/// 90 MB of messages (out of memory under the fuzzer's 512 MB limit). Fixed by bounding the
/// findings kept per structure (`report::MAX_FINDINGS_PER_STRUCTURE`).
#[test]
fn vhd_check_of_millions_of_bad_bat_entries_keeps_a_bounded_report() {
    let base = gunzip("chain/vhd/child.vhd.gz");
    // The target's window: the VHD's first bytes up to the end of its locator data.
    let d = Disk::from_bytes(base.clone()).unwrap();
    let Image::Vhd(v) = d.image() else { panic!() };
    let s = v.sparse().unwrap();
    let end = s
        .header
        .parent_locators
        .iter()
        .map(|l| l.platform_data_offset.get() + l.data_space_bytes())
        .max()
        .unwrap()
        .max(s.header_offset + 1024);
    let input = hex(concat!(
        "0100020000406378737061727365fffffffff5ffffff0000000000000600000100000021080000200000",
        "ff5d007a000b0b0000000000000100000000000009090909090909090b0b0b0800000b0b57326b750a00",
        "54545454545454545454545454545454544454545454545454545454161616161616161616161672727272",
        "727272727272727272727272727272727272727272727272727272727272727272727272727272ffffffff",
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "00000000000a00"
    ));
    assert_eq!(input[0] & 1, 1, "the VHD base");
    let t = Instant::now();
    let storage = patched(base, &input[1..], 0, end);
    if let Ok(disk) = Disk::from_storage(storage, "fuzz") {
        let report = disk.check();
        let structures: std::collections::HashSet<_> =
            report.findings.iter().map(|f| &f.structure).collect();
        let bound = structures.len() * (vhdx_core::report::MAX_FINDINGS_PER_STRUCTURE + 1);
        assert!(
            report.findings.len() <= bound,
            "{} findings",
            report.findings.len()
        );
    }
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
}
