//! Converting into VHDX and VHD (issue #3 item 6), checked against independent readers:
//! `qemu-img compare` with the source (or the chain builder's expected content),
//! `qemu-img check` for leaks and corruption, libvhdi (pyvhdi) where QEMU cannot be the
//! judge alone (4 KiB sectors) and as a second reader of VHD outputs. That a dynamic output
//! allocates only the blocks holding data is measured on the file: its length against an
//! empty disk of the same shape, and `qemu-img map` for VHD.

use super::chain::{expected_file, fixture};
use super::common::*;
use std::cell::RefCell;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::ops::convert::{convert, ConvertOptions, ConvertStats};
use vhdx_core::{Disk, DiskType, ErrorKind, Format, OpenOptions, VirtualDisk};

const MIB: u64 = 1 << 20;
/// Size of the raw source: not a multiple of any block size, a multiple of 4 KiB.
const SIZE: u64 = 40 * MIB + 8192;

/// A sparse raw file of [`SIZE`] bytes: pseudo-random data at scattered, partly unaligned
/// places (across 1 MiB and 32 MiB block edges, the last sector, a lone byte) and 2 MiB of
/// explicitly written zeros, which the raw file allocates but a dynamic output must not.
fn sparse_raw(dir: &Path) -> PathBuf {
    let p = dir.join("source.raw");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(SIZE).unwrap();
    let mut rng = Rng(0x5eed_c0de);
    let mut data = |len: u64| -> Vec<u8> { (0..len).map(|_| rng.next() as u8 | 1).collect() };
    for (off, len) in [
        (0, 4096),
        (MIB - 100, 300),
        (3 * MIB, MIB + 512),
        (12 * MIB + 7 * 512, 1000),
        (20 * MIB + 777, 1),
        (32 * MIB - 64 * 1024, 128 * 1024),
        (SIZE - 512, 512),
    ] {
        f.write_all_at(&data(len), off).unwrap();
    }
    f.write_all_at(&vec![0u8; 2 * MIB as usize], 8 * MIB)
        .unwrap();
    p
}

