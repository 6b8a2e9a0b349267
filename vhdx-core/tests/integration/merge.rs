//! Merging and flattening (issue #5 items 1, 2, 7). Chains 1–5 deep, VHDX and VHD, are built
//! with random writes and trims at every level, their content kept in a shadow by
//! construction; before each merge the ORIGINAL chain is read by libvhdi (pyvhdi) and by us.
//! After the merge the ancestor must read what the chain read — compared with libvhdi's
//! read of the original chain, with our own, and (where QEMU can open the ancestor: a VHDX
//! with 512-byte sectors or a VHD, without a parent) with `qemu-img compare` against the
//! raw image of the chain and `qemu-img check` — while every merged disk and every parent of
//! the ancestor stay byte-identical. A merge SIGKILLed at random moments leaves an ancestor
//! that opens (QEMU replays its log too), checks clean, and holds sector by sector either
//! its old content or the chain's; running the merge again completes it.
//!
//! libvhdi's known departures (testdata/README.md) are kept out of the way: every
//! differencing VHDX level gets a sector bitmap by one small partial write first, ranges of
//! ZERO-state blocks of differencing VHDX levels (which libvhdi reads from the parent) are
//! left out of its comparisons, and differencing VHD levels are written in 4 KiB units.

use super::common::*;
use super::write::{our_check, qemu_check, qemu_compare};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::ops::merge::{flatten, merge, FlattenOptions, MergeOptions};
use vhdx_core::{Disk, DiskType, ErrorKind, Format, OpenOptions, Status, VirtualDisk};

const MIB: u64 = 1 << 20;

/// A chain built by [`build`], with what each of its disks reads.
struct Chain {
    dir: tempfile::TempDir,
    /// The disks, base first, the child last.
    disks: Vec<PathBuf>,
    /// What each disk reads with its parents, base first.
    views: Vec<Vec<u8>>,
    format: Format,
    /// What libvhdi read from the chain as built: its windows and bytes (see
    /// [`read_before`]).
    before: (Vec<(u64, u64)>, Vec<u8>),
}

impl Chain {
    fn top(&self) -> &Path {
        self.disks.last().unwrap()
    }

    /// The parents of disk `i`, nearest first.
    fn parents(&self, i: usize) -> Vec<PathBuf> {
        self.disks[..i].iter().rev().cloned().collect()
    }

    /// A copy of the chain in a new folder (the disks find each other through their
    /// relative locators).
    fn copy(&self) -> Chain {
        let dir = tempfile::tempdir().unwrap();
        let disks = self
            .disks
            .iter()
            .map(|p| {
                let q = dir.path().join(p.file_name().unwrap());
                std::fs::copy(p, &q).unwrap();
                q
            })
            .collect();
        Chain {
            dir,
            disks,
            views: self.views.clone(),
            format: self.format,
            before: self.before.clone(),
        }
    }
}

/// How a chain is made: format, number of differencing levels over the base, virtual size,
/// whether the base is fixed, the seed of the random writes.
#[derive(Clone, Copy)]
struct Spec {
    format: Format,
    levels: usize,
    size: u64,
    fixed_base: bool,
    seed: u64,
}

