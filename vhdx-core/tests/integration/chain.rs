//! Differencing chains (VHDX and VHD) written by an independent builder,
//! `testdata/build_images.py` (Python, standard library only, written from FORMATS.md; it
//! shares no code with our reader). The committed fixtures live in `testdata/chain/`.
//!
//! Every chain is checked three ways: our reader against the content the builder expects
//! (its own model of the spec), libvhdi (`pyvhdi`) against the builder's model of libvhdi,
//! and our reader against libvhdi byte for byte wherever the two models agree.
//!
//! Known libvhdi (20260901) disagreements with the spec, for which the spec-side comparison
//! is against the builder's expected content and not against libvhdi:
//! - VHDX differencing disks: libvhdi reads the *parent* for PAYLOAD_BLOCK_ZERO (2),
//!   PAYLOAD_BLOCK_UNMAPPED (3) and PAYLOAD_BLOCK_UNDEFINED (1). FORMATS.md A.9: ZERO reads
//!   zeros (MUST) and hides the parent; UNMAPPED/UNDEFINED may return zeros or old content
//!   ("zeros recommended"), and our reader returns zeros, as the builder's model expects.
//! - VHD differencing disks: once a sector's bitmap bit is set, libvhdi reads the rest of
//!   that bitmap byte (up to 7 following sectors) from the child even where their bits are
//!   0 (FORMATS.md B.7: a 0 bit means "read the parent", per sector, MSB first). The builder
//!   fills bit-0 sectors of differencing blocks with 0xEE, so libvhdi returns 0xEE there.

use super::common::*;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use vhdx_core::disk::extents;
use vhdx_core::{Disk, ErrorKind, OpenOptions, ParentPolicy, Status, VirtualDisk};

const MIB: u64 = 1 << 20;

/// The independent image builder, `testdata/build_images.py`.
pub fn builder() -> PathBuf {
    testdata().join("build_images.py")
}

/// `python3 testdata/build_images.py ARGS...` (the builder needs no third-party package).
fn build(args: &[&str]) {
    run(Command::new("python3").arg(builder()).args(args));
}

/// The committed chain `name`, decompressed into a fresh temporary folder.
pub fn fixture(name: &str) -> tempfile::TempDir {
    let src = testdata().join("chain").join(name);
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        let fname = p.file_name().unwrap().to_str().unwrap().to_string();
        if let Some(stem) = fname.strip_suffix(".gz") {
            let out = File::create(dir.path().join(stem)).unwrap();
            let st = Command::new("gzip")
                .arg("-dc")
                .arg(&p)
                .stdout(Stdio::from(out))
                .status()
                .unwrap();
            assert!(st.success(), "gzip -dc {}", p.display());
            n += 1;
        } else if fname.ends_with(".vhd") || fname.ends_with(".vhdx") {
            std::fs::copy(&p, dir.path().join(&fname)).unwrap();
            n += 1;
        }
    }
    assert!(n >= 2, "no images in {}", src.display());
    dir
}

/// The builder's expected content of `file` of chain `name` (`libvhdi`: what libvhdi is
/// expected to return instead), as a sparse raw file in `dir`.
pub fn expected_file(name: &str, file: &str, libvhdi: bool, dir: &Path) -> PathBuf {
    let out = dir.join(format!(
        "{file}.{}.expected",
        if libvhdi { "libvhdi" } else { "spec" }
    ));
    let mut args = vec!["expect", name, file, out.to_str().unwrap()];
    if libvhdi {
        args.push("--libvhdi");
    }
    build(&args);
    out
}

/// Byte ranges `(offset, length)` of the chain `paths` (top first) as libvhdi reads them,
/// concatenated.
fn pyvhdi_ranges(paths: &[&Path], ranges: &[(u64, u64)]) -> Vec<u8> {
    let script = r#"
import sys, pyvhdi
i = sys.argv.index("--")
ranges = [tuple(map(int, r.split(":"))) for r in sys.argv[1:i]]
files = []
for p in sys.argv[i + 1:]:
    f = pyvhdi.file()
    f.open(p)
    files.append(f)
for child, parent in zip(files, files[1:]):
    child.set_parent(parent)
out = sys.stdout.buffer
for off, n in ranges:
    data = files[0].read_buffer_at_offset(n, off)
    assert len(data) == n, (off, len(data), n)
    out.write(data)
"#;
    let mut cmd = Command::new(oracle_python());
    cmd.arg("-c").arg(script);
    for (o, n) in ranges {
        cmd.arg(format!("{o}:{n}"));
    }
    cmd.arg("--");
    for p in paths {
        cmd.arg(p);
    }
    run(&mut cmd)
}

