//! Compaction (issue #4 items 2, 3, 5): qemu-made disks with a known mix of data, zero-filled,
//! untouched and trimmed blocks are compacted; the result is checked with qemu-img (compare,
//! check, and the size of `qemu-img convert`, the usual way to compact with QEMU) and
//! libvhdi; differencing chains keep their content and their parents; and a compaction
//! killed at random moments never loses data and finishes when run again.

use super::common::*;
use super::write::{allocated, our_check, qemu_check, zero_state_ranges};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::write::compact::compact_copy;
use vhdx_core::{CompactMode, Disk, OpenOptions};

const MIB: u64 = 1 << 20;

/// A qemu-made 64 MiB dynamic disk with 1 MiB (VHDX) or 2 MiB (VHD) blocks holding: pattern
/// data, blocks explicitly filled with zeros (allocated), untouched blocks, and a data range
/// then trimmed by us. Returns the image, its expected content, and the number of blocks
/// holding non-zero data.
fn mixed(dir: &Path, fmt: &str) -> (PathBuf, Vec<u8>, u64) {
    let (opts, bs) = kind(fmt);
    let p = dir.join(format!("m.{fmt}"));
    qemu_create(&p, fmt, opts, "64M");
    qemu_io(&[
        "-f",
        fmt,
        "-c",
        "write -P 0x11 0 12M",
        "-c",
        "write -P 0 12M 10M", // zero-filled, allocated
        "-c",
        "write -P 0x22 30M 6M",
        "-c",
        "write -P 0 40M 4M",
        "-c",
        "write -P 0x33 50M 2M",
        p.to_str().unwrap(),
    ]);
    // Trim 4 MiB of data in the middle of the first run.
    let d = Disk::open_rw(&p, &OpenOptions::default()).unwrap();
    d.trim(4 * MIB, 4 * MIB).unwrap();
    d.close().unwrap();
    let mut want = vec![0u8; 64 << 20];
    want[..12 << 20].fill(0x11);
    want[4 << 20..8 << 20].fill(0);
    want[30 << 20..36 << 20].fill(0x22);
    want[50 << 20..52 << 20].fill(0x33);
    let live = want
        .chunks(bs as usize)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count() as u64;
    (p, want, live)
}

/// The qemu-img options of the test disks of `fmt` and their block size.
fn kind(fmt: &str) -> (&'static str, u64) {
    if fmt == "vhdx" {
        ("block_size=1M,block_state_zero=off", MIB)
    } else {
        ("subformat=dynamic,force_size=on", 2 * MIB)
    }
}

