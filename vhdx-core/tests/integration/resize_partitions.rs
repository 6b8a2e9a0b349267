//! Partition-aware resizing (issue #6 item 4): a resize never cuts a partition, `--to-minimum`
//! stops at the end of the last one (plus a GPT's backup copy), and a GPT disk gets its backup
//! header and entry array at the new end with the primary header updated. Judged by the
//! partitioning tools themselves on QEMU's raw export of the result: `sgdisk -v` finds no
//! problems and `sgdisk -i` / `sfdisk --json` list the same partitions, and every byte of
//! every partition is unchanged.

use super::common::*;
use std::path::{Path, PathBuf};
use vhdx_core::ops::convert::{convert, ConvertOptions};
use vhdx_core::write::resize::{resize, resize_to_minimum};
use vhdx_core::{Disk, DiskType, ErrorKind, Format, OpenOptions};

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A 64 MiB raw disk partitioned by `sgdisk` (GPT: 20 MiB at 1 MiB, 10 MiB after it) or
/// `sfdisk` (MBR: the same two partitions), each partition filled with its own pattern;
/// returns the path and the partitions' `(start, length)` in bytes.
fn partitioned_raw(dir: &Path, gpt: bool) -> (PathBuf, Vec<(u64, u64)>) {
    let p = dir.join(if gpt { "gpt.raw" } else { "mbr.raw" });
    std::fs::File::create(&p)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    if gpt {
        run(sbin_command("sgdisk").args([
            "-n",
            "1:2048:+20M",
            "-t",
            "1:8300",
            "-n",
            "2:0:+10M",
            "-t",
            "2:0700",
            s(&p),
        ]));
    } else {
        let mut c = sbin_command("sfdisk");
        c.args(["-q", s(&p)]).stdin(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(
                b"label: dos\nstart=2048, size=40960, type=83\nstart=43008, size=20480, type=7\n",
            )
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    let parts = vec![(MIB, 20 * MIB), (21 * MIB, 10 * MIB)];
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    let mut rng = Rng(if gpt { 61 } else { 62 });
    for &(start, len) in &parts {
        // Data at the first and last sectors of each partition and a stretch in between.
        for at in [start, start + len / 2, start + len - 64 * 1024] {
            let buf: Vec<u8> = (0..64 * 1024).map(|_| rng.next() as u8).collect();
            std::os::unix::fs::FileExt::write_all_at(&f, &buf, at).unwrap();
        }
    }
    (p, parts)
}

/// QEMU's raw export of `image` (format `fmt`).
fn export(image: &Path, fmt: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!(
        "{}.export.raw",
        image.file_name().unwrap().to_str().unwrap()
    ));
    let _ = std::fs::remove_file(&out);
    qemu_img(&["convert", "-f", fmt, "-O", "raw", s(image), s(&out)]);
    out
}

/// `sgdisk -v` on `raw` reports no problems.
fn sgdisk_clean(raw: &Path) {
    let out = sbin_command("sgdisk")
        .args(["-v", s(raw)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("No problems found"),
        "sgdisk -v {}: {text}{}",
        raw.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The partitions' bytes in `raw` equal those in `orig`.
fn same_partitions(orig: &Path, raw: &Path, parts: &[(u64, u64)]) {
    let a = std::fs::read(orig).unwrap();
    let b = std::fs::read(raw).unwrap();
    for &(start, len) in parts {
        let r = start as usize..(start + len) as usize;
        assert_same(
            &b[r.clone()],
            &a[r],
            &format!("partition at {start} in {}", raw.display()),
        );
    }
}

/// The partition list a tool prints (`sgdisk -p` without its disk-size lines, or
/// `sfdisk --dump` without the device names and last-lba line).
fn listing(raw: &Path, gpt: bool) -> Vec<String> {
    let out = if gpt {
        run(sbin_command("sgdisk").args(["-p", s(raw)]))
    } else {
        run(sbin_command("sfdisk").args(["--dump", s(raw)]))
    };
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with(|c: char| c.is_ascii_digit()) || l.contains("start=")
        })
        .map(|l| match l.find(':') {
            Some(i) if !gpt => l[i..].to_string(),
            _ => l.to_string(),
        })
        .collect()
}

/// The images every case runs on: a dynamic VHDX (1 MiB blocks) and a fixed VHDX made by
/// qemu-img, a dynamic and a fixed VHD made by `vhdx convert` (creator `win `, so QEMU takes
/// the footer's size as it is rather than a CHS approximation).
fn images(raw: &Path, dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let mut out = Vec::new();
    for (name, opts) in [
        ("dyn.vhdx", "subformat=dynamic,block_size=1M"),
        ("fixed.vhdx", "subformat=fixed"),
    ] {
        let p = dir.join(name);
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vhdx",
            "-o",
            opts,
            s(raw),
            s(&p),
        ]);
        out.push((p, "vhdx"));
    }
    let src = Disk::open_with(
        raw,
        &OpenOptions {
            format: Some(Format::Raw),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    for (name, t) in [
        ("dyn.vhd", DiskType::Dynamic),
        ("fixed.vhd", DiskType::Fixed),
    ] {
        let p = dir.join(name);
        convert(
            &src,
            &p,
            &ConvertOptions::new(Format::Vhd).disk_type(t),
            None,
        )
        .unwrap();
        out.push((p, "vpc"));
    }
    out
}

fn gpt_or_mbr(gpt: bool) {
    if !have_tools(&["sgdisk", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, parts) = partitioned_raw(d, gpt);
    let before = listing(&raw, gpt);
    let last_end = parts.iter().map(|p| p.0 + p.1).max().unwrap();
    // GPT: 32 sectors of entries and the header after the last partition.
    let tail = if gpt { 33 * SECTOR } else { 0 };
    let o = OpenOptions::default();
    for (img, fmt) in images(&raw, d) {
        let what = img.display().to_string();
        let judge = |size: u64| {
            let out = export(&img, fmt, d);
            assert_eq!(std::fs::metadata(&out).unwrap().len(), size, "{what}");
            if gpt {
                sgdisk_clean(&out);
            }
            assert_eq!(listing(&out, gpt), before, "{what}");
            same_partitions(&raw, &out, &parts);
            if fmt == "vhdx" {
                qemu_img(&["check", "-q", "-f", "vhdx", s(&img)]);
            }
        };
        // Grow: the backup GPT moves to the new end.
        let st = resize(&img, 96 * MIB, &o, None).unwrap();
        assert_eq!(st.gpt_relocated, gpt, "{what}");
        judge(96 * MIB);
        // Shrink past nothing: the backup comes back inside.
        let st = resize(&img, 40 * MIB, &o, None).unwrap();
        assert_eq!(st.gpt_relocated, gpt, "{what}");
        judge(40 * MIB);
        // Into the second partition (or its GPT tail): refused, nothing changes.
        for bad in [last_end - MIB, last_end + tail - SECTOR] {
            if bad == last_end - SECTOR && !gpt {
                continue;
            }
            let e = resize(&img, bad / SECTOR * SECTOR, &o, None).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{what}: {e}");
            assert!(e.to_string().contains("partition 2"), "{what}: {e}");
            judge(40 * MIB);
        }
        // To the minimum: the end of the last partition (and the GPT tail), rounded up to a
        // whole block (1 MiB for these images, and for fixed disks).
        let st = resize_to_minimum(&img, &o, None).unwrap();
        let want = (last_end + tail).div_ceil(MIB) * MIB;
        let want = if fmt == "vpc" && img.to_str().unwrap().contains("dyn") {
            (last_end + tail).div_ceil(2 * MIB) * 2 * MIB
        } else {
            want
        };
        assert_eq!(st.size_after, want, "{what}");
        judge(want);
    }
}

#[test]
fn gpt_disks_keep_their_partitions_and_move_the_backup_header() {
    gpt_or_mbr(true);
}

#[test]
fn mbr_disks_keep_their_partitions() {
    gpt_or_mbr(false);
}