/// Compares the whole disk with a (sparse) raw file, piece by piece.
fn assert_disk_equals_file(disk: &dyn VirtualDisk, raw: &Path, what: &str) {
    let mut f = File::open(raw).unwrap();
    assert_eq!(
        f.metadata().unwrap().len(),
        disk.size(),
        "{what}: size differs from {}",
        raw.display()
    );
    let piece = 8 * MIB as usize;
    let mut ours = vec![0u8; piece];
    let mut theirs = vec![0u8; piece];
    let mut off = 0u64;
    while off < disk.size() {
        let n = piece.min((disk.size() - off) as usize);
        disk.read_at(&mut ours[..n], off).unwrap();
        f.read_exact(&mut theirs[..n]).unwrap();
        if ours[..n] != theirs[..n] {
            assert_same(
                &ours[..n],
                &theirs[..n],
                &format!("{what} at piece {off:#x}"),
            );
        }
        off += n as u64;
    }
}

/// The chains with three levels: folder, extension, and piece sizes for odd reads.
const CHAINS: [(&str, &str); 3] = [("vhdx512", "vhdx"), ("vhdx4k", "vhdx"), ("vhd", "vhd")];
const LEVELS: [&str; 3] = ["grandchild", "child", "base"];

fn chain_whole_disk_check(name: &str, ext: &str) {
    let dir = fixture(name);
    let d = dir.path();
    for lvl in 0..LEVELS.len() {
        let files: Vec<PathBuf> = LEVELS[lvl..]
            .iter()
            .map(|l| d.join(format!("{l}.{ext}")))
            .collect();
        let top = &files[0];
        let fname = format!("{}.{ext}", LEVELS[lvl]);
        let what = format!("{name}/{fname}");
        // Parents found through the locators alone.
        let disk = Disk::open(top).unwrap_or_else(|e| panic!("open {what}: {e}"));
        assert_eq!(disk.chain().len(), files.len(), "{what}: chain length");
        let ours = read_all(&disk, 1 << 20);
        let spec = std::fs::read(expected_file(name, &fname, false, d)).unwrap();
        assert_same(
            &ours,
            &spec,
            &format!("{what}: ours vs builder's expected content"),
        );
        // Odd pieces (not sector multiples) give the same bytes.
        assert_same(
            &read_all(&disk, 512 * 7 + 1),
            &spec,
            &format!("{what}: odd-piece read"),
        );

        let parents: Vec<&Path> = files[1..].iter().map(|p| p.as_path()).collect();
        let lib = pyvhdi_read_all(top, &parents);
        let lib_model = std::fs::read(expected_file(name, &fname, true, d)).unwrap();
        assert_same(
            &lib,
            &lib_model,
            &format!("{what}: libvhdi vs the builder's model of libvhdi"),
        );
        // Wherever the spec and libvhdi's known behaviour coincide, we equal libvhdi.
        let mut agreeing = 0usize;
        for (i, ((o, l), (s, m))) in ours
            .chunks(512)
            .zip(lib.chunks(512))
            .zip(spec.chunks(512).zip(lib_model.chunks(512)))
            .enumerate()
        {
            if s == m {
                assert!(o == l, "{what}: ours and libvhdi differ in sector {i}");
                agreeing += 1;
            }
        }
        assert!(
            agreeing > ours.len() / 1024,
            "{what}: too few comparable sectors"
        );
    }
}

#[test]
fn vhdx_chain_512_matches_builder_and_libvhdi() {
    chain_whole_disk_check("vhdx512", "vhdx");
}

#[test]
fn vhdx_chain_4096_matches_builder_and_libvhdi() {
    chain_whole_disk_check("vhdx4k", "vhdx");
}

#[test]
fn vhd_chain_matches_builder_and_libvhdi() {
    chain_whole_disk_check("vhd", "vhd");
}

