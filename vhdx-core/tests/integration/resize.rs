//! Resizing (issue #5 item 5): growing and shrinking every type, checked with qemu-img
//! (`info` for the virtual size, `check`, `compare` for the content below the old size and
//! zeros beyond it) and libvhdi (4K-sector VHDX, which QEMU cannot open, and VHD), plus our
//! own reader; growths that force the block table to grow past blocks, the metadata region
//! and VHD parent locators; and a resize killed at random moments.

use super::common::*;
use super::write::{our_check, qemu_check};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::write::resize::{resize, resize_to_minimum};
use vhdx_core::{Disk, DiskType, ErrorKind, OpenOptions, VirtualDisk};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn opts() -> OpenOptions {
    OpenOptions::default()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// `qemu-img compare -f A_FMT -F B_FMT a b` succeeds: the common part is identical and the
/// larger image reads zeros past the smaller one's end (`strict` also demands equal sizes).
fn qemu_same(a: &Path, a_fmt: &str, b: &Path, b_fmt: &str, strict: bool) {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["compare", "-f", a_fmt, "-F", b_fmt]);
    if strict {
        cmd.arg("-s");
    }
    let out = cmd.arg(a).arg(b).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A qemu-made image with data in its first, middle and last blocks (and a partial block).
fn qemu_image(dir: &Path, name: &str, fmt: &str, opts: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        fmt,
        "-o",
        opts,
        s(&p),
        &size.to_string(),
    ]);
    let last = size - 3 * MIB / 2;
    qemu_io(&[
        "-f",
        fmt,
        "-c",
        "write -P 0x11 0 3M",
        "-c",
        "write -P 0x22 20M 5M",
        "-c",
        &format!("write -P 0x33 {last} {}", 3 * MIB / 2),
        "-c",
        "write -P 0x44 9437184 4096",
        s(&p),
    ]);
    p
}

/// QEMU's view of a grown image: its first `old` bytes (exported with `qemu-img dd`) are
/// `orig`'s, and it reads zeros just past them and at its end. For VHD, `qemu-img compare`
/// (which walks a VHDX byte by byte: over a minute for 1 TiB).
fn qemu_grown_same(orig: &Path, grown: &Path, fmt: &str) {
    if fmt == "vpc" {
        return qemu_same(orig, fmt, grown, fmt, false);
    }
    let (old, new) = (qemu_virtual_size(orig, fmt), qemu_virtual_size(grown, fmt));
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head.raw");
    let bs = [MIB, 65536, 4096, 512]
        .into_iter()
        .find(|b| old % b == 0)
        .unwrap();
    qemu_img(&[
        "dd",
        "-f",
        fmt,
        "-O",
        "raw",
        &format!("bs={bs}"),
        &format!("count={}", old / bs),
        &format!("if={}", s(grown)),
        &format!("of={}", s(&head)),
    ]);
    assert_same(
        &std::fs::read(&head).unwrap(),
        &qemu_raw(orig, fmt),
        "qemu-img dd",
    );
    let n = (new - old).min(MIB);
    qemu_io(&[
        "-f",
        fmt,
        "-c",
        &format!("read -P 0 {old} {n}"),
        "-c",
        &format!("read -P 0 {} {n}", new - n),
        s(grown),
    ]);
}

fn copy(p: &Path, name: &str) -> PathBuf {
    let c = p.with_file_name(name);
    std::fs::copy(p, &c).unwrap();
    c
}

