//! Filesystem-aware compaction and free-space trimming (issue #6 items 3 and 5) against file
//! systems made by their own tools: mkfs.ext2/ext4 and debugfs (e2fsprogs), mkntfs, ntfscp
//! and ntfscat (ntfs-3g), sfdisk and sgdisk; images turned into VHDX/VHD by qemu-img.
//!
//! The oracles: our free map equals `dumpe2fs`'s free block list (every group, every
//! layout); after compaction `e2fsck -fn` and `ntfsfix -n` are clean on the image as
//! qemu-img (or libvhdi, for differencing disks) reads it back, every file reads back
//! byte-identical, and the file shrinks to about the live data. Volumes that are not clean
//! are skipped with their reason and keep every byte.
//!
//! Tests that need a tool fail under CI when it is missing and skip elsewhere.

use super::common::{self, run, Rng};
use std::path::Path;
use std::process::Command;
use vhdx_core::guest;
use vhdx_core::guest::freespace::FreeSpace;

use vhdx_core::{Disk, Format, OpenOptions, VirtualDisk};

const MIB: u64 = 1 << 20;

/// Whether every tool is on the PATH (or in /sbin); under CI a missing one fails the test.
fn have(tools: &[&str]) -> bool {
    for t in tools {
        let found = Command::new("sh")
            .args([
                "-c",
                &format!("command -v {t} || test -x /sbin/{t} || test -x /usr/sbin/{t}"),
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            if common::in_ci() {
                panic!("{t} is missing under CI (scripts/test.sh installs it)");
            }
            eprintln!("skipping: {t} not installed");
            return false;
        }
    }
    true
}

/// A command from /sbin or /usr/sbin too (debugfs, mkfs.* live there).
fn cmd(tool: &str) -> Command {
    for dir in ["/usr/sbin", "/sbin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return Command::new(p);
        }
    }
    Command::new(tool)
}

/// Deterministic pseudo-random bytes.
fn junk(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Raw-image disk for our reader.
fn open_raw(path: &Path) -> Disk {
    let opts = OpenOptions {
        format: Some(Format::Raw),
        ..OpenOptions::default()
    };
    Disk::open_with(path, &opts).unwrap()
}

/// `mkfs.TYPE -q -F [args] IMG` on a new raw image of `size` bytes.
fn mkfs_ext(img: &Path, size: u64, kind: &str, args: &[&str]) {
    let f = std::fs::File::create(img).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    run(cmd(&format!("mkfs.{kind}"))
        .args(["-q", "-F"])
        .args(args)
        .arg(img));
}

/// `debugfs -w -R REQUEST IMG`.
fn debugfs_w(img: &Path, request: &str) {
    let out = run(cmd("debugfs").args(["-w", "-R", request]).arg(img));
    let _ = out;
}

/// Writes `data` as `/name` into the ext image with debugfs.
fn ext_put(img: &Path, name: &str, data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    std::fs::write(&src, data).unwrap();
    debugfs_w(img, &format!("write {} {name}", src.display()));
}

/// `/name` of the ext image as `debugfs -R cat` reads it.
fn ext_cat(img: &Path, name: &str) -> Vec<u8> {
    run(cmd("debugfs")
        .args(["-R", &format!("cat /{name}")])
        .arg(img))
}

/// `e2fsck -fn IMG` passes (exit 0, nothing to fix).
fn e2fsck_clean(img: &Path) {
    let out = cmd("e2fsck").args(["-fn"]).arg(img).output().unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn {}: {}\n{}",
        img.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The free blocks `dumpe2fs` lists (its `Free blocks:` line of every group), merged, as
/// `(first block, count)`, and the block size. With bigalloc dumpe2fs ends a range at the
/// first block of its last cluster; the count here covers that whole cluster.
fn dumpe2fs_free(img: &Path) -> (Vec<(u64, u64)>, u64) {
    let out = run(cmd("dumpe2fs").arg(img));
    let text = String::from_utf8_lossy(&out);
    let mut bs = 0;
    let mut ratio = 1;
    let mut v: Vec<(u64, u64)> = Vec::new();
    for line in text.lines() {
        if let Some(b) = line.strip_prefix("Block size:") {
            bs = b.trim().parse().unwrap();
        }
        if let Some(c) = line.strip_prefix("Cluster size:") {
            ratio = c.trim().parse::<u64>().unwrap() / bs;
        }
        let Some(list) = line.strip_prefix("  Free blocks: ") else {
            continue;
        };
        for part in list.split(", ").filter(|p| !p.trim().is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse::<u64>().unwrap(),
                    b.trim().parse::<u64>().unwrap(),
                ),
                None => {
                    let a = part.trim().parse::<u64>().unwrap();
                    (a, a)
                }
            };
            let n = b - a + ratio;
            match v.last_mut() {
                Some(l) if l.0 + l.1 == a => l.1 += n,
                _ => v.push((a, n)),
            }
        }
    }
    assert!(bs > 0, "no block size in dumpe2fs output");
    (v, bs)
}