/// 4 GiB + 4 MiB with 1 MiB blocks at 512-byte sectors: two chunks, partial blocks on both
/// sides of the boundary (block 4095 is the last of chunk 0, 4096 the first of chunk 1, whose
/// bits live at the start of the second sector-bitmap block).
#[test]
fn vhdx_chain_crossing_a_chunk_boundary() {
    let dir = fixture("vhdxbig");
    let d = dir.path();
    let child = d.join("child.vhdx");
    let base = d.join("base.vhdx");
    let disk = Disk::open(&child).unwrap();
    assert_eq!(disk.size(), 4 * 1024 * MIB + 4 * MIB);
    let spec = expected_file("vhdxbig", "child.vhdx", false, d);
    assert_disk_equals_file(&disk, &spec, "vhdxbig/child.vhdx");

    let boundary = 4096 * MIB;
    let ranges = [(0, 2 * MIB), (boundary - 3 * MIB, 7 * MIB)];
    let lib = pyvhdi_ranges(&[&child, &base], &ranges);
    let lib_model_path = expected_file("vhdxbig", "child.vhdx", true, d);
    let mut f = File::open(&spec).unwrap();
    let mut g = File::open(&lib_model_path).unwrap();
    let mut pos = 0usize;
    for (off, len) in ranges {
        let mut ours = vec![0u8; len as usize];
        disk.read_at(&mut ours, off).unwrap();
        let mut s = vec![0u8; len as usize];
        let mut m = vec![0u8; len as usize];
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(off)).unwrap();
        f.read_exact(&mut s).unwrap();
        g.seek(SeekFrom::Start(off)).unwrap();
        g.read_exact(&mut m).unwrap();
        let l = &lib[pos..pos + len as usize];
        pos += len as usize;
        assert_same(l, &m, &format!("libvhdi vs model at {off:#x}"));
        for (i, ((o, l), (s, m))) in ours
            .chunks(512)
            .zip(l.chunks(512))
            .zip(s.chunks(512).zip(m.chunks(512)))
            .enumerate()
        {
            if s == m {
                assert!(
                    o == l,
                    "ours and libvhdi differ at {:#x}",
                    off + 512 * i as u64
                );
            }
        }
    }
    // The block before and after the boundary: present in this file (partial) → data at depth 0
    // for a sector whose bit is set; block 4099 is ZERO in the child.
    let e = disk.block_status(boundary, 512).unwrap();
    assert!(
        matches!(e.status, Status::Data { depth: 0, .. }),
        "first sector of chunk 1 (bit set in the second SB block): {e:?}"
    );
    let e = disk.block_status(boundary - 512, 512).unwrap();
    assert!(
        matches!(e.status, Status::Data { depth: 0, .. }),
        "last sector of chunk 0: {e:?}"
    );
    let e = disk.block_status(4099 * MIB, MIB).unwrap();
    assert_eq!(e.status, Status::Zero { depth: 0 }, "ZERO block 4099");
    let e = disk.block_status(4094 * MIB, MIB).unwrap();
    assert!(
        matches!(e.status, Status::Data { depth: 1, .. }),
        "block 4094, only in the base: {e:?}"
    );
}

/// The committed files are exactly what the builder writes today (so the expected content
/// the builder computes describes them).
#[test]
fn fixtures_are_reproducible() {
    for name in ["vhdx512", "vhdx4k", "vhdxbig", "vhd"] {
        let committed = fixture(name);
        let fresh = tempfile::tempdir().unwrap();
        build(&["chain", name, fresh.path().to_str().unwrap()]);
        for entry in std::fs::read_dir(committed.path()).unwrap() {
            let p = entry.unwrap().path();
            let q = fresh.path().join(p.file_name().unwrap());
            let a = std::fs::read(&p).unwrap();
            let b = std::fs::read(&q).unwrap();
            assert!(a == b, "{name}: {} differs from a rebuild", p.display());
        }
    }
}