#[test]
fn vhdx_grows_past_blocks_and_metadata_and_shrinks_back() {
    let dir = tempfile::tempdir().unwrap();
    // QEMU's layout (log, BAT, metadata at 3 MiB, blocks from 8 MiB) and ours (blocks right
    // after the metadata at 4 MiB): growing to 1 TiB with 1 MiB blocks needs a 9 MiB BAT.
    let theirs = qemu_image(dir.path(), "q.vhdx", "vhdx", "block_size=1M", 64 * MIB);
    let ours = dir.path().join("o.vhdx");
    create(
        &ours,
        &CreateOptions::new().size(64 * MIB).block_size(1 << 20),
    )
    .unwrap();
    qemu_io(&[
        "-f",
        "vhdx",
        "-c",
        "write -P 0x55 0 6M",
        "-c",
        "write -P 0x66 63M 1M",
        s(&ours),
    ]);
    for p in [theirs, ours] {
        let what = p.file_name().unwrap().to_string_lossy().into_owned();
        let orig = copy(&p, "orig.vhdx");
        let st = resize(&p, 1 << 40, &opts(), None).unwrap();
        assert!(st.block_table_grown, "{what}: {st:?}");
        assert!(
            st.blocks_moved >= 2,
            "{what}: metadata and blocks move: {st:?}"
        );
        assert_eq!((st.size_before, st.size_after), (64 * MIB, 1 << 40));
        assert_eq!(qemu_virtual_size(&p, "vhdx"), 1 << 40, "{what}");
        qemu_check(&p);
        our_check(&p);
        qemu_grown_same(&orig, &p, "vhdx");
        // libvhdi agrees on the old part and on zeros far out.
        let w = [(0, 64 * MIB), (700 * GIB, MIB), ((1 << 40) - MIB, MIB)];
        let mut want = our_read_all(&orig);
        want.extend(vec![0u8; 2 * MIB as usize]);
        assert_same(&pyvhdi_windows(&p, &[], &w), &want, &what);
        // Data written past the old end stops a shrink; the error names its end.
        qemu_io(&["-f", "vhdx", "-c", "write -P 0x77 100G 4096", s(&p)]);
        let err = resize(&p, 64 * MIB, &opts(), None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.to_string().contains(&(100 * GIB + 4096).to_string()),
            "{err}"
        );
        let st = resize_to_minimum(&p, &opts(), None).unwrap();
        assert_eq!(st.size_after, 100 * GIB + MIB, "{what}");
        qemu_check(&p);
        qemu_io(&["-f", "vhdx", "-c", "read -P 0x77 100G 4096", s(&p)]);
        // Trimmed away, the minimum is the old size again, and the file is cut after it.
        let d = Disk::open_rw(&p, &opts()).unwrap();
        d.trim(100 * GIB, MIB).unwrap();
        d.close().unwrap();
        let st = resize_to_minimum(&p, &opts(), None).unwrap();
        assert_eq!(st.size_after, 64 * MIB, "{what}");
        assert!(st.file_len_after < st.file_len_before, "{what}: {st:?}");
        qemu_check(&p);
        our_check(&p);
        qemu_same(&orig, "vhdx", &p, "vhdx", true);
        std::fs::remove_file(&orig).unwrap();
    }
}

#[test]
fn vhdx_4k_sectors_32m_blocks_and_partial_last_block() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("4k.vhdx");
    let size = 80 * MIB + 4096;
    create(
        &p,
        &CreateOptions::new()
            .size(size)
            .logical_sector_size(4096)
            .block_size(32 << 20),
    )
    .unwrap();
    let mut want = vec![0u8; size as usize];
    let d = Disk::open_rw(&p, &opts()).unwrap();
    for (off, n, b) in [
        (0, 8192, 0x11u8),
        (33 * MIB, 2 * MIB, 0x22),
        (size - 8192, 8192, 0x33),
    ] {
        d.write_at(&vec![b; n as usize], off).unwrap();
        want[off as usize..(off + n) as usize].fill(b);
    }
    d.close().unwrap();
    // To 64 TiB: a 17 MiB BAT, so the metadata and the first 32 MiB block move.
    let st = resize(&p, 64 << 40, &opts(), None).unwrap();
    assert!(st.block_table_grown && st.blocks_moved >= 2, "{st:?}");
    our_check(&p);
    let w = [(0, size), (size, 32 * MIB), ((64 << 40) - 4096, 4096)];
    let mut grown = want.clone();
    grown.extend(vec![0u8; 32 * MIB as usize + 4096]);
    assert_same(&pyvhdi_windows(&p, &[], &w), &grown, "pyvhdi after growth");
    let d = Disk::open(&p).unwrap();
    assert_eq!(d.size(), 64 << 40);
    let mut b = vec![0u8; (size + 32 * MIB) as usize];
    d.read_at(&mut b, 0).unwrap();
    assert_same(&b, &grown[..b.len()], "ours after growth");
    drop(d);
    // Not a multiple of the logical sector size; below the data; then the minimum: the
    // end of the last block (96 MiB).
    let err = resize(&p, 100 * MIB + 512, &opts(), None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = resize(&p, 64 * MIB, &opts(), None).unwrap_err();
    assert!(err.to_string().contains(&size.to_string()), "{err}");
    let st = resize_to_minimum(&p, &opts(), None).unwrap();
    assert_eq!(st.size_after, 96 * MIB);
    assert_eq!(st.minimum_size, Some(96 * MIB));
    our_check(&p);
    want.resize(96 * MIB as usize, 0);
    assert_same(&pyvhdi_read_all(&p, &[]), &want, "pyvhdi after shrink");
    assert_same(&our_read_all(&p), &want, "ours after shrink");
}