/// The length of a freshly created empty image of the same kind: the fixed overhead.
fn overhead(dir: &Path, fmt: &str) -> u64 {
    let p = dir.join(format!("e.{fmt}"));
    let opts = kind(fmt).0;
    qemu_create(&p, fmt, opts, "64M");
    std::fs::metadata(&p).unwrap().len()
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[test]
fn full_compaction_reaches_the_optimum_and_beats_qemu_img_convert() {
    for fmt in ["vhdx", "vpc"] {
        let dir = tempfile::tempdir().unwrap();
        let (p, want, live) = mixed(dir.path(), fmt);
        let (bs, per_block) = if fmt == "vhdx" {
            (MIB, MIB)
        } else {
            (2 * MIB, 2 * MIB + 512)
        };
        let before = len(&p);
        // A dry run changes nothing and predicts the result.
        let bytes = std::fs::read(&p).unwrap();
        let d = Disk::open_rw(&p, &OpenOptions::default()).unwrap();
        let dry = d.compact_dry_run(CompactMode::Full).unwrap();
        d.close().unwrap();
        drop(d);
        assert!(
            std::fs::read(&p).unwrap() == bytes,
            "{fmt}: the dry run wrote"
        );
        let d = Disk::open_rw(&p, &OpenOptions::default()).unwrap();
        let done = std::cell::Cell::new((0u64, 0u64));
        let s = d
            .compact(CompactMode::Full, Some(&|a, b| done.set((a, b))))
            .unwrap();
        d.close().unwrap();
        drop(d);
        assert_eq!(
            done.get().0,
            done.get().1,
            "{fmt}: progress ends at the total"
        );
        assert_eq!(s.file_len_after, len(&p), "{fmt}");
        assert_eq!(
            dry.file_len_after, s.file_len_after,
            "{fmt}: dry run prediction"
        );
        assert_eq!(s.bytes_reclaimed, before - len(&p));
        // The optimum: the fixed overhead plus the live blocks, within one block.
        let optimum = overhead(dir.path(), fmt) + live * per_block;
        assert!(
            len(&p) <= optimum + bs,
            "{fmt}: {} bytes, optimum {optimum}",
            len(&p)
        );
        assert!(len(&p) >= live * per_block, "{fmt}");
        // Content: identical (the trimmed range reads zero).
        assert_same(
            &qemu_raw(&p, fmt),
            &want,
            &format!("{fmt} after compaction"),
        );
        let theirs = pyvhdi_windows(&p, &[], &[(0, 64 << 20)]);
        assert_same(&theirs, &want, &format!("{fmt} after compaction (libvhdi)"));
        if fmt == "vhdx" {
            qemu_check(&p);
        }
        our_check(&p);
        // Not larger than what qemu-img convert makes of the same disk.
        let q = dir.path().join(format!("q.{fmt}"));
        let mut args = vec!["convert", "-f", fmt, "-O", fmt];
        if fmt == "vhdx" {
            args.extend(["-o", "block_size=1M"]);
        } else {
            args.extend(["-o", "subformat=dynamic,force_size=on"]);
        }
        args.extend([p.to_str().unwrap(), q.to_str().unwrap()]);
        qemu_img(&args);
        assert!(
            len(&p) <= len(&q),
            "{fmt}: ours {} > qemu-img convert {}",
            len(&p),
            len(&q)
        );
        // A second run finds nothing left to do.
        let d = Disk::open_rw(&p, &OpenOptions::default()).unwrap();
        let again = d.compact(CompactMode::Full, None).unwrap();
        assert_eq!((again.bytes_reclaimed, again.blocks_moved), (0, 0), "{fmt}");
    }
}

#[test]
fn quick_retrim_and_copies() {
    let dir = tempfile::tempdir().unwrap();
    let (p, want, _) = mixed(dir.path(), "vhdx");
    // -o: a compacted copy; the input stays byte-identical.
    let bytes = std::fs::read(&p).unwrap();
    let out = dir.path().join("out.vhdx");
    let s = compact_copy(
        &p,
        &out,
        CompactMode::Full,
        false,
        &OpenOptions::default(),
        None,
    )
    .unwrap();
    assert!(std::fs::read(&p).unwrap() == bytes, "the input changed");
    assert_eq!(s.file_len_after, len(&out));
    assert!(len(&out) < len(&p));
    assert_same(&qemu_raw(&out, "vhdx"), &want, "copy");
    qemu_check(&out);
    // An existing output is kept.
    let e = compact_copy(
        &p,
        &out,
        CompactMode::Full,
        false,
        &OpenOptions::default(),
        None,
    )
    .unwrap_err();
    assert_eq!(e.kind(), vhdx_core::ErrorKind::InvalidArgument, "{e}");
    // quick: only the trimmed (unallocated) blocks' space comes back, zero-filled blocks stay.
    let d = Disk::open_rw(&p, &OpenOptions::default()).unwrap();
    let q = d.compact(CompactMode::Quick, None).unwrap();
    d.close().unwrap();
    drop(d);
    assert_eq!(q.zero_blocks_released, 0);
    assert!(len(&p) < bytes.len() as u64 && len(&p) > len(&out));
    assert_same(&qemu_raw(&p, "vhdx"), &want, "quick");
    qemu_check(&p);
    // retrim: same length, fewer host bytes, same content.
    let rdir = dir.path().join("r");
    std::fs::create_dir_all(&rdir).unwrap();
    let (p2, want2, _) = mixed(&rdir, "vhdx");
    // Space no block uses and the host holds: as an interrupted session leaves it (here 3
    // MiB appended after the last block).
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&p2).unwrap();
        f.write_all_at(&vec![0xEE; 3 << 20], len(&p2)).unwrap();
    }
    let (l0, h0) = (len(&p2), allocated(&p2));
    let d = Disk::open_rw(&p2, &OpenOptions::default()).unwrap();
    let r = d.compact(CompactMode::Retrim, None).unwrap();
    d.close().unwrap();
    drop(d);
    assert_eq!(len(&p2), l0);
    assert!(
        allocated(&p2) + 3 * MIB <= h0,
        "host bytes {h0} -> {}",
        allocated(&p2)
    );
    assert!(r.bytes_reclaimed >= 3 * MIB);
    assert_eq!(r.bytes_reclaimed, h0 - allocated(&p2));
    assert_same(&qemu_raw(&p2, "vhdx"), &want2, "retrim");
    qemu_check(&p2);
    // Nothing left: a second retrim (and its dry run, on a read-only disk) reclaims nothing.
    let dry =
        vhdx_core::write::compact::compact_dry_run(&Disk::open(&p2).unwrap(), CompactMode::Retrim)
            .unwrap();
    assert_eq!(dry.bytes_reclaimed, 0, "{dry:?}");
    // Compaction never makes a sparse image take more host space: in place, and as a copy.
    let sample = dir.path().join("sample.vhdx");
    let mut gz = flate2::read::GzDecoder::new(std::io::Cursor::new(
        std::fs::read(testdata().join("fuzz/base.vhdx.gz")).unwrap(),
    ));
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut gz, &mut raw).unwrap();
    std::fs::write(&sample, &raw).unwrap();
    // Make it sparse: punch the zero runs.
    let s0 = Disk::open_rw(&sample, &OpenOptions::default()).unwrap();
    s0.compact(CompactMode::Retrim, None).unwrap();
    s0.close().unwrap();
    drop(s0);
    let host0 = allocated(&sample);
    let copy = dir.path().join("sample-out.vhdx");
    compact_copy(
        &sample,
        &copy,
        CompactMode::Full,
        false,
        &OpenOptions::default(),
        None,
    )
    .unwrap();
    assert!(
        allocated(&copy) <= host0,
        "copy: {} > {host0}",
        allocated(&copy)
    );
    let s1 = Disk::open_rw(&sample, &OpenOptions::default()).unwrap();
    s1.compact(CompactMode::Full, None).unwrap();
    s1.close().unwrap();
    assert!(
        allocated(&sample) <= host0,
        "in place: {} > {host0}",
        allocated(&sample)
    );
    assert_same(&our_read_all(&sample), &our_read_all(&copy), "sample");
    // The output may not be the input.
    let e = compact_copy(
        &sample,
        &sample,
        CompactMode::Full,
        true,
        &OpenOptions::default(),
        None,
    )
    .unwrap_err();
    assert_eq!(e.kind(), vhdx_core::ErrorKind::InvalidArgument, "{e}");
    // Fixed disks: nothing to do, said so.
    let f = dir.path().join("f.vhdx");
    create(
        &f,
        &CreateOptions::new()
            .size(8 * MIB)
            .disk_type(vhdx_core::DiskType::Fixed),
    )
    .unwrap();
    let fb = std::fs::read(&f).unwrap();
    let d = Disk::open_rw(&f, &OpenOptions::default()).unwrap();
    let s = d.compact(CompactMode::Full, None).unwrap();
    d.close().unwrap();
    drop(d);
    assert!(s.note.unwrap().contains("convert"));
    assert!(std::fs::read(&f).unwrap() == fb);
}