fn missing_parent_then_explicit(name: &str, ext: &str) {
    let dir = fixture(name);
    let d = dir.path();
    let gc = d.join(format!("grandchild.{ext}"));
    let child = d.join(format!("child.{ext}"));
    let away = tempfile::tempdir().unwrap();
    let moved = away.path().join(format!("moved-base.{ext}"));
    std::fs::rename(d.join(format!("base.{ext}")), &moved).unwrap();

    let err = open_err(&gc, &OpenOptions::default());
    assert_eq!(err.kind(), ErrorKind::ParentNotFound, "{name}: {err}");
    let msg = err.to_string();
    let relative_tried = d.join(format!("base.{ext}"));
    assert!(
        msg.contains(&format!("base.{ext}")) && msg.contains("tried"),
        "{name}: message should list the paths tried: {msg}"
    );
    assert!(
        msg.contains(&relative_tried.display().to_string())
            || msg.contains(&format!("./base.{ext}")),
        "{name}: the relative locator's path is not among those tried: {msg}"
    );

    let opts = OpenOptions {
        parents: vec![child.clone(), moved.clone()],
        ..OpenOptions::default()
    };
    let disk = Disk::open_with(&gc, &opts).unwrap();
    assert_eq!(disk.chain().len(), 3);
    let spec = expected_file(name, &format!("grandchild.{ext}"), false, d);
    assert_disk_equals_file(&disk, &spec, &format!("{name}: explicit parents"));

    // Only the deeper level given: the first level still comes from the locator.
    let opts = OpenOptions {
        parents: vec![moved.clone()],
        ..OpenOptions::default()
    };
    let disk = Disk::open_with(&child, &opts).unwrap();
    let spec = expected_file(name, &format!("child.{ext}"), false, d);
    assert_disk_equals_file(&disk, &spec, &format!("{name}: child with explicit parent"));
}

#[test]
fn vhdx_missing_parent_and_explicit_parents() {
    missing_parent_then_explicit("vhdx512", "vhdx");
}

#[test]
fn vhd_missing_parent_and_explicit_parents() {
    missing_parent_then_explicit("vhd", "vhd");
}

/// The error of opening `path`, panicking (briefly) if it opens.
fn open_err(path: &Path, opts: &OpenOptions) -> vhdx_core::Error {
    match Disk::open_with(path, opts) {
        Ok(d) => panic!(
            "{} opened (chain of {}) but should have failed",
            path.display(),
            d.chain().len()
        ),
        Err(e) => e,
    }
}

fn variant(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build(&["variant", name, dir.path().to_str().unwrap()]);
    dir
}

#[test]
fn linkage_mismatch_is_refused_unless_disabled() {
    for (v, child) in [
        ("vhdx-mismatch", "child.vhdx"),
        ("vhd-mismatch", "child.vhd"),
    ] {
        let dir = variant(v);
        let p = dir.path().join(child);
        let err = open_err(&p, &OpenOptions::default());
        assert_eq!(err.kind(), ErrorKind::LinkageMismatch, "{v}: {err}");
        let opts = OpenOptions {
            verify_linkage: false,
            ..OpenOptions::default()
        };
        let disk = Disk::open_with(&p, &opts).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(disk.chain().len(), 2);
        // Block 0 comes from the (rebuilt) base, block 1 from the child.
        let mut buf = vec![0u8; 512];
        disk.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..2], b"b.", "{v}: block 0 from the base");
        disk.read_at(&mut buf, MIB).unwrap();
        assert_eq!(&buf[..2], b"c.", "{v}: block 1 from the child");
    }
}

#[test]
fn chain_loops_are_detected() {
    for (v, file) in [
        ("vhdx-self", "self.vhdx"),
        ("vhdx-abab", "a.vhdx"),
        ("vhd-abab", "a.vhd"),
    ] {
        let dir = variant(v);
        let err = open_err(&dir.path().join(file), &OpenOptions::default());
        assert_eq!(err.kind(), ErrorKind::ChainLoop, "{v}: {err}");
        // Not even with linkage checks off.
        let opts = OpenOptions {
            verify_linkage: false,
            ..OpenOptions::default()
        };
        let err = open_err(&dir.path().join(file), &opts);
        assert_eq!(
            err.kind(),
            ErrorKind::ChainLoop,
            "{v} (no linkage check): {err}"
        );
    }
}