/// A VHDX whose BAT cannot grow in place (an optional region of another tool follows the
/// metadata) gets its BAT moved to the end of the file; the region is kept.
#[test]
fn vhdx_bat_moves_when_another_region_is_in_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.vhdx");
    create(&p, &CreateOptions::new().size(64 * MIB).block_size(1 << 20)).unwrap();
    // Our layout: BAT at 2 MiB, metadata at 3 MiB, end at 4 MiB. A third, optional region
    // at 4 MiB, added to both region tables.
    let mut f = std::fs::read(&p).unwrap();
    f.resize(5 * MIB as usize, 0xAB);
    for base in [192 * 1024usize, 256 * 1024] {
        let t = &mut f[base..base + 65536];
        t[8..12].copy_from_slice(&3u32.to_le_bytes());
        let e = 16 + 64;
        t[e..e + 16].copy_from_slice(&[0x5A; 16]);
        t[e + 16..e + 24].copy_from_slice(&(4 * MIB).to_le_bytes());
        t[e + 24..e + 28].copy_from_slice(&(MIB as u32).to_le_bytes());
        t[4..8].fill(0);
        let crc = crc32c(t);
        t[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(&p, &f).unwrap();
    qemu_io(&["-f", "vhdx", "-c", "write -P 0x5b 1M 3M", s(&p)]);
    let orig = copy(&p, "orig.vhdx");
    let st = resize(&p, 1 << 40, &opts(), None).unwrap();
    assert!(st.block_table_grown && st.blocks_moved == 0, "{st:?}");
    qemu_check(&p);
    our_check(&p);
    qemu_grown_same(&orig, &p, "vhdx");
    let g = std::fs::read(&p).unwrap();
    assert!(g[4 * MIB as usize..5 * MIB as usize]
        .iter()
        .all(|&b| b == 0xAB));
}

/// CRC-32C (Castagnoli), bit by bit: the test's own, independent of the library's.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn vhdx_fixed_grows_with_allocated_blocks_and_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.vhdx");
    create(
        &p,
        &CreateOptions::new()
            .size(64 * MIB)
            .disk_type(DiskType::Fixed)
            .block_size(8 << 20),
    )
    .unwrap();
    qemu_io(&["-f", "vhdx", "-c", "write -P 0x21 60M 4M", s(&p)]);
    let orig = copy(&p, "orig.vhdx");
    let st = resize(&p, 100 * MIB, &opts(), None).unwrap();
    assert_eq!(st.minimum_size, None, "a fixed disk grows without a scan");
    assert_eq!(qemu_virtual_size(&p, "vhdx"), 100 * MIB);
    qemu_check(&p);
    our_check(&p);
    qemu_same(&orig, "vhdx", &p, "vhdx", false);
    let map: serde_json::Value =
        serde_json::from_slice(&qemu_img(&["map", "-f", "vhdx", "--output=json", s(&p)])).unwrap();
    for m in map.as_array().unwrap() {
        assert_eq!(
            m["data"], true,
            "every block of a fixed disk is allocated: {m}"
        );
    }
    assert_eq!(Disk::open(&p).unwrap().disk_type(), DiskType::Fixed);
    // Fixed disks shrink down to their last non-zero byte (rounded to 1 MiB).
    let err = resize(&p, 32 * MIB, &opts(), None).unwrap_err();
    assert!(err.to_string().contains(&(64 * MIB).to_string()), "{err}");
    let st = resize_to_minimum(&p, &opts(), None).unwrap();
    assert_eq!(st.size_after, 64 * MIB);
    assert_eq!(len(&p), len(&orig), "the blocks past the end are cut off");
    qemu_check(&p);
    our_check(&p);
    qemu_same(&orig, "vhdx", &p, "vhdx", true);
}