/// Builds a chain: a base and `levels` differencing disks, each written with random writes
/// and trims (see the module documentation for the shapes libvhdi needs).
fn build(spec: Spec) -> Chain {
    let dir = tempfile::tempdir().unwrap();
    let (ext, child_ext) = match spec.format {
        Format::Vhdx => ("vhdx", "avhdx"),
        _ => ("vhd", "avhd"),
    };
    let mut rng = Rng(spec.seed);
    let mut disks = Vec::new();
    let mut views = Vec::new();
    let mut shadow = vec![0u8; spec.size as usize];
    for level in 0..=spec.levels {
        let p = if level == 0 {
            dir.path().join(format!("base.{ext}"))
        } else {
            dir.path().join(format!("L{level}.{child_ext}"))
        };
        let mut o = CreateOptions::new().format(spec.format);
        if spec.format == Format::Vhdx {
            o = o.block_size(MIB as u32);
        }
        o = match disks.last() {
            None if spec.fixed_base => o.size(spec.size).disk_type(DiskType::Fixed),
            None => o.size(spec.size),
            Some(parent) => o.parent(parent),
        };
        create(&p, &o).unwrap();
        let diff = level > 0;
        let d = Disk::open_rw(&p, &OpenOptions::default()).unwrap();
        let block = match spec.format {
            Format::Vhdx => MIB,
            _ => 2 * MIB,
        };
        // VHD differencing levels in 4 KiB units (libvhdi reads their bitmaps per byte).
        let align = if diff && spec.format == Format::Vhd {
            4096
        } else {
            1
        };
        if diff && spec.format == Format::Vhdx {
            // A sector bitmap for the chunk (libvhdi needs one).
            let off = rng.below(spec.size / 512 - 8) * 512;
            let data = vec![0xC0 + level as u8; 4096];
            d.write_at(&data, off).unwrap();
            shadow[off as usize..off as usize + 4096].copy_from_slice(&data);
        }
        for _ in 0..12 + rng.below(10) {
            let (off, len) = random_range(&mut rng, spec.size, block, align);
            let r = rng.below(10);
            let data: Vec<u8> = match r {
                0..=1 => vec![0u8; len as usize],
                2..=5 => vec![1 + rng.below(255) as u8; len as usize],
                _ => random_bytes(&mut rng, len),
            };
            if rng.below(5) == 0 {
                d.trim(off, len).unwrap();
                shadow[off as usize..(off + len) as usize].fill(0);
            } else {
                d.write_at(&data, off).unwrap();
                shadow[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
        }
        d.close().unwrap();
        drop(d);
        assert_same(
            &read_all(&Disk::open(&p).unwrap(), 4 << 20),
            &shadow,
            &format!("level {level} as built"),
        );
        disks.push(p);
        views.push(shadow.clone());
    }
    let mut chain = Chain {
        dir,
        disks,
        views,
        format: spec.format,
        before: (Vec::new(), Vec::new()),
    };
    chain.before = read_before(&chain);
    chain
}

/// `len` pseudo-random bytes.
fn random_bytes(rng: &mut Rng, len: u64) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len.div_ceil(8))
        .flat_map(|_| rng.next().to_le_bytes())
        .collect();
    v.truncate(len as usize);
    v
}

/// A random range of a disk of `size` bytes with `block`-byte blocks, on multiples of
/// `align`: short, long, or a whole aligned block (which a zero write or a trim turns into
/// a ZERO block in a differencing VHDX).
fn random_range(rng: &mut Rng, size: u64, block: u64, align: u64) -> (u64, u64) {
    let (mut off, mut len) = match rng.below(8) {
        0..=1 => (rng.below(size - 800), 1 + rng.below(700)),
        2..=4 => {
            let len = 1 + rng.below(96 << 10);
            (rng.below(size - len), len)
        }
        5..=6 => {
            let len = 1 + rng.below((block * 5 / 2).min(size / 6));
            (rng.below(size - len), len)
        }
        _ => (rng.below(size / block) * block, block),
    };
    if align > 1 {
        let end = (off + len).div_ceil(align) * align;
        off = off / align * align;
        len = end.min(size) - off;
    }
    (off, len)
}

/// Ranges libvhdi reads wrongly in `disk`'s chain: ZERO-state blocks of differencing VHDX
/// levels (it reads them from the parent).
fn libvhdi_blind(disk: &Disk) -> Vec<(u64, u64)> {
    let levels = disk.chain().len() as u32;
    if disk.format() != Format::Vhdx {
        return Vec::new();
    }
    let mut out = Vec::new();
    disk.visit_extents(0, disk.size(), &mut |e| {
        if matches!(e.status, Status::Zero { depth } if depth + 1 < levels) {
            out.push((e.offset, e.length));
        }
        Ok(())
    })
    .unwrap();
    out
}

/// The complement of `blind` in `[0, size)`, in windows of at most 4 MiB.
fn windows(size: u64, blind: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut push = |a: u64, b: u64| {
        let mut a = a;
        while a < b {
            let n = (b - a).min(4 * MIB);
            out.push((a, n));
            a += n;
        }
    };
    for &(o, n) in blind {
        push(pos, o);
        pos = o + n;
    }
    push(pos, size);
    out
}

/// `bytes` at `windows`, concatenated.
fn at(bytes: &[u8], windows: &[(u64, u64)]) -> Vec<u8> {
    windows
        .iter()
        .flat_map(|&(o, n)| bytes[o as usize..(o + n) as usize].iter().copied())
        .collect()
}