/// Differencing disks: the chain reads the same, the parent is byte-identical, the child
/// keeps its DataWriteGuid (its own children stay linked) and gets smaller.
#[test]
fn differencing_chains_keep_their_content_and_parents() {
    for fmt in ["vhdx", "vpc"] {
        let dir = tempfile::tempdir().unwrap();
        let (opts, ext) = if fmt == "vhdx" {
            ("block_size=1M", "vhdx")
        } else {
            ("subformat=dynamic,force_size=on", "vhd")
        };
        let parent = dir.path().join(format!("p.{ext}"));
        qemu_img(&[
            "create",
            "-q",
            "-f",
            fmt,
            "-o",
            opts,
            parent.to_str().unwrap(),
            "32M",
        ]);
        qemu_io(&[
            "-f",
            fmt,
            "-c",
            "write -P 0x44 0 8M",
            "-c",
            "write -P 0x55 16M 8M",
            parent.to_str().unwrap(),
        ]);
        let child = dir.path().join(format!("c.{ext}"));
        let mut co = CreateOptions::new().parent(&parent);
        if fmt == "vhdx" {
            co = co.block_size(MIB as u32);
        }
        create(&child, &co).unwrap();
        let d = Disk::open_rw(&child, &OpenOptions::default()).unwrap();
        d.write_at(&vec![0x66; 6 << 20], 2 << 20).unwrap(); // data over the parent's data
                                                            // Blocks that hold data and are then overwritten with zeros: allocated zero blocks,
                                                            // where the parent is zero and over the parent's data.
        d.write_at(&vec![0x77; 6 << 20], 18 << 20).unwrap();
        d.write_at(&vec![0; 4 << 20], 26 << 20).unwrap();
        d.write_at(&vec![0; 2 << 20], 18 << 20).unwrap();
        d.trim(4 << 20, 2 << 20).unwrap();
        // A partial write gives chunk 0 a sector bitmap. libvhdi reads every not-present
        // block of a differencing VHDX through its chunk's sector bitmap, even when the
        // chunk has none (it then takes bits from file offset 0): without one it would
        // misread the parent's ranges (testdata/README.md).
        d.write_at(&[0x99; 4096], (12 << 20) + 512).unwrap();
        d.close().unwrap();
        drop(d);
        let pbytes = std::fs::read(&parent).unwrap();
        let before = our_read_all(&child);
        let guid = |p: &Path| {
            Disk::open(p)
                .unwrap()
                .info(false)
                .unwrap()
                .vhdx
                .map(|v| v.data_write_guid)
        };
        let g0 = guid(&child);
        let l0 = len(&child);
        let d = Disk::open_rw(&child, &OpenOptions::default()).unwrap();
        let s = d.compact(CompactMode::Full, None).unwrap();
        d.close().unwrap();
        drop(d);
        assert!(
            std::fs::read(&parent).unwrap() == pbytes,
            "{fmt}: parent changed"
        );
        assert_same(&our_read_all(&child), &before, &format!("{fmt} chain"));
        assert_eq!(guid(&child), g0, "{fmt}: DataWriteGuid changed");
        assert!(
            len(&child) < l0 && s.zero_blocks_released >= 2,
            "{fmt}: {s:?}"
        );
        // The parents' share is reported: the parent's 16 MiB of data minus what the child
        // covers (2..8 MiB and 18..24 MiB).
        assert_eq!(s.parent_data_bytes, Some(4 << 20), "{fmt}: {s:?}");
        assert!(s.note.as_deref().unwrap_or("").contains("merg"), "{s:?}");
        our_check(&child);
        // libvhdi reads the chain the same way (outside ZERO-state blocks, which it reads
        // from the parent).
        let zeros = zero_state_ranges(&Disk::open(&child).unwrap());
        let mut theirs = pyvhdi_windows(&child, std::slice::from_ref(&parent), &[(0, 32 << 20)]);
        let mut ours = before.clone();
        for (o, n) in zeros {
            theirs[o as usize..(o + n) as usize].fill(0);
            ours[o as usize..(o + n) as usize].fill(0);
        }
        assert_same(&theirs, &ours, &format!("{fmt} chain (libvhdi)"));
    }
}