#[test]
fn vhd_dynamic_grows_past_its_first_blocks_and_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    // Not a whole number of 2 MiB blocks: the last block is partial.
    let size = 63 * MIB + 512;
    let p = qemu_image(
        dir.path(),
        "d.vhd",
        "vpc",
        "subformat=dynamic,force_size=on",
        size,
    );
    let orig = copy(&p, "orig.vhd");
    // 100 GiB in 2 MiB blocks: a 200 KiB BAT over the first blocks (QEMU puts them right
    // after its one-sector BAT).
    let st = resize(&p, 100 * GIB, &opts(), None).unwrap();
    assert!(st.block_table_grown && st.blocks_moved >= 1, "{st:?}");
    assert_eq!(qemu_virtual_size(&p, "vpc"), 100 * GIB);
    our_check(&p);
    qemu_same(&orig, "vpc", &p, "vpc", false);
    let w = [(0, size), (size, 4 * MIB), (100 * GIB - MIB, MIB)];
    let mut want = our_read_all(&orig);
    want.extend(vec![0u8; 5 * MIB as usize]);
    assert_same(&pyvhdi_windows(&p, &[], &w), &want, "pyvhdi");
    let info = Disk::open(&p).unwrap().info(false).unwrap();
    let v = info.vhd.unwrap();
    assert_eq!(v.max_table_entries, Some(51200));
    assert_eq!(
        v.original_size,
        100 * GIB,
        "libvhdi reads the size from OriginalSize"
    );
    // Back down: the data ends in the block holding the old end.
    let err = resize(&p, 32 * MIB, &opts(), None).unwrap_err();
    assert!(err.to_string().contains(&size.to_string()), "{err}");
    let st = resize(&p, size, &opts(), None).unwrap();
    assert_eq!(st.size_after, size);
    our_check(&p);
    qemu_same(&orig, "vpc", &p, "vpc", true);
    assert_same(
        &pyvhdi_read_all(&p, &[]),
        &our_read_all(&orig),
        "pyvhdi after shrink",
    );
    let st = resize_to_minimum(&p, &opts(), None).unwrap();
    assert_eq!(st.size_after, size, "the last block is in use: {st:?}");
}

#[test]
fn vhd_fixed_grows_and_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.vhd");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vpc",
        "-o",
        "subformat=fixed,force_size=on",
        s(&p),
        "32M",
    ]);
    qemu_io(&[
        "-f",
        "vpc",
        "-c",
        "write -P 0x31 1M 2M",
        "-c",
        "write -P 0x32 20M 512",
        s(&p),
    ]);
    let orig = copy(&p, "orig.vhd");
    resize(&p, 48 * MIB, &opts(), None).unwrap();
    assert_eq!(len(&p), 48 * MIB + 512);
    assert_eq!(qemu_virtual_size(&p, "vpc"), 48 * MIB);
    our_check(&p);
    qemu_same(&orig, "vpc", &p, "vpc", false);
    assert_same(
        &pyvhdi_read_all(&p, &[]),
        &[our_read_all(&orig), vec![0u8; 16 << 20]].concat(),
        "pyvhdi",
    );
    let err = resize(&p, 20 * MIB, &opts(), None).unwrap_err();
    assert!(
        err.to_string().contains(&(20 * MIB + 512).to_string()),
        "{err}"
    );
    let st = resize_to_minimum(&p, &opts(), None).unwrap();
    assert_eq!(st.size_after, 21 * MIB);
    assert_eq!(len(&p), 21 * MIB + 512);
    our_check(&p);
    assert_eq!(qemu_virtual_size(&p, "vpc"), 21 * MIB);
    let mut want = our_read_all(&orig);
    want.truncate(21 << 20);
    assert_same(&pyvhdi_read_all(&p, &[]), &want, "pyvhdi after shrink");
}