/// What the ORIGINAL chain reads before a merge: libvhdi's read where it is exact, which
/// must match the shadow, as must ours everywhere. Returns libvhdi's windows and bytes.
fn read_before(chain: &Chain) -> (Vec<(u64, u64)>, Vec<u8>) {
    let top = chain.disks.len() - 1;
    let d = Disk::open(chain.top()).unwrap();
    let want = &chain.views[top];
    assert_same(&read_all(&d, 4 << 20), want, "our read of the chain");
    let w = windows(d.size(), &libvhdi_blind(&d));
    let theirs = pyvhdi_windows(chain.top(), &chain.parents(top), &w);
    assert_same(&theirs, &at(want, &w), "pyvhdi over the original chain");
    (w, theirs)
}

/// Checks disk `anc` of `chain` after the child was merged into it: it reads what libvhdi
/// read from the original chain ([`Chain::before`]) and the whole chain's content, for us,
/// libvhdi and (a VHDX with 512-byte sectors or a VHD, without a parent) QEMU; its checks
/// are clean.
fn verify_merged(chain: &Chain, anc: usize) {
    let (want, before) = (chain.views.last().unwrap(), &chain.before);
    let p = &chain.disks[anc];
    let what = format!("merged {}", p.display());
    let d = Disk::open(p).unwrap();
    let ours = read_all(&d, 4 << 20);
    assert_same(
        &at(&ours, &before.0),
        &before.1,
        &format!("{what} vs pyvhdi before"),
    );
    assert_same(&ours, want, &what);
    our_check(p);
    let w = windows(d.size(), &libvhdi_blind(&d));
    let theirs = pyvhdi_windows(p, &chain.parents(anc), &w);
    assert_same(&theirs, &at(want, &w), &format!("{what}: pyvhdi"));
    if anc == 0 && d.logical_sector_size() == 512 {
        let raw = chain.dir.path().join("before.raw");
        std::fs::write(&raw, want).unwrap();
        let fmt = if chain.format == Format::Vhdx {
            "vhdx"
        } else {
            "vpc"
        };
        qemu_compare(p, fmt, &raw);
        if chain.format == Format::Vhdx {
            qemu_check(p);
        }
        std::fs::remove_file(raw).unwrap();
    }
}