#[test]
fn strict_policy_follows_only_relative_paths_inside_the_folder() {
    for (v, ext) in [("vhdx-policy", "vhdx"), ("vhd-policy", "vhd")] {
        let dir = variant(v);
        let d = dir.path();
        let strict = OpenOptions {
            policy: ParentPolicy::Strict,
            ..OpenOptions::default()
        };
        for refused in [format!("other/abs.{ext}"), format!("sub/out.{ext}")] {
            let p = d.join(&refused);
            // The default policy follows the locator.
            let disk = Disk::open(&p).unwrap_or_else(|e| panic!("{v} {refused} default: {e}"));
            assert_eq!(disk.chain().len(), 2, "{v} {refused}");
            let err = open_err(&p, &strict);
            let ok = err.kind() == ErrorKind::PolicyRefused
                || (err.kind() == ErrorKind::ParentNotFound && err.to_string().contains("refused"));
            assert!(ok, "{v} {refused}: strict policy should refuse: {err}");
            // A path the caller names is accepted under the strict policy.
            let named = OpenOptions {
                parents: vec![d.join(format!("base.{ext}"))],
                ..strict.clone()
            };
            Disk::open_with(&p, &named).unwrap_or_else(|e| panic!("{v} {refused} named: {e}"));
        }
        let p = d.join(format!("in.{ext}"));
        let disk = Disk::open_with(&p, &strict).unwrap_or_else(|e| panic!("{v} in: {e}"));
        assert_eq!(disk.chain().len(), 2);
        let mut buf = vec![0u8; 512];
        disk.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..2], b"b.", "{v}: block 0 from the base");
    }
}