/// The child process of the crash test: compacts the image named by the variable.
#[test]
#[ignore = "run by the compaction crash test as a child process"]
fn compact_child() {
    let Ok(path) = std::env::var("VHDX_COMPACT_CHILD") else {
        return;
    };
    let d = Disk::open_rw(&path, &OpenOptions::default()).unwrap();
    // Tell the parent the compaction starts now, and afterwards how long it took.
    println!("GO");
    let t = std::time::Instant::now();
    d.compact(CompactMode::Full, None).unwrap();
    d.close().unwrap();
    println!("DONE {}", t.elapsed().as_micros());
}

/// Compaction killed at random moments: afterwards the content is identical (for our
/// read-only replay and for QEMU's `check -r all` replay), `vhdx check` and `qemu-img
/// check` are clean, and compacting again reaches the size an uninterrupted run reaches.
#[test]
fn killed_compactions_lose_nothing_and_finish_when_run_again() {
    let kills: usize = std::env::var("VHDX_COMPACT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let (template, want, _) = mixed(dir.path(), "vhdx");
    let optimum = {
        let p = dir.path().join("clean.vhdx");
        std::fs::copy(&template, &p).unwrap();
        let d = Disk::open_rw(&p, &OpenOptions::default()).unwrap();
        d.compact(CompactMode::Full, None).unwrap();
        d.close().unwrap();
        len(&p)
    };
    // How long an uninterrupted compaction takes (from "GO" to its end): kills land within
    // that span after the child says "GO".
    let start_child = |p: &Path| {
        start_test_child(
            "compact::compact_child",
            "VHDX_COMPACT_CHILD",
            p.as_os_str(),
        )
    };
    let span = {
        let p = dir.path().join("timed.vhdx");
        std::fs::copy(&template, &p).unwrap();
        let (mut c, out) = start_child(&p);
        assert!(c.wait().unwrap().success());
        assert_eq!(len(&p), optimum);
        let done = rest_lines(out)
            .iter()
            .find_map(|l| l.strip_prefix("DONE ").map(|v| v.parse::<u64>().unwrap()))
            .unwrap();
        done.max(1000)
    };
    eprintln!("an uninterrupted compaction takes {span} µs");
    let mut rng = Rng(77);
    let (mut interrupted, mut dirty) = (0, 0);
    for n in 0..kills {
        let p = dir.path().join("k.vhdx");
        std::fs::copy(&template, &p).unwrap();
        let (mut child, out) = start_child(&p);
        std::thread::sleep(Duration::from_micros(rng.below(span + 1)));
        let _ = child.kill();
        child.wait().unwrap();
        let what = format!("kill {n}");
        let info = Disk::open(&p).unwrap().info(false).unwrap();
        let is_dirty = info.vhdx.as_ref().unwrap().log.state == "dirty";
        // Killed after "GO" and before "DONE": mid-compaction.
        let finished = rest_lines(out).iter().any(|l| l.starts_with("DONE"));
        if !finished {
            interrupted += 1;
        }
        // Our read-only view (a dirty log replayed in memory).
        assert_same(&read_all(&Disk::open(&p).unwrap(), 4 << 20), &want, &what);
        if is_dirty {
            dirty += 1;
            if dirty % 5 == 1 {
                let copy = qemu_replayed_copy(&p, dir.path());
                assert_same(
                    &qemu_raw(&copy, "vhdx"),
                    &want,
                    &format!("{what}: qemu replay"),
                );
            }
        }
        // Running it again finishes the job.
        let d = Disk::open_rw(&p, &OpenOptions::default()).unwrap();
        d.compact(CompactMode::Full, None).unwrap();
        d.close().unwrap();
        drop(d);
        assert_eq!(len(&p), optimum, "{what}: second compaction");
        our_check(&p);
        qemu_check(&p);
        assert_same(&read_all(&Disk::open(&p).unwrap(), 4 << 20), &want, &what);
    }
    eprintln!("compaction: {kills} kills, {interrupted} interrupted mid-way, {dirty} with a dirty log, 0 failures");
    assert!(
        interrupted * 5 >= kills,
        "too few kills landed mid-compaction: {interrupted}"
    );
}