/// A differencing disk follows its parent: refused on its own, resized to the parent's new
/// size afterwards (VHDX after relinking, as the parent's data identity changed; VHD as is,
/// with its parent locators moving out of the grown BAT's way).
#[test]
fn differencing_disks_follow_their_parent() {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["vhdx", "vhd"] {
        let base = dir.path().join(format!("base.{ext}"));
        let child = dir.path().join(format!("child.{ext}"));
        create(&base, &CreateOptions::new().size(64 * MIB)).unwrap();
        let d = Disk::open_rw(&base, &opts()).unwrap();
        d.write_at(&[0x41; 4096], 5 * MIB).unwrap();
        d.close().unwrap();
        create(&child, &CreateOptions::new().parent(&base)).unwrap();
        let d = Disk::open_rw(&child, &opts()).unwrap();
        d.write_at(&[0x42; 8192], 60 * MIB).unwrap();
        d.close().unwrap();
        let want = our_read_all(&child);
        let err = resize(&child, 10 * GIB, &opts(), None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("parent"), "{err}");
        // Large enough for the child's BAT to grow (2 MiB blocks; VHDX: 64 chunks of 4 GiB
        // fill the first MiB of entries).
        let new = if ext == "vhdx" { 300 * GIB } else { 10 * GIB };
        resize(&base, new, &opts(), None).unwrap();
        if ext == "vhdx" {
            assert_eq!(
                Disk::open(&child).unwrap_err().kind(),
                ErrorKind::LinkageMismatch
            );
            vhdx_core::write::set_parent(&child, &base, true).unwrap();
        }
        let st = resize(&child, new, &opts(), None).unwrap();
        assert!(st.block_table_grown, "{ext}: {st:?}");
        our_check(&child);
        let d = Disk::open(&child).unwrap();
        assert_eq!(d.size(), new);
        let mut got = vec![0u8; want.len()];
        d.read_at(&mut got, 0).unwrap();
        assert_same(&got, &want, ext);
        let w = [(0, 64 * MIB), (new - MIB, MIB)];
        let mut theirs_want = want.clone();
        theirs_want.extend(vec![0u8; MIB as usize]);
        assert_same(
            &pyvhdi_windows(&child, std::slice::from_ref(&base), &w),
            &theirs_want,
            ext,
        );
    }
}

/// The child process of the crash test: resizes the image named by the variable.
#[test]
#[ignore = "run by the resize crash test as a child process"]
fn resize_child() {
    let Ok(spec) = std::env::var("VHDX_RESIZE_CHILD") else {
        return;
    };
    let (size, path) = spec.split_once(' ').unwrap();
    println!("GO");
    let t = std::time::Instant::now();
    resize(Path::new(path), size.parse().unwrap(), &opts(), None).unwrap();
    println!("DONE {}", t.elapsed().as_micros());
}