/// (chain, extension, block size, [(block, expected status)]) for `block_status_reports_chain_depth`.
type DepthCase = (&'static str, &'static str, u64, &'static [(u64, Status)]);

/// Block status reports the depth of the image holding the data.
#[test]
fn block_status_reports_chain_depth() {
    // (chain, ext, block size, [(block, expected status kind)])
    // vhdx512: block 6 only in the base (depth 2), 15 full in the child (1), 10 full in the
    // grandchild (0), 9 ZERO in the grandchild, 13 nowhere.
    // vhd: block 2 and 5 only in the base, 1 full in the child, 6 full in the grandchild.
    let cases: [DepthCase; 2] = [
        (
            "vhdx512",
            "vhdx",
            MIB,
            &[
                (
                    6,
                    Status::Data {
                        depth: 2,
                        file_offset: None,
                    },
                ),
                (
                    15,
                    Status::Data {
                        depth: 1,
                        file_offset: None,
                    },
                ),
                (
                    10,
                    Status::Data {
                        depth: 0,
                        file_offset: None,
                    },
                ),
                (9, Status::Zero { depth: 0 }),
                (13, Status::Unallocated),
            ],
        ),
        (
            "vhd",
            "vhd",
            2 * MIB,
            &[
                (
                    2,
                    Status::Data {
                        depth: 2,
                        file_offset: None,
                    },
                ),
                (
                    5,
                    Status::Data {
                        depth: 2,
                        file_offset: None,
                    },
                ),
                (
                    1,
                    Status::Data {
                        depth: 1,
                        file_offset: None,
                    },
                ),
                (
                    6,
                    Status::Data {
                        depth: 0,
                        file_offset: None,
                    },
                ),
            ],
        ),
    ];
    for (name, ext, bs, expect) in cases {
        let dir = fixture(name);
        let disk = Disk::open(dir.path().join(format!("grandchild.{ext}"))).unwrap();
        let all = extents(&disk).unwrap();
        // Extents tile the disk.
        let mut off = 0;
        for e in &all {
            assert_eq!(e.offset, off, "{name}: extents must tile the disk");
            off += e.length;
        }
        assert_eq!(off, disk.size());
        for (block, want) in expect {
            let start = block * bs;
            let e = disk.block_status(start, bs).unwrap();
            let same_kind = match (e.status, *want) {
                (Status::Data { depth: a, .. }, Status::Data { depth: b, .. }) => a == b,
                (a, b) => a == b,
            };
            assert!(same_kind, "{name} block {block}: {e:?}, want {want:?}");
            assert_eq!(e.length, bs, "{name} block {block}: uniform over the block");
            // extents() agrees: the extent covering the block has the same status.
            let x = all
                .iter()
                .find(|x| x.offset <= start && start < x.offset + x.length)
                .unwrap();
            let same_kind = match (x.status, *want) {
                (Status::Data { depth: a, .. }, Status::Data { depth: b, .. }) => a == b,
                (a, b) => a == b,
            };
            assert!(
                same_kind,
                "{name} block {block}: extent {x:?}, want {want:?}"
            );
            assert!(x.offset + x.length >= start + bs);
        }
    }
}

/// Reads at odd offsets and lengths (crossing partially present runs and block edges) equal
/// libvhdi's bytes where libvhdi follows the spec, and the builder's content everywhere.
#[test]
fn odd_reads_match_oracle_bytes() {
    for (name, ext) in CHAINS {
        let dir = fixture(name);
        let d = dir.path();
        let files: Vec<PathBuf> = LEVELS
            .iter()
            .map(|l| d.join(format!("{l}.{ext}")))
            .collect();
        let disk = Disk::open(&files[0]).unwrap();
        let spec =
            std::fs::read(expected_file(name, &format!("grandchild.{ext}"), false, d)).unwrap();
        let model =
            std::fs::read(expected_file(name, &format!("grandchild.{ext}"), true, d)).unwrap();
        let parents: Vec<&Path> = files[1..].iter().map(|p| p.as_path()).collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
        let size = disk.size();
        let mut ranges = Vec::new();
        // Around the start of block 1 (partial in child and grandchild) and random spots.
        ranges.push((512 * 2047 + 1, 512 * 5 + 1));
        ranges.push((MIB + 1, 512 * 17 + 1));
        for _ in 0..60 {
            let k = 1 + rng.below(40);
            let len = 512 * k + 1 + rng.below(511);
            let off = rng.below(size - len);
            ranges.push((off, len));
        }
        let lib = pyvhdi_ranges(
            &std::iter::once(files[0].as_path())
                .chain(parents.iter().copied())
                .collect::<Vec<_>>(),
            &ranges,
        );
        let mut pos = 0usize;
        for (off, len) in ranges {
            let (o, n) = (off as usize, len as usize);
            let mut ours = vec![0u8; n];
            disk.read_at(&mut ours, off).unwrap();
            assert_same(
                &ours,
                &spec[o..o + n],
                &format!("{name}: read {off:#x}+{len}"),
            );
            let l = &lib[pos..pos + n];
            pos += n;
            assert_same(
                l,
                &model[o..o + n],
                &format!("{name}: libvhdi {off:#x}+{len}"),
            );
            for i in 0..n {
                if spec[o + i] == model[o + i] {
                    assert_eq!(
                        ours[i],
                        l[i],
                        "{name}: ours and libvhdi differ at byte {:#x}",
                        off + i as u64
                    );
                }
            }
        }
    }
}

/// `Disk::from_storages`: a chain from memory reads as the same chain from its files, and
/// each parent passes the same linkage check.
#[test]
fn chains_from_storages_read_as_from_files_and_check_linkage() {
    use std::sync::Arc;
    use vhdx_core::storage::{MemStorage, Storage};
    let mem = |p: PathBuf| -> (Arc<dyn Storage>, String) {
        let name = p.display().to_string();
        (Arc::new(MemStorage::new(std::fs::read(p).unwrap())), name)
    };
    for (chain, ext) in [("vhdx512", "vhdx"), ("vhd", "vhd")] {
        let dir = fixture(chain);
        let f = |n: &str| dir.path().join(format!("{n}.{ext}"));
        let on_disk = Disk::open(f("grandchild")).unwrap();
        let images = vec![mem(f("grandchild")), mem(f("child")), mem(f("base"))];
        let in_memory = Disk::from_storages(images, &OpenOptions::default()).unwrap();
        assert_eq!(in_memory.chain().len(), 3);
        assert_same(
            &read_all(&in_memory, 1 << 20),
            &read_all(&on_disk, 1 << 20),
            chain,
        );
        // The wrong parent (the base in place of the child) is refused, unless overridden.
        let wrong = || vec![mem(f("grandchild")), mem(f("base"))];
        let err = Disk::from_storages(wrong(), &OpenOptions::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LinkageMismatch, "{chain}: {err}");
        let lax = OpenOptions {
            verify_linkage: false,
            ..OpenOptions::default()
        };
        let d = Disk::from_storages(wrong(), &lax).unwrap();
        assert_eq!(d.parent_info().unwrap().status, "ignored_mismatch");
        // A missing parent, and a parent given to a disk that has none.
        let err = Disk::from_storages(vec![mem(f("child"))], &OpenOptions::default());
        assert_eq!(err.unwrap_err().kind(), ErrorKind::ParentNotFound);
        let err = Disk::from_storages(vec![mem(f("base")), mem(f("base"))], &lax);
        assert_eq!(err.unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
}