/// Opens a raw file as a disk.
fn open_raw(p: &Path) -> Disk {
    Disk::open_with(
        p,
        &OpenOptions {
            format: Some(Format::Raw),
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

/// Blocks of `bs` bytes of `raw` that hold a non-zero byte, computed from the file itself.
fn nonzero_blocks(raw: &[u8], bs: u64) -> u64 {
    raw.chunks(bs as usize)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count() as u64
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qemu-img compare -f FMT -F BASE_FMT out base`: identical contents and sizes (not
/// strict: allocation may differ).
fn qemu_identical(out: &Path, fmt: &str, base: &Path, base_fmt: &str) {
    let o = Command::new("qemu-img")
        .args(["compare", "-f", fmt, "-F", base_fmt, s(out), s(base)])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "qemu-img compare {} {}: {}{}",
        out.display(),
        base.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `qemu-img check -f vhdx`: no corruption, no leaked clusters, no check errors.
fn qemu_check_no_leaks(p: &Path) {
    let o = Command::new("qemu-img")
        .args(["check", "-f", "vhdx", "--output=json", s(p)])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "qemu-img check {}: {e}: {}",
            p.display(),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    for k in ["corruptions", "leaks", "check-errors"] {
        assert_eq!(v[k].as_u64().unwrap_or(0), 0, "{}: {v}", p.display());
    }
    assert!(o.status.success(), "{}: {v}", p.display());
}

/// Blocks `qemu-img map` shows holding data in a VHD of `bs`-byte blocks.
fn qemu_vhd_data_blocks(p: &Path, bs: u64) -> u64 {
    let out = qemu_img(&["map", "-f", "vpc", "--output=json", s(p)]);
    let map: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let mut blocks = std::collections::BTreeSet::new();
    for e in map.as_array().unwrap() {
        if e["data"].as_bool().unwrap() {
            let start = e["start"].as_u64().unwrap();
            let end = start + e["length"].as_u64().unwrap();
            blocks.extend(start / bs..end.div_ceil(bs));
        }
    }
    blocks.len() as u64
}

/// Length of an empty VHDX of `size` bytes made with `opts` (what a dynamic output is before
/// any block).
fn empty_len(opts: CreateOptions, size: u64) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.vhdx");
    create(&p, &opts.size(size)).unwrap();
    std::fs::metadata(p).unwrap().len()
}

/// Converts `src` into `out` and checks the stats against the files.
fn convert_ok(src: &dyn VirtualDisk, out: &Path, opts: &ConvertOptions) -> ConvertStats {
    let st = convert(src, out, opts, None).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    assert_eq!(st.size, src.size());
    assert_eq!(st.bytes_written + st.bytes_skipped, src.size());
    assert_eq!(st.file_length, std::fs::metadata(out).unwrap().len());
    st
}

/// Files in `dir` other than the ones named: temporary leftovers.
fn strays(dir: &Path, expected: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !expected.contains(&n.as_str()))
        .collect()
}

/// Raw → dynamic VHDX, 1 MiB and 32 MiB blocks, 512 and 4096-byte sectors: QEMU (512) or
/// libvhdi (4096) reads the source back, QEMU finds no leak, and the file holds exactly the
/// blocks with non-zero data.
#[test]
fn raw_to_dynamic_vhdx_is_identical_and_allocates_only_data_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let src_path = sparse_raw(dir.path());
    let raw = std::fs::read(&src_path).unwrap();
    let src = open_raw(&src_path);
    for bs in [MIB as u32, 32 << 20] {
        for lss in [512u32, 4096] {
            let what = format!("{bs}-byte blocks, {lss}-byte sectors");
            let out = dir.path().join(format!("out-{bs}-{lss}.vhdx"));
            let mut opts = ConvertOptions::new(Format::Vhdx).block_size(bs);
            if lss != 512 {
                opts = opts.logical_sector_size(lss);
            }
            let st = convert_ok(&src, &out, &opts);
            assert_eq!(st.block_size, Some(bs), "{what}");
            // QEMU opens VHDX with 512-byte sectors only.
            if lss == 512 {
                qemu_identical(&out, "vhdx", &src_path, "raw");
                qemu_check_no_leaks(&out);
            } else {
                assert_same(&pyvhdi_read_all(&out, &[]), &raw, &what);
            }
            let blocks = nonzero_blocks(&raw, u64::from(bs));
            let shape = CreateOptions::new().block_size(bs).logical_sector_size(lss);
            let base = empty_len(shape, SIZE);
            assert_eq!(
                st.file_length,
                base + blocks * u64::from(bs),
                "{what}: {blocks} blocks hold data"
            );
            let info = Disk::open(&out).unwrap().info(true).unwrap();
            assert_eq!(info.logical_sector_size, lss, "{what}");
            assert_eq!(info.block_stats.unwrap().allocated_blocks, blocks, "{what}");
            // Data in 64 KiB steps, never the explicit zeros or the holes.
            assert!(st.bytes_written <= 3 * MIB, "{what}: {st:?}");
        }
    }
    assert!(strays(dir.path(), &[]).iter().all(|n| !n.starts_with('.')));
}

/// Raw → dynamic VHD (2 MiB blocks by default): the exact virtual size for QEMU and
/// libvhdi, the same bytes, and only the data blocks allocated.
#[test]
fn raw_to_dynamic_vhd_is_identical_and_allocates_only_data_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let src_path = sparse_raw(dir.path());
    let raw = std::fs::read(&src_path).unwrap();
    let out = dir.path().join("out.vhd");
    let st = convert_ok(
        &open_raw(&src_path),
        &out,
        &ConvertOptions::new(Format::Vhd),
    );
    assert_eq!(
        (st.disk_type, st.block_size),
        (Some(DiskType::Dynamic), Some(2 << 20))
    );
    assert_eq!(qemu_virtual_size(&out, "vpc"), SIZE);
    qemu_identical(&out, "vpc", &src_path, "raw");
    assert_same(&pyvhdi_read_all(&out, &[]), &raw, "VHD via libvhdi");
    let blocks = nonzero_blocks(&raw, 2 * MIB);
    assert_eq!(qemu_vhd_data_blocks(&out, 2 * MIB), blocks);
    assert!(st.file_length < (blocks + 1) * (2 * MIB + 4096), "{st:?}");
}

/// Fixed outputs of both formats read back as the source.
#[test]
fn raw_to_fixed_vhdx_and_vhd() {
    let dir = tempfile::tempdir().unwrap();
    let src_path = sparse_raw(dir.path());
    let src = open_raw(&src_path);
    for (name, fmt, qfmt) in [
        ("f.vhdx", Format::Vhdx, "vhdx"),
        ("f.vhd", Format::Vhd, "vpc"),
    ] {
        let out = dir.path().join(name);
        let st = convert_ok(
            &src,
            &out,
            &ConvertOptions::new(fmt).disk_type(DiskType::Fixed),
        );
        assert_eq!(st.disk_type, Some(DiskType::Fixed));
        assert!(st.file_length >= SIZE, "{name}: {st:?}");
        qemu_identical(&out, qfmt, &src_path, "raw");
    }
}

/// Images QEMU wrote (a dynamic VHDX with 1 MiB blocks, a dynamic VHD) convert into the
/// other format; QEMU reads both sides.
#[test]
fn qemu_images_convert_across_formats() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, qfmt, opts, out_name, to, out_qfmt) in [
        (
            "q.vhdx",
            "vhdx",
            "subformat=dynamic,block_size=1M",
            "q-to.vhd",
            Format::Vhd,
            "vpc",
        ),
        (
            "q.vhd",
            "vpc",
            "subformat=dynamic",
            "q-to.vhdx",
            Format::Vhdx,
            "vhdx",
        ),
    ] {
        let src = make_qemu_image(d, name, qfmt, opts, "24M", 7);
        let out = d.join(out_name);
        convert_ok(&Disk::open(&src).unwrap(), &out, &ConvertOptions::new(to));
        qemu_identical(&out, out_qfmt, &src, qfmt);
        if to == Format::Vhdx {
            qemu_check_no_leaks(&out);
        }
    }
}

/// Differencing chains flatten into one disk: the VHDX chain (512-byte sectors) into a VHD,
/// the VHD chain into a VHDX, the 4 KiB-sector VHDX chain into a VHDX that keeps 4 KiB
/// sectors. Judged against the chain builder's expected content (its own model of the
/// spec), by QEMU and libvhdi.
#[test]
fn differencing_chains_flatten_into_vhd_and_vhdx() {
    for (chain, top, fmt, lss) in [
        ("vhdx512", "grandchild.vhdx", Format::Vhd, 512),
        ("vhd", "grandchild.vhd", Format::Vhdx, 512),
        ("vhdx4k", "grandchild.vhdx", Format::Vhdx, 4096),
    ] {
        let dir = fixture(chain);
        let d = dir.path();
        let src = Disk::open(d.join(top)).unwrap();
        assert_eq!(src.chain().len(), 3);
        let expected = expected_file(chain, top, false, d);
        let out = d.join(if fmt == Format::Vhd {
            "flat.vhd"
        } else {
            "flat.vhdx"
        });
        convert_ok(&src, &out, &ConvertOptions::new(fmt));
        let what = format!("{chain}/{top}");
        let theirs = pyvhdi_read_all(&out, &[]);
        assert_same(&theirs, &std::fs::read(&expected).unwrap(), &what);
        let info = Disk::open(&out).unwrap().info(false).unwrap();
        assert_eq!(
            info.logical_sector_size, lss,
            "{what}: sector size follows the source"
        );
        if lss == 512 {
            let qfmt = if fmt == Format::Vhd { "vpc" } else { "vhdx" };
            qemu_identical(&out, qfmt, &expected, "raw");
        }
    }
}

/// A source that fails mid-copy (a raw file truncated after it was opened; a VHDX whose last
/// blocks were cut off) leaves nothing: no output, no temporary file.
#[test]
fn failures_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src_path = d.join("dense.raw");
    let mut rng = Rng(3);
    let dense: Vec<u8> = (0..24 * MIB).map(|_| rng.next() as u8).collect();
    std::fs::write(&src_path, &dense).unwrap();
    let src = open_raw(&src_path);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&src_path)
        .unwrap()
        .set_len(20 * MIB)
        .unwrap();
    for (name, fmt) in [
        ("a.vhdx", Format::Vhdx),
        ("a.vhd", Format::Vhd),
        ("a.raw", Format::Raw),
    ] {
        let e = convert(&src, &d.join(name), &ConvertOptions::new(fmt), None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{name}: {e}");
        assert!(e.to_string().contains("dense.raw"), "{name}: {e}");
        assert_eq!(strays(d, &["dense.raw"]), Vec::<String>::new(), "{name}");
    }

    let vhdx = make_qemu_image(
        d,
        "cut.vhdx",
        "vhdx",
        "subformat=dynamic,block_size=1M",
        "16M",
        5,
    );
    let len = std::fs::metadata(&vhdx).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vhdx)
        .unwrap()
        .set_len(len - 2 * MIB)
        .unwrap();
    let keep = ["dense.raw", "cut.vhdx"];
    match Disk::open(&vhdx) {
        Ok(cut) => {
            let e = convert(
                &cut,
                &d.join("b.vhd"),
                &ConvertOptions::new(Format::Vhd),
                None,
            )
            .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        }
        Err(e) => panic!("the cut VHDX should open (its BAT is intact): {e}"),
    }
    assert_eq!(strays(d, &keep), Vec::<String>::new());

    // A folder that does not exist: an I/O error naming the output's place.
    let e = convert(
        &open_raw(&vhdx),
        &d.join("missing/x.vhdx"),
        &ConvertOptions::new(Format::Vhdx),
        None,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(!d.join("missing").exists());
}

/// An existing output is refused and left alone unless overwriting is asked for; a VHD
/// output over 2040 GiB is refused before anything is written.
#[test]
fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src_path = sparse_raw(d);
    let src = open_raw(&src_path);
    let out = d.join("o.vhdx");
    std::fs::write(&out, b"keep me").unwrap();
    let e = convert(&src, &out, &ConvertOptions::new(Format::Vhdx), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(e.path(), Some(out.as_path()));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    convert_ok(
        &src,
        &out,
        &ConvertOptions::new(Format::Vhdx).overwrite(true),
    );
    qemu_identical(&out, "vhdx", &src_path, "raw");

    let big = d.join("big.vhdx");
    let size = (2041u64 << 30) + 4096;
    create(&big, &CreateOptions::new().size(size)).unwrap();
    let vhd = d.join("big.vhd");
    let e = convert(
        &Disk::open(&big).unwrap(),
        &vhd,
        &ConvertOptions::new(Format::Vhd),
        None,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!(e.path(), Some(vhd.as_path()));
    assert_eq!(e.found_value(), Some(size.to_string().as_str()));
    assert!(e.to_string().contains("2040 GiB"), "{e}");
    assert_eq!(
        strays(d, &["source.raw", "o.vhdx", "big.vhdx"]),
        Vec::<String>::new()
    );
}

/// Progress reports only grow and end at the whole size.
#[test]
fn progress_reaches_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let src = open_raw(&sparse_raw(dir.path()));
    let seen = RefCell::new(Vec::new());
    let cb = |done: u64, total: u64| seen.borrow_mut().push((done, total));
    convert(
        &src,
        &dir.path().join("p.vhd"),
        &ConvertOptions::new(Format::Vhd),
        Some(&cb),
    )
    .unwrap();
    let seen = seen.into_inner();
    assert!(seen.len() >= 5, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    assert!(seen.iter().all(|&(_, t)| t == SIZE));
    assert_eq!(seen.last(), Some(&(SIZE, SIZE)));
}

/// An input of the conversion matrix: the image, the format QEMU opens it with, the raw file
/// holding what it must read as when QEMU cannot open it (differencing chains), and the
/// folder keeping it alive.
struct Input {
    name: &'static str,
    path: PathBuf,
    qemu_fmt: &'static str,
    expected: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Input {
    /// The file and format QEMU reads as this input's content.
    fn reference(&self) -> (&Path, &str) {
        match &self.expected {
            Some(raw) => (raw, "raw"),
            None => (&self.path, self.qemu_fmt),
        }
    }
}

/// An input made by qemu-img and filled by qemu-io (see `make_qemu_image`), 24 MiB.
fn qemu_input(name: &'static str, fmt: &'static str, opts: &str, seed: u64) -> Input {
    let dir = tempfile::tempdir().unwrap();
    let path = make_qemu_image(dir.path(), name, fmt, opts, "24M", seed);
    Input {
        name,
        path,
        qemu_fmt: fmt,
        expected: None,
        _dir: dir,
    }
}

/// A sparse raw input of 20 MiB + 3.5 KiB (a whole number of 512-byte sectors, not of 4 KiB
/// pages or of any block): data across block edges, in the last sector, a lone byte, and
/// 3 MiB of explicitly written zeros.
fn raw_input() -> Input {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.raw");
    let size = 20 * MIB + 3584;
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    let mut rng = Rng(0xc0ffee);
    for (off, len) in [
        (0, 8192),
        (2 * MIB - 4096, 12288),
        (5 * MIB + 333, 1),
        (9 * MIB, 3 * MIB + 512),
        (size - 512, 512),
    ] {
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8 | 0x80).collect();
        f.write_all_at(&data, off).unwrap();
    }
    f.write_all_at(&vec![0u8; 3 * MIB as usize], 14 * MIB)
        .unwrap();
    Input {
        name: "raw",
        path,
        qemu_fmt: "raw",
        expected: None,
        _dir: dir,
    }
}

/// The grandchild of committed chain `chain`, judged against the chain builder's expected
/// content (QEMU opens neither differencing VHDX nor, in full, the builder's VHD chains).
fn chain_input(chain: &'static str, top: &str, qemu_fmt: &'static str) -> Input {
    let dir = fixture(chain);
    let path = dir.path().join(top);
    let expected = expected_file(chain, top, false, dir.path());
    Input {
        name: chain,
        path,
        qemu_fmt,
        expected: Some(expected),
        _dir: dir,
    }
}

/// An output of the conversion matrix.
struct Output {
    name: &'static str,
    ext: &'static str,
    opts: ConvertOptions,
    /// QEMU's driver name for reading it.
    qemu_fmt: &'static str,
    /// `qemu-img convert -O FMT -o OPTS` making the same kind of disk, for dynamic outputs.
    qemu_make: Option<(&'static str, &'static str)>,
}

/// Every output: dynamic and fixed VHDX (1 MiB blocks, so that allocation is measured finely),
/// dynamic (2 MiB blocks) and fixed VHD, sparse raw.
fn outputs() -> Vec<Output> {
    let fixed = DiskType::Fixed;
    vec![
        Output {
            name: "vhdx-dynamic",
            ext: "vhdx",
            opts: ConvertOptions::new(Format::Vhdx).block_size(MIB as u32),
            qemu_fmt: "vhdx",
            qemu_make: Some(("vhdx", "subformat=dynamic,block_size=1M")),
        },
        Output {
            name: "vhdx-fixed",
            ext: "vhdx",
            opts: ConvertOptions::new(Format::Vhdx).disk_type(fixed),
            qemu_fmt: "vhdx",
            qemu_make: None,
        },
        Output {
            name: "vhd-dynamic",
            ext: "vhd",
            opts: ConvertOptions::new(Format::Vhd),
            qemu_fmt: "vpc",
            qemu_make: Some(("vpc", "subformat=dynamic,force_size=on")),
        },
        Output {
            name: "vhd-fixed",
            ext: "vhd",
            opts: ConvertOptions::new(Format::Vhd).disk_type(fixed),
            qemu_fmt: "vpc",
            qemu_make: None,
        },
        Output {
            name: "raw",
            ext: "raw",
            opts: ConvertOptions::new(Format::Raw),
            qemu_fmt: "raw",
            qemu_make: None,
        },
    ]
}

/// Bytes a VHD block costs us beyond what QEMU's layout costs: we start each block's data on
/// a 4 KiB boundary (so guest pages do not straddle host pages), QEMU right after the
/// 512-byte bitmap.
const VHD_ALIGNMENT_COST: u64 = 4096 - 512;

/// Converts `input` into every output and judges each with QEMU: `qemu-img compare` with the
/// input (or its expected content), `qemu-img check` for VHDX. A dynamic output must allocate
/// exactly the blocks whose content (as QEMU exports it, or the chain builder expects it) holds
/// a non-zero byte — counted by `qemu-img map` for VHD, from the file length for VHDX (QEMU
/// maps no VHDX allocation) — and be no larger than what `qemu-img convert` makes of the same
/// content (a VHD may exceed it by our 4 KiB alignment per block).
fn convert_to_every_output(input: Input) {
    let src = Disk::open(&input.path).unwrap_or_else(|e| panic!("{}: {e}", input.name));
    let work = tempfile::tempdir().unwrap();
    let (reference, ref_fmt) = input.reference();
    let content = match ref_fmt {
        "raw" => std::fs::read(reference).unwrap(),
        fmt => qemu_raw(reference, fmt),
    };
    assert_eq!(content.len() as u64, src.size(), "{}", input.name);
    for o in outputs() {
        let what = format!("{} -> {}", input.name, o.name);
        let out = work.path().join(format!("out-{}.{}", o.name, o.ext));
        let st = convert_ok(&src, &out, &o.opts);
        qemu_identical(&out, o.qemu_fmt, reference, ref_fmt);
        if o.qemu_fmt == "vhdx" {
            qemu_check_no_leaks(&out);
        }
        if o.name == "vhd-fixed" {
            assert_eq!(st.file_length, src.size() + 512, "{what}: data + footer");
        }
        let Some((qfmt, qopts)) = o.qemu_make else {
            continue;
        };
        let bs = u64::from(st.block_size.unwrap());
        let blocks = nonzero_blocks(&content, bs);
        let allowance = if qfmt == "vpc" {
            assert_eq!(qemu_vhd_data_blocks(&out, bs), blocks, "{what}");
            blocks * VHD_ALIGNMENT_COST
        } else {
            let base = empty_len(CreateOptions::new().block_size(bs as u32), src.size());
            assert_eq!(
                st.file_length,
                base + blocks * bs,
                "{what}: {blocks} blocks"
            );
            0
        };
        let theirs = work.path().join(format!("qemu-{}.{}", o.name, o.ext));
        qemu_img(&[
            "convert",
            "-f",
            ref_fmt,
            "-O",
            qfmt,
            "-o",
            qopts,
            s(reference),
            s(&theirs),
        ]);
        let their_len = std::fs::metadata(&theirs).unwrap().len();
        assert!(
            st.file_length <= their_len + allowance,
            "{what}: {} bytes, qemu-img convert {their_len} (+{allowance} allowed)",
            st.file_length
        );
    }
}
#[test]
fn matrix_from_qemu_dynamic_vhdx() {
    convert_to_every_output(qemu_input(
        "qemu-dynamic.vhdx",
        "vhdx",
        "subformat=dynamic,block_size=1M",
        11,
    ));
}

#[test]
fn matrix_from_qemu_fixed_vhdx() {
    convert_to_every_output(qemu_input("qemu-fixed.vhdx", "vhdx", "subformat=fixed", 12));
}

#[test]
fn matrix_from_qemu_dynamic_vhd() {
    convert_to_every_output(qemu_input(
        "qemu-dynamic.vhd",
        "vpc",
        "subformat=dynamic,force_size=on",
        13,
    ));
}

#[test]
fn matrix_from_qemu_fixed_vhd() {
    convert_to_every_output(qemu_input(
        "qemu-fixed.vhd",
        "vpc",
        "subformat=fixed,force_size=on",
        14,
    ));
}

#[test]
fn matrix_from_raw() {
    convert_to_every_output(raw_input());
}

#[test]
fn matrix_from_vhdx_chain() {
    convert_to_every_output(chain_input("vhdx512", "grandchild.vhdx", "vhdx"));
}

#[test]
fn matrix_from_vhd_chain() {
    convert_to_every_output(chain_input("vhd", "grandchild.vhd", "vpc"));
}

/// The fields Azure looks at in a VHD footer (the file's last 512 bytes): cookie, creator
/// application, original and current size, disk type.
fn vhd_footer(p: &Path) -> (Vec<u8>, Vec<u8>, u64, u64, u32) {
    let b = std::fs::read(p).unwrap();
    let f = &b[b.len() - 512..];
    let be64 = |o: usize| u64::from_be_bytes(f[o..o + 8].try_into().unwrap());
    let disk_type = u32::from_be_bytes(f[60..64].try_into().unwrap());
    (
        f[0..8].to_vec(),
        f[28..32].to_vec(),
        be64(40),
        be64(48),
        disk_type,
    )
}

/// An Azure conversion (issue #5 items 4 and 7): a fixed VHD whose size is a whole number of
/// MiB, checked with `qemu-img info` (format vpc, the size), `qemu-img map` (every byte at
/// the same offset of the file: fixed), the footer's bytes, and `qemu-img compare` with the
/// source (the rounded-up tail reads as zeros). Sizes Azure would refuse and options that
/// contradict a fixed VHD are refused before anything is written.
#[test]
fn azure_output_is_a_fixed_vhd_of_whole_mib() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 21 * MIB + 512;
    let src_path = d.join("odd.raw");
    let f = std::fs::File::create(&src_path).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(&[0x5a; 4096], 0).unwrap();
    f.write_all_at(&[0xa5; 512], size - 512).unwrap();
    let src = open_raw(&src_path);
    let out = d.join("azure.vhd");
    let azure = || ConvertOptions::new(Format::Vhd).azure(true);

    let e = convert(&src, &out, &azure(), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!(e.path(), Some(out.as_path()));
    assert_eq!(e.found_value(), Some(size.to_string().as_str()));
    let text = e.to_string();
    assert!(
        text.contains("whole number of MiB") && text.contains("--round-up"),
        "{text}"
    );
    for (opts, says) in [
        (ConvertOptions::new(Format::Vhdx).azure(true), "VHDX output"),
        (ConvertOptions::new(Format::Raw).azure(true), "RAW output"),
        (azure().disk_type(DiskType::Dynamic), "dynamic disk"),
        (azure().block_size(2 << 20), "block size"),
        (azure().logical_sector_size(4096), "4096-byte sectors"),
        (
            ConvertOptions::new(Format::Vhd).round_up(true),
            "Azure conversions only",
        ),
    ] {
        let e = convert(&src, &out, &opts.round_up(true), None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains(says), "{says}: {e}");
    }
    let small = d.join("small.raw");
    std::fs::File::create(&small)
        .unwrap()
        .set_len(3 * MIB)
        .unwrap();
    let e = convert(&open_raw(&small), &out, &azure(), None).unwrap_err();
    assert!(e.to_string().contains("minimum of 20 MiB"), "{e}");
    let big = d.join("big.vhdx");
    create(&big, &CreateOptions::new().size(2041 << 30)).unwrap();
    let e = convert(&Disk::open(&big).unwrap(), &out, &azure(), None).unwrap_err();
    assert!(e.to_string().contains("2040 GiB"), "{e}");
    assert_eq!(
        strays(d, &["odd.raw", "small.raw", "big.vhdx"]),
        Vec::<String>::new()
    );

    let st = convert(&src, &out, &azure().round_up(true), None).unwrap();
    assert_eq!((st.size, st.source_size), (22 * MIB, size));
    assert_eq!(st.bytes_written + st.bytes_skipped, st.size);
    assert_eq!(
        (st.format, st.disk_type, st.block_size),
        (Format::Vhd, Some(DiskType::Fixed), None)
    );
    assert_eq!(st.file_length, 22 * MIB + 512);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), st.file_length);
    let info: serde_json::Value =
        serde_json::from_slice(&qemu_img(&["info", "-f", "vpc", "--output=json", s(&out)]))
            .unwrap();
    assert_eq!(info["format"], "vpc");
    assert_eq!(info["virtual-size"].as_u64(), Some(22 * MIB));
    let map: serde_json::Value =
        serde_json::from_slice(&qemu_img(&["map", "-f", "vpc", "--output=json", s(&out)])).unwrap();
    for e in map.as_array().unwrap() {
        assert_eq!(
            e["offset"], e["start"],
            "not laid out as a fixed VHD: {map}"
        );
    }
    assert_eq!(
        vhd_footer(&out),
        (
            b"conectix".to_vec(),
            b"win ".to_vec(),
            22 * MIB,
            22 * MIB,
            2
        )
    );
    qemu_identical(&out, "vpc", &src_path, "raw");
    let mut want = std::fs::read(&src_path).unwrap();
    want.resize((22 * MIB) as usize, 0);
    assert_same(&pyvhdi_read_all(&out, &[]), &want, "libvhdi");

    // Under 20 MiB, rounding up lifts the size to Azure's minimum.
    let st = convert(
        &open_raw(&small),
        &d.join("small.vhd"),
        &azure().round_up(true),
        None,
    )
    .unwrap();
    assert_eq!((st.size, st.source_size), (20 * MIB, 3 * MIB));
    // A whole number of MiB is kept as it is; fixed agrees with Azure.
    let whole = make_qemu_image(d, "whole.vhdx", "vhdx", "block_size=1M", "24M", 21);
    let w = d.join("whole.vhd");
    let st = convert(
        &Disk::open(&whole).unwrap(),
        &w,
        &azure().disk_type(DiskType::Fixed),
        None,
    )
    .unwrap();
    assert_eq!((st.size, st.source_size), (24 * MIB, 24 * MIB));
    qemu_identical(&w, "vpc", &whole, "vhdx");
}

/// The in-kernel copy (data left in the source file, only sampled for zeros) keeps the zero
/// scan exact: a qemu-made VHDX with a block of explicitly written zeros (allocated, so it is
/// copied from the file) and a block whose 64 KiB steps hold data only after their first
/// 4 KiB sample, or only in their last byte. Exactly the steps with data are written, and
/// QEMU reads every output as it reads the source.
#[test]
fn in_kernel_copies_find_exactly_the_steps_with_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src.vhdx");
    qemu_create(&src, "vhdx", "subformat=dynamic,block_size=1M", "8M");
    let step = 64 << 10;
    let writes = [
        // Block 0: allocated, all zeros.
        "write -P 0 0 1M".to_string(),
        // Block 1: zeros, then one byte after the first step's 4 KiB sample...
        "write -P 0 1M 1M".to_string(),
        format!("write -P 7 {} 1", MIB + 4096 + 100),
        // ... the last byte of its sixth step, and a whole step at its end.
        format!("write -P 9 {} 1", MIB + 6 * step - 1),
        format!("write -P 5 {} {step}", 2 * MIB - step),
        // Block 4: pattern data throughout.
        "write -P 3 4M 1M".to_string(),
    ];
    let mut args = vec!["-f", "vhdx"];
    for w in &writes {
        args.extend(["-c", w.as_str()]);
    }
    args.push(s(&src));
    qemu_io(&args);
    let disk = Disk::open(&src).unwrap();
    for (name, to, qfmt) in [
        ("out.raw", Format::Raw, "raw"),
        ("out.vhd", Format::Vhd, "vpc"),
        ("out.vhdx", Format::Vhdx, "vhdx"),
    ] {
        let out = d.join(name);
        let st = convert_ok(&disk, &out, &ConvertOptions::new(to));
        assert_eq!(st.bytes_written, 3 * step + MIB, "{name}");
        qemu_identical(&out, qfmt, &src, "vhdx");
    }
}

/// A source whose log is dirty is replayed in memory, so its data cannot be taken from the
/// file as it is: the conversion reads it, and matches QEMU's own replay. (One fixture: the
/// one with the most log entries; `qemu-img compare` reads all 2 GiB of each, since QEMU's
/// VHDX driver reports no allocation.)
#[test]
fn dirty_log_sources_convert_as_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = super::vhdx_log::gunzip("dirty-log-b.vhdx.gz", d);
    let replayed = qemu_replayed_copy(&src, d);
    let out = d.join("replayed.raw");
    convert_ok(
        &Disk::open(&src).unwrap(),
        &out,
        &ConvertOptions::new(Format::Raw),
    );
    qemu_identical(&out, "raw", &replayed, "vhdx");
}