/// Our free ranges of the single volume of `disk`, or the skip.
fn our_free(disk: &dyn VirtualDisk) -> FreeSpace {
    let layout = guest::inspect(disk).unwrap();
    assert_eq!(layout.volumes.len(), 1, "{layout:?}");
    vhdx_core::guest::freespace::free_ranges(disk, &layout.volumes[0]).unwrap()
}

/// Asserts our map of the ext image at `img` (a whole-disk file system) is exactly what
/// dumpe2fs lists.
fn assert_ext_map_exact(img: &Path) {
    let (want, bs) = dumpe2fs_free(img);
    let got = match our_free(&open_raw(img)) {
        FreeSpace::Free(r) => r,
        FreeSpace::Skipped(s) => panic!("{}: skipped: {s:?}", img.display()),
    };
    let got: Vec<(u64, u64)> = got.iter().map(|&(o, l)| (o / bs, l / bs)).collect();
    assert_eq!(
        got,
        want,
        "{}: free blocks differ from dumpe2fs",
        img.display()
    );
}

#[test]
fn ext_free_map_equals_dumpe2fs() {
    if !have(&["mkfs.ext4", "mkfs.ext2", "debugfs", "dumpe2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, u64, &[&str])] = &[
        ("ext4", 64 * MIB, &[]),
        ("ext4", 48 * MIB, &["-b", "4096"]),
        ("ext4", 40 * MIB, &["-b", "4096", "-O", "^flex_bg"]),
        (
            "ext4",
            40 * MIB,
            &["-b", "1024", "-O", "^metadata_csum,uninit_bg"],
        ),
        ("ext4", 40 * MIB, &["-b", "2048", "-O", "^64bit"]),
        (
            "ext4",
            64 * MIB,
            &["-b", "1024", "-O", "meta_bg,^resize_inode"],
        ),
        (
            "ext4",
            64 * MIB,
            &["-b", "4096", "-O", "bigalloc", "-C", "16384"],
        ),
        ("ext4", 64 * MIB, &["-b", "4096", "-O", "sparse_super2"]),
        ("ext4", 64 * MIB, &["-b", "65536"]),
        ("ext2", 40 * MIB, &[]),
        (
            "ext3",
            40 * MIB,
            &["-b", "4096", "-O", "^sparse_super,^resize_inode"],
        ),
    ];
    for (i, &(kind, size, args)) in cases.iter().enumerate() {
        let img = dir.path().join(format!("{i}.img"));
        mkfs_ext(&img, size, kind, args);
        assert_ext_map_exact(&img);
        // Files, some deleted: bitmaps written in several groups.
        for f in 0..6u64 {
            ext_put(
                &img,
                &format!("f{f}"),
                &junk((300 + 700 * f as usize) * 1024, f + 1),
            );
        }
        for f in [1, 4] {
            debugfs_w(&img, &format!("rm f{f}"));
        }
        assert_ext_map_exact(&img);
        e2fsck_clean(&img);
    }
}