/// Resizes killed at random moments (a VHDX growing past its metadata and first blocks, a
/// VHD growing past its first blocks): afterwards the disk opens with its old or its new
/// size, reads as before below the old size, `vhdx check` (and for VHDX `qemu-img check`,
/// after QEMU's own replay of a dirty log) is clean, and running the resize again finishes.
#[test]
fn killed_resizes_keep_the_content_and_finish_when_run_again() {
    let kills: usize = std::env::var("VHDX_RESIZE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            qemu_image(dir.path(), "t.vhdx", "vhdx", "block_size=1M", 64 * MIB),
            "vhdx",
            1u64 << 40,
        ),
        (
            qemu_image(
                dir.path(),
                "t.vhd",
                "vpc",
                "subformat=dynamic,force_size=on",
                64 * MIB,
            ),
            "vpc",
            100 * GIB,
        ),
    ];
    let exe = std::env::current_exe().unwrap();
    let start_child = |p: &Path, size: u64| {
        let mut c = Command::new(&exe)
            .args([
                "--exact",
                "resize::resize_child",
                "--ignored",
                "-q",
                "--nocapture",
            ])
            .env("VHDX_RESIZE_CHILD", format!("{size} {}", p.display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 || line.trim() == "GO"
            {
                break;
            }
        }
        (c, out)
    };
    let mut rng = Rng(5);
    let (mut interrupted, mut dirty, mut grown) = (0, 0, 0);
    for (template, fmt, new) in &cases {
        let want = our_read_all(template);
        let old = want.len() as u64;
        let ext = if *fmt == "vpc" { "vhd" } else { "vhdx" };
        // How long an uninterrupted resize takes, from "GO" to its end.
        let span = {
            let p = dir.path().join(format!("timed.{ext}"));
            std::fs::copy(template, &p).unwrap();
            let (mut c, out) = start_child(&p, *new);
            assert!(c.wait().unwrap().success());
            std::io::BufRead::lines(out)
                .map_while(|l| l.ok())
                .find_map(|l| l.strip_prefix("DONE ").map(|v| v.parse::<u64>().unwrap()))
                .unwrap()
                .max(500)
        };
        eprintln!("an uninterrupted {ext} resize takes {span} µs");
        for n in 0..kills / cases.len() {
            let p = dir.path().join(format!("k.{ext}"));
            std::fs::copy(template, &p).unwrap();
            let (mut child, out) = start_child(&p, *new);
            std::thread::sleep(Duration::from_micros(rng.below(span + 1)));
            let _ = child.kill();
            child.wait().unwrap();
            let what = format!("{ext} kill {n}");
            if !std::io::BufRead::lines(out)
                .map_while(|l| l.ok())
                .any(|l| l.starts_with("DONE"))
            {
                interrupted += 1;
            }
            // Our read-only view (a dirty log replayed in memory).
            let d = Disk::open(&p).unwrap_or_else(|e| panic!("{what}: {e}"));
            let size = d.size();
            assert!(size == old || size == *new, "{what}: size {size}");
            grown += usize::from(size == *new);
            let mut got = vec![0u8; old as usize];
            d.read_at(&mut got, 0).unwrap();
            assert_same(&got, &want, &what);
            drop(d);
            if *fmt == "vhdx"
                && Disk::open(&p)
                    .unwrap()
                    .info(false)
                    .unwrap()
                    .vhdx
                    .unwrap()
                    .log
                    .state
                    == "dirty"
            {
                dirty += 1;
                if dirty % 4 == 1 {
                    let q = dir.path().join("q.vhdx");
                    std::fs::copy(&p, &q).unwrap();
                    qemu_img(&["check", "-q", "-r", "all", "-f", "vhdx", s(&q)]);
                    assert_eq!(qemu_virtual_size(&q, "vhdx"), size, "{what}: qemu replay");
                    qemu_grown_same(template, &q, "vhdx");
                }
            }
            // Running it again finishes the job.
            resize(&p, *new, &opts(), None).unwrap_or_else(|e| panic!("{what}: rerun: {e}"));
            our_check(&p);
            if *fmt == "vhdx" {
                qemu_check(&p);
            }
            assert_eq!(qemu_virtual_size(&p, fmt), *new, "{what}");
            qemu_grown_same(template, &p, fmt);
        }
    }
    eprintln!(
        "resize: {kills} kills, {interrupted} interrupted mid-way, {grown} already grown, \
         {dirty} with a dirty log, 0 failures"
    );
    assert!(
        interrupted * 4 >= kills,
        "too few kills landed mid-resize: {interrupted}"
    );
}