/// Every disk's bytes.
fn files(chain: &Chain) -> Vec<Vec<u8>> {
    chain
        .disks
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// Merges the child of a copy of `chain` into disk `anc` (`into` names it unless it is the
/// parent) and checks everything: the ancestor's content, every other disk unchanged, the
/// report. Returns the bytes zeroed and skipped.
fn merge_and_verify(chain: &Chain, anc: usize, name_it: bool) -> (u64, u64) {
    let c = chain.copy();
    let top = c.disks.len() - 1;
    let bytes = files(&c);
    let opts = MergeOptions {
        into: name_it.then(|| c.disks[anc].clone()),
        ..Default::default()
    };
    let calls = std::cell::Cell::new((0u64, 0u64, 0u32));
    let stats = merge(
        c.top(),
        &opts,
        Some(&|done, total| {
            let (last, _, n) = calls.get();
            assert!(done >= last && done <= total, "progress {done}/{total}");
            calls.set((done, total, n + 1));
        }),
    )
    .unwrap_or_else(|e| panic!("merge into {anc}: {e}"));
    let (done, total, n) = calls.get();
    assert!(n > 0 && done == total && total == stats.bytes_merged);
    assert_eq!(stats.merged.len(), top - anc);
    assert_eq!(
        stats.bytes_written + stats.bytes_zeroed + stats.bytes_skipped,
        stats.bytes_merged
    );
    assert!(!stats.resumed && stats.deleted.is_empty() && stats.invalidated.is_empty());
    if c.format == Format::Vhdx && stats.bytes_written + stats.bytes_zeroed > 0 {
        assert_ne!(stats.linkage_id_after, stats.linkage_id_before);
    }
    verify_merged(&c, anc);
    for (i, b) in files(&c).iter().enumerate() {
        if i != anc {
            assert!(*b == bytes[i], "disk {i} changed in a merge into {anc}");
        }
    }
    assert_eq!(
        std::fs::read_dir(c.dir.path()).unwrap().count(),
        c.disks.len()
    );
    (stats.bytes_zeroed, stats.bytes_skipped)
}

/// Every merge a chain of `levels` offers: into the parent, into the base, into a middle
/// ancestor. Returns the bytes zeroed and skipped over all of them.
fn every_merge(spec: Spec) -> (u64, u64) {
    let chain = build(spec);
    let top = spec.levels;
    let mut ancestors = vec![(top - 1, false)];
    if top >= 2 {
        ancestors.push((0, true));
    }
    if top >= 3 {
        ancestors.push((top / 2, true));
    }
    ancestors
        .into_iter()
        .map(|(anc, name_it)| merge_and_verify(&chain, anc, name_it))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

#[test]
fn vhdx_chains_1_to_5_deep_merge_into_every_ancestor() {
    let (zeroed, skipped) = (1..=5)
        .map(|levels| {
            every_merge(Spec {
                format: Format::Vhdx,
                levels,
                size: [48, 24, 16, 12, 12][levels - 1] * MIB,
                fixed_base: levels == 2,
                seed: 100 + levels as u64,
            })
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    // Both ways of merging zeros were taken.
    assert!(zeroed > 0 && skipped > 0, "{zeroed} {skipped}");
}

#[test]
fn vhd_chains_1_to_5_deep_merge_into_every_ancestor() {
    let zeroed: u64 = (1..=5)
        .map(|levels| {
            every_merge(Spec {
                format: Format::Vhd,
                levels,
                size: [16, 12, 8, 8, 8][levels - 1] * MIB,
                fixed_base: levels == 3,
                seed: 200 + levels as u64,
            })
            .0
        })
        .sum();
    assert!(zeroed > 0);
}

#[test]
fn delete_removes_the_merged_disks_once_the_ancestor_is_complete() {
    for format in [Format::Vhdx, Format::Vhd] {
        let c = build(Spec {
            format,
            levels: 3,
            size: 16 * MIB,
            fixed_base: false,
            seed: 300,
        });
        let opts = MergeOptions {
            into: Some(c.disks[1].clone()),
            delete: true,
            ..Default::default()
        };
        let base = std::fs::read(&c.disks[0]).unwrap();
        let stats = merge(c.top(), &opts, None).unwrap();
        let gone: Vec<String> = c.disks[2..]
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(stats.deleted, gone);
        assert!(c.disks[2..].iter().all(|p| !p.exists()));
        verify_merged(&c, 1);
        assert!(std::fs::read(&c.disks[0]).unwrap() == base);
    }
}

#[test]
fn other_children_of_the_ancestor_are_reported() {
    let c = build(Spec {
        format: Format::Vhdx,
        levels: 1,
        size: 8 * MIB,
        fixed_base: false,
        seed: 400,
    });
    // A second child of the base, a child of the merged child, and an unrelated disk.
    let dir = c.dir.path();
    let sibling = dir.join("sibling.avhdx");
    create(&sibling, &CreateOptions::new().parent(&c.disks[0])).unwrap();
    let grandchild = dir.join("grandchild.avhdx");
    create(&grandchild, &CreateOptions::new().parent(&c.disks[1])).unwrap();
    create(&dir.join("other.vhdx"), &CreateOptions::new().size(8 * MIB)).unwrap();
    std::fs::write(dir.join("junk.vhdx"), b"not a disk").unwrap();
    let stats = merge(c.top(), &MergeOptions::default(), None).unwrap();
    let found: Vec<(String, String)> = stats
        .invalidated
        .iter()
        .map(|i| (i.path.clone(), i.parent.clone()))
        .collect();
    let s = |p: &Path| p.display().to_string();
    assert_eq!(
        found,
        vec![
            (s(&grandchild), s(&c.disks[1])),
            (s(&sibling), s(&c.disks[0])),
        ]
    );
    // The sibling no longer matches its parent, as the report said.
    let e = Disk::open(&sibling).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LinkageMismatch);
    let base = Disk::open(&c.disks[0]).unwrap();
    let id = base.image().file().linkage_id();
    assert_eq!(format!("{{{id}}}"), stats.linkage_id_after);
    assert_ne!(stats.linkage_id_before, stats.linkage_id_after);
}

#[test]
fn refusals_change_nothing() {
    let c = build(Spec {
        format: Format::Vhdx,
        levels: 2,
        size: 8 * MIB,
        fixed_base: false,
        seed: 500,
    });
    let bytes = files(&c);
    let refused = |child: &Path, into: Option<&Path>| {
        let opts = MergeOptions {
            into: into.map(Path::to_path_buf),
            ..Default::default()
        };
        merge(child, &opts, None).unwrap_err()
    };
    let e = refused(&c.disks[0], None);
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("not a differencing disk"), "{e}");
    let e = refused(c.top(), Some(c.top()));
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let other = c.dir.path().join("other.vhdx");
    create(&other, &CreateOptions::new().size(8 * MIB)).unwrap();
    let e = refused(c.top(), Some(&other));
    assert!(e.message().contains("not in the child's chain"), "{e}");
    // A merged disk or the ancestor held by a writer.
    for held in [&c.disks[2], &c.disks[1], &c.disks[0]] {
        let w = Disk::open_rw(held, &OpenOptions::default()).unwrap();
        let e = refused(c.top(), Some(&c.disks[0]));
        assert_eq!(e.kind(), ErrorKind::InUse, "{}: {e}", held.display());
        w.close().unwrap();
    }
    std::fs::remove_file(other).unwrap();
    assert!(files(&c) == bytes);
    assert_eq!(std::fs::read_dir(c.dir.path()).unwrap().count(), 3);
}

#[test]
fn flatten_writes_the_chain_into_a_standalone_disk() {
    for (format, seed) in [(Format::Vhdx, 600), (Format::Vhd, 601)] {
        let c = build(Spec {
            format,
            levels: 3,
            size: 16 * MIB,
            fixed_base: false,
            seed,
        });
        let before = &c.before;
        let want = &c.views[3];
        let bytes = files(&c);
        let disk = Disk::open(c.top()).unwrap();
        let raw = c.dir.path().join("want.raw");
        std::fs::write(&raw, want).unwrap();
        for (name, out_format, disk_type, qemu) in [
            ("flat-dyn", None, DiskType::Dynamic, format),
            ("flat-fixed", None, DiskType::Fixed, format),
            (
                "flat-other",
                Some(Format::Vhd),
                DiskType::Dynamic,
                Format::Vhd,
            ),
        ] {
            let ext = if qemu == Format::Vhdx { "vhdx" } else { "vhd" };
            let out = c.dir.path().join(format!("{name}.{ext}"));
            let opts = FlattenOptions {
                format: out_format,
                disk_type,
                ..Default::default()
            };
            let s = flatten(&disk, &out, &opts, None).unwrap();
            assert_eq!(s.format, qemu);
            assert_eq!(s.disk_type, Some(disk_type));
            let flat = Disk::open(&out).unwrap();
            assert_eq!(flat.disk_type(), disk_type);
            let ours = read_all(&flat, 4 << 20);
            assert_same(&ours, want, name);
            assert_same(&at(&ours, &before.0), &before.1, name);
            let fmt = if qemu == Format::Vhdx { "vhdx" } else { "vpc" };
            qemu_compare(&out, fmt, &raw);
            if qemu == Format::Vhdx {
                qemu_check(&out);
            }
            assert_same(
                &pyvhdi_read_all(&out, &[]),
                want,
                &format!("{name}: pyvhdi"),
            );
        }
        // The output's extension must agree with the format written; the chain is no output.
        let e = flatten(
            &disk,
            &c.dir.path().join("x.img"),
            &Default::default(),
            None,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        let opts = FlattenOptions {
            overwrite: true,
            ..Default::default()
        };
        let e = flatten(&disk, &c.disks[1], &opts, None).unwrap_err();
        assert!(e.message().contains("chain"), "{e}");
        assert!(files(&c) == bytes);
    }
}

/// The spec-built fixture chains (`testdata/build_images.py`, independent of our code; with
/// UNMAPPED, UNDEFINED, ZERO and partially present blocks, 4 KiB sectors, a second chunk):
/// the grandchild merged into the child, and into the base, reads what the builder says the
/// grandchild reads; QEMU agrees where it can open the base (512-byte sectors).
#[test]
fn spec_built_chains_merge_to_the_builders_content() {
    use super::chain::{expected_file, fixture};
    for (name, ext) in [
        ("vhdx512", "vhdx"),
        ("vhdx4k", "vhdx"),
        ("vhd", "vhd"),
        ("vhdxbig", "vhdx"),
    ] {
        let src = fixture(name);
        let top = if name == "vhdxbig" {
            "child"
        } else {
            "grandchild"
        };
        let want = expected_file(name, &format!("{top}.{ext}"), false, src.path());
        let mut into = vec!["base"];
        if top == "grandchild" {
            into.push("child");
        }
        for anc in into {
            let dir = tempfile::tempdir().unwrap();
            for e in std::fs::read_dir(src.path()).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == ext) {
                    std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
                }
            }
            let path = |f: &str| dir.path().join(format!("{f}.{ext}"));
            let opts = MergeOptions {
                into: Some(path(anc)),
                ..Default::default()
            };
            let stats = merge(&path(top), &opts, None)
                .unwrap_or_else(|e| panic!("{name}: {top} into {anc}: {e}"));
            assert!(stats.bytes_written > 0, "{name}");
            let what = format!("{name}: {top} merged into {anc}");
            our_check(&path(anc));
            let d = Disk::open(path(anc)).unwrap();
            if name == "vhdxbig" {
                // 4 GiB: the blocks around the chunk boundary, by us and libvhdi.
                let theirs: Vec<(u64, u64)> = vec![(0, 4 * MIB), (4094 * MIB, 6 * MIB)];
                let w = std::fs::File::open(&want).unwrap();
                for (o, n) in theirs {
                    let (mut got, mut exp) = (vec![0u8; n as usize], vec![0u8; n as usize]);
                    d.read_at(&mut got, o).unwrap();
                    std::os::unix::fs::FileExt::read_exact_at(&w, &mut exp, o).unwrap();
                    assert_same(&got, &exp, &what);
                    let theirs = pyvhdi_windows(&path(anc), &[], &[(o, n)]);
                    assert_same(&theirs, &exp, &format!("{what}: pyvhdi"));
                }
            } else {
                assert_same(
                    &read_all(&d, 4 << 20),
                    &std::fs::read(&want).unwrap(),
                    &what,
                );
            }
            if anc == "base" && ext == "vhdx" && d.logical_sector_size() == 512 {
                if name != "vhdxbig" {
                    // (qemu-img compare reads all 4 GiB of the big one: 9 s.)
                    qemu_compare(&path(anc), "vhdx", &want);
                }
                qemu_check(&path(anc));
            }
        }
    }
}

/// The child process of the crash test: merges the child named by the variable into its
/// parent.
#[test]
#[ignore = "run by the merge crash test as a child process"]
fn merge_child() {
    let Ok(path) = std::env::var("VHDX_MERGE_CHILD") else {
        return;
    };
    // Tell the parent the merge starts now, when every write was issued (the commit and
    // close follow), and how long it took.
    println!("GO");
    let t = std::time::Instant::now();
    let wrote = std::cell::Cell::new(false);
    let progress = |done: u64, total: u64| {
        if done == total && !wrote.replace(true) {
            println!("WROTE {}", t.elapsed().as_micros());
        }
    };
    merge(Path::new(&path), &MergeOptions::default(), Some(&progress)).unwrap();
    println!("DONE {}", t.elapsed().as_micros());
}

/// What a crash run counted.
#[derive(Debug, Default)]
struct Tally {
    interrupted: usize,
    dirty: usize,
    resumed: usize,
    already_complete: usize,
}

/// Merges killed at random moments (see the module documentation): `kills` runs over a
/// chain of `format`.
fn killed_merges(format: Format, kills: usize, seed: u64) -> Tally {
    let c = build(Spec {
        format,
        levels: 1,
        size: 16 * MIB,
        fixed_base: false,
        seed,
    });
    let (base, child) = (&c.disks[0], &c.disks[1]);
    let template = c.dir.path().join("base.template");
    std::fs::copy(base, &template).unwrap();
    let child_bytes = std::fs::read(child).unwrap();
    let (old, want) = (&c.views[0], &c.views[1]);
    let start_child =
        || start_test_child("merge::merge_child", "VHDX_MERGE_CHILD", child.as_os_str());
    // How long an uninterrupted merge takes from "GO" to its end, and from its last write
    // to its end (the commit and close, where a VHDX log is written and then marked clean),
    // over three runs. Even kills land anywhere in the first span after "GO", odd ones in
    // the second after "WROTE".
    let runs: Vec<(u64, u64)> = (0..3)
        .map(|_| {
            std::fs::copy(&template, base).unwrap();
            let (mut p, out) = start_child();
            assert!(p.wait().unwrap().success());
            assert_same(&our_read_all(base), want, "uninterrupted merge");
            let field = |key: &str, l: &str| l.strip_prefix(key).map(|v| v.parse::<u64>().unwrap());
            let lines = rest_lines(out);
            let wrote = lines.iter().find_map(|l| field("WROTE ", l)).unwrap();
            let done = lines.iter().find_map(|l| field("DONE ", l)).unwrap();
            (done.max(1000), done - wrote)
        })
        .collect();
    let mut spans: Vec<u64> = runs.iter().map(|r| r.0).collect();
    spans.sort();
    // The shortest run: timings taken while other tests load the machine run long, and
    // kills past the real end of a merge test nothing.
    let (span, close) = (spans[0], runs.iter().map(|r| r.1).max().unwrap().max(500));
    eprintln!(
        "{format:?}: an uninterrupted merge takes {span} µs, its commit and close {close} µs"
    );
    let marker = c.dir.path().join(format!(
        ".{}.vhdx-merge",
        base.file_name().unwrap().to_string_lossy()
    ));
    let mut rng = Rng(seed);
    let mut t = Tally::default();
    for n in 0..kills {
        std::fs::copy(&template, base).unwrap();
        let (mut p, mut out) = start_child();
        let wait = if n % 2 == 0 {
            span
        } else {
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0
                && !line.starts_with("WROTE")
            {
                line.clear();
            }
            close
        };
        std::thread::sleep(Duration::from_micros(rng.below(wait + 1)));
        let _ = p.kill();
        p.wait().unwrap();
        let what = format!("{format:?} kill {n}");
        if !rest_lines(out).iter().any(|l| l.starts_with("DONE")) {
            t.interrupted += 1;
        }
        // The ancestor opens (a dirty log replayed in memory), nothing in it is corrupt, and
        // every sector holds its old content or the chain's.
        let d = Disk::open(base).unwrap_or_else(|e| panic!("{what}: open: {e}"));
        let r = d.check();
        assert!(!r.is_corrupt(), "{what}: vhdx check: {:?}", r.findings);
        let got = read_all(&d, 4 << 20);
        for (i, s) in got.chunks(512).enumerate() {
            let r = i * 512..i * 512 + 512;
            assert!(
                s == &old[r.clone()] || s == &want[r],
                "{what}: sector {i} is neither the old content nor the chain's"
            );
        }
        let dirty = d
            .info(false)
            .unwrap()
            .vhdx
            .as_ref()
            .is_some_and(|v| v.log.state == "dirty");
        drop(d);
        if dirty {
            t.dirty += 1;
            if t.dirty % 4 == 1 {
                let copy = qemu_replayed_copy(base, c.dir.path());
                assert_same(
                    &qemu_raw(&copy, "vhdx"),
                    &got,
                    &format!("{what}: qemu replay"),
                );
                std::fs::remove_file(copy).unwrap();
            }
        }
        // Running the merge again completes it (a merge that had completed before the kill
        // is refused: the child no longer matches the ancestor it was merged into).
        match merge(child, &MergeOptions::default(), None) {
            Ok(s) => t.resumed += usize::from(s.resumed),
            Err(e) if e.kind() == ErrorKind::LinkageMismatch && !marker.exists() => {
                t.already_complete += 1
            }
            Err(e) => panic!("{what}: merging again: {e}"),
        }
        assert!(!marker.exists(), "{what}: the marker remains");
        assert_same(&our_read_all(base), want, &what);
        our_check(base);
        if format == Format::Vhdx {
            qemu_check(base);
        }
        assert!(
            std::fs::read(child).unwrap() == child_bytes,
            "{what}: the child changed"
        );
    }
    eprintln!("{format:?} merges: {t:?}, 0 failures");
    assert!(
        t.interrupted * 4 >= kills,
        "too few kills landed mid-merge: {t:?}"
    );
    t
}

#[test]
fn killed_merges_lose_nothing_and_complete_when_run_again() {
    let kills: usize = std::env::var("VHDX_MERGE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let t = killed_merges(Format::Vhdx, kills, 71);
    assert!(t.resumed > 0, "no kill left a merge to resume: {t:?}");
    killed_merges(Format::Vhd, kills / 4, 72);
}
