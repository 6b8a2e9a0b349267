//! VHDX images made by qemu-img and filled by qemu-io: our reads equal qemu's raw export.

use super::common::*;
use std::path::Path;
use vhdx_core::{Disk, VirtualDisk};

fn make(dir: &Path, name: &str, opts: &str, size: &str, seed: u64) -> std::path::PathBuf {
    make_qemu_image(dir, name, "vhdx", opts, size, seed)
}

#[test]
fn qemu_vhdx_matches_qemu_raw_export() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("d1.vhdx", "block_size=1M,block_state_zero=off", "70M"),
        ("d8.vhdx", "block_size=8M,block_state_zero=on", "100M"),
        ("d32.vhdx", "block_size=32M,block_state_zero=off", "129M"),
        ("d32z.vhdx", "block_size=32M", "64M"),
        ("fixed.vhdx", "subformat=fixed,block_state_zero=off", "24M"),
        ("fixedz.vhdx", "subformat=fixed", "24M"),
    ];
    for (i, (name, opts, size)) in cases.iter().enumerate() {
        let p = make(
            dir.path(),
            name,
            opts,
            size,
            0x9E37_79B9_7F4A_7C15 ^ i as u64,
        );
        let d = Disk::open(&p).unwrap();
        assert_eq!(d.size(), qemu_virtual_size(&p, "vhdx"), "{name}");
        let theirs = qemu_raw(&p, "vhdx");
        for piece in [1 << 20, 4096 + 512, 7 << 20] {
            assert_same(
                &read_all(&d, piece),
                &theirs,
                &format!("{name} piece {piece}"),
            );
        }
    }
}

#[test]
fn check_reports_leaked_space_but_not_creator_padding() {
    let dir = tempfile::tempdir().unwrap();
    let p = make(
        dir.path(),
        "leak.vhdx",
        "block_size=1M,block_state_zero=off",
        "32M",
        7,
    );
    let fresh = Disk::open(&p).unwrap().check();
    assert!(!fresh.is_corrupt(), "{fresh:?}");
    assert!(
        !fresh.findings.iter().any(|f| f.message.contains("leaked")),
        "qemu's padding before the first block is not a leak: {fresh:?}"
    );
    // Space appended after the last block belongs to nothing.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len + (3 << 20)).unwrap();
    let r = Disk::open(&p).unwrap().check();
    assert!(!r.is_corrupt(), "{r:?}");
    let leak = r
        .findings
        .iter()
        .find(|f| f.message.contains("leaked"))
        .unwrap_or_else(|| panic!("no leak reported: {r:?}"));
    // Not damage: an interrupted write session leaves such space (reported as information).
    assert_eq!(leak.severity, vhdx_core::Severity::Info);
    assert!(
        leak.message.starts_with(&(3u64 << 20).to_string()),
        "{}",
        leak.message
    );
}
