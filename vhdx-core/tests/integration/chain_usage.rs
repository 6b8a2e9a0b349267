//! Snapshot-aware reporting (issue #4 item 4): `Info::chain_usage`, where each byte of a
//! differencing disk is read from, checked against independent sources:
//! - the spec-built chains of `testdata/chain`: `build_images.py usage` derives the bytes of
//!   every chain depth from its own block specification, sharing no code with our reader;
//! - a parent made by qemu (`qemu-io` writes) under a child we create and write: the
//!   parent's allocation comes from dissect.hypervisor's BAT (VHDX; qemu's VHDX driver maps
//!   every byte as data) or from `qemu-img map` (VHD), the child's from the ranges written.

use super::chain::{builder, fixture};
use super::common::*;
use std::path::Path;
use std::process::Command;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::disk::extents;
use vhdx_core::ops::info::ChainUsage;
use vhdx_core::{Disk, Extent, OpenOptions, VirtualDisk};

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;

/// The usage `info` reports for `path` (default scan policy), which must be present.
fn usage_of(path: &Path) -> ChainUsage {
    let info = Disk::open(path).unwrap().info(false).unwrap();
    assert_eq!(info.chain_usage_note, None, "{}", path.display());
    info.chain_usage
        .unwrap_or_else(|| panic!("{}: no chain usage", path.display()))
}

/// The invariants of every report: levels tile the virtual disk, totals are their sums, the
/// note names the parents' share and how to reclaim it.
fn assert_consistent(u: &ChainUsage, size: u64, what: &str) {
    let data: u64 = u.levels.iter().map(|l| l.data_bytes).sum();
    let zero: u64 = u.levels.iter().map(|l| l.zero_bytes).sum();
    assert_eq!(
        data + zero + u.unallocated_bytes,
        size,
        "{what}: bytes tile the disk"
    );
    assert_eq!(u.zero_bytes, zero, "{what}");
    let parents: u64 = u.levels[1..].iter().map(|l| l.data_bytes).sum();
    assert_eq!(u.parent_data_bytes, parents, "{what}");
    for (i, l) in u.levels.iter().enumerate() {
        assert_eq!(l.depth as usize, i, "{what}");
    }
    if parents > 0 {
        assert!(
            u.note.contains(&format!("({parents} bytes)")) && u.note.contains("only merging"),
            "{what}: {}",
            u.note
        );
    }
}

/// A disk that answers only `block_status`, so `visit_extents` takes the trait's default
/// path (one `block_status` call per extent): the reference for the chain's own walk.
struct StatusOnly<'a>(&'a Disk);

impl VirtualDisk for StatusOnly<'_> {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn logical_sector_size(&self) -> u32 {
        self.0.logical_sector_size()
    }
    fn physical_sector_size(&self) -> u32 {
        self.0.physical_sector_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> vhdx_core::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn block_status(&self, offset: u64, length: u64) -> vhdx_core::Result<Extent> {
        self.0.block_status(offset, length)
    }
}

#[test]
fn chain_usage_matches_the_builder() {
    for (name, ext) in [
        ("vhdx512", "vhdx"),
        ("vhdx4k", "vhdx"),
        ("vhdxbig", "vhdx"),
        ("vhd", "vhd"),
    ] {
        let out = run(Command::new("python3").arg(builder()).args(["usage", name]));
        let expect: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let dir = fixture(name);
        let base = dir.path().join(format!("base.{ext}"));
        let info = Disk::open(&base).unwrap().info(false).unwrap();
        assert!(info.chain_usage.is_none() && info.chain_usage_note.is_none());
        for file in ["child", "grandchild"] {
            let fname = format!("{file}.{ext}");
            let path = dir.path().join(&fname);
            if !path.exists() {
                continue;
            }
            let what = format!("{name}/{fname}");
            let u = usage_of(&path);
            let want = &expect[&fname];
            let levels = want["levels"].as_array().unwrap();
            assert_eq!(u.levels.len(), levels.len(), "{what}");
            let names = ["grandchild", "child", "base"];
            let names = &names[names.len() - levels.len()..];
            for ((l, w), n) in u.levels.iter().zip(levels).zip(names) {
                assert_eq!(l.data_bytes, w["data_bytes"], "{what} depth {}", l.depth);
                assert_eq!(l.zero_bytes, w["zero_bytes"], "{what} depth {}", l.depth);
                assert!(
                    l.path.ends_with(&format!("{n}.{ext}")),
                    "{what}: {}",
                    l.path
                );
            }
            assert_eq!(u.unallocated_bytes, want["unallocated_bytes"], "{what}");
            let disk = Disk::open(&path).unwrap();
            assert_consistent(&u, disk.size(), &what);
            // The chain's one-pass walk gives the extents block_status gives one by one.
            let reference = extents(&StatusOnly(&disk)).unwrap();
            assert_eq!(extents(&disk).unwrap(), reference, "{what}");
        }
    }
}

/// Who answers each sector in the qemu/our-made chains.
#[derive(Clone, Copy, PartialEq)]
enum Owner {
    Nobody,
    ParentData,
    ParentZero,
    Child,
}

/// Marks `[off, off + len)` (sector-aligned) as `owner`.
fn mark(map: &mut [Owner], off: u64, len: u64, owner: Owner) {
    map[(off / SECTOR) as usize..((off + len) / SECTOR) as usize].fill(owner);
}

fn bytes_of(map: &[Owner], owner: Owner) -> u64 {
    map.iter().filter(|&&o| o == owner).count() as u64 * SECTOR
}

/// The parent's allocation per sector, from an oracle that is not our reader.
fn parent_owners(parent: &Path, fmt: &str, size: u64) -> Vec<Owner> {
    let mut map = vec![Owner::Nobody; (size / SECTOR) as usize];
    if fmt == "vhdx" {
        // dissect.hypervisor's own BAT parser: one payload state per block (MS-VHDX 2.5.1).
        let script = "import sys, json\nfrom dissect.hypervisor.disk import vhdx\n\
             d = vhdx.VHDX(open(sys.argv[1], 'rb'))\n\
             n = -(-d.size // d.block_size)\n\
             print(json.dumps([d.block_size, [int(d.bat.pb(i).state) for i in range(n)]]))";
        let out = run(Command::new(oracle_python())
            .arg("-c")
            .arg(script)
            .arg(parent));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let bs = v[0].as_u64().unwrap();
        for (i, state) in v[1].as_array().unwrap().iter().enumerate() {
            let off = i as u64 * bs;
            let len = bs.min(size - off);
            let owner = match state.as_u64().unwrap() {
                0 => Owner::Nobody,
                1..=3 => Owner::ParentZero,
                6 => Owner::ParentData,
                s => panic!("block {i}: state {s} in a dynamic VHDX"),
            };
            mark(&mut map, off, len, owner);
        }
    } else {
        let out = qemu_img(&["map", "--output=json", "-f", fmt, parent.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for e in v.as_array().unwrap() {
            if e["data"] == true {
                let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
                mark(&mut map, start, len, Owner::ParentData);
            }
        }
    }
    map
}

#[test]
fn chain_usage_of_a_qemu_parent_and_our_child() {
    for (fmt, ext, opts, size) in [
        ("vhdx", "vhdx", "subformat=dynamic,block_size=1M", "24M"),
        ("vpc", "vhd", "subformat=dynamic,force_size=on", "20M"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let parent = make_qemu_image(dir.path(), &format!("base.{ext}"), fmt, opts, size, 7);
        let child = dir.path().join(format!("child.{ext}"));
        create(&child, &CreateOptions::new().parent(&parent)).unwrap();
        let size = qemu_virtual_size(&parent, fmt);
        let mut map = parent_owners(&parent, fmt, size);
        // Sector-aligned, non-zero: a block edge crossed, a whole 2 MiB block, the disk's end.
        let writes = [
            (0, 4096),
            (MIB + SECTOR, 7 * SECTOR),
            (2 * MIB - 4096, 8192),
            (6 * MIB, 2 * MIB),
            (10 * MIB + 100 * SECTOR, 64 << 10),
            (size - MIB, MIB),
        ];
        let rw = Disk::open_rw(&child, &OpenOptions::default()).unwrap();
        for &(off, len) in &writes {
            rw.write_at(&vec![0xa5; len as usize], off).unwrap();
            mark(&mut map, off, len, Owner::Child);
        }
        rw.close().unwrap();

        let u = usage_of(&child);
        assert_eq!(u.levels.len(), 2, "{fmt}");
        assert_eq!(
            u.levels[0].data_bytes,
            bytes_of(&map, Owner::Child),
            "{fmt}"
        );
        assert_eq!(u.levels[0].zero_bytes, 0, "{fmt}");
        assert_eq!(
            u.levels[1].data_bytes,
            bytes_of(&map, Owner::ParentData),
            "{fmt}"
        );
        assert_eq!(
            u.levels[1].zero_bytes,
            bytes_of(&map, Owner::ParentZero),
            "{fmt}"
        );
        assert_eq!(u.unallocated_bytes, bytes_of(&map, Owner::Nobody), "{fmt}");
        assert!(
            u.parent_data_bytes > 0,
            "{fmt}: the qemu writes are in the parent"
        );
        assert_consistent(&u, size, fmt);
    }
}

/// The walk is bounded like the block statistics (the chain's block tables together), and a
/// chain that is not complete gives a note instead.
#[test]
fn chain_usage_is_bounded_and_needs_the_whole_chain() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("base.vhdx");
    let child = dir.path().join("child.vhdx");
    // 1.5 TiB in 2 MiB blocks: about 786,000 BAT entries in each file, within the default
    // limit of 2^20 one by one, over it together.
    let size = 3 << 39;
    create(
        &parent,
        &CreateOptions::new().size(size).block_size(2 << 20),
    )
    .unwrap();
    create(&child, &CreateOptions::new().parent(&parent)).unwrap();
    let disk = Disk::open(&child).unwrap();
    let info = disk.info(false).unwrap();
    assert!(
        info.block_stats.is_some(),
        "the child alone is within the limit"
    );
    assert!(info.chain_usage.is_none());
    let note = info.chain_usage_note.unwrap();
    assert!(
        note.contains("--scan") && note.contains("scan=True"),
        "{note}"
    );
    let u = disk.info(true).unwrap().chain_usage.unwrap();
    assert_eq!(u.unallocated_bytes, size);
    assert_consistent(&u, size, "empty chain");
    assert!(u.note.starts_with("no byte"), "{}", u.note);

    std::fs::remove_file(&parent).unwrap();
    let opts = OpenOptions {
        require_parent: false,
        ..Default::default()
    };
    let info = Disk::open_with(&child, &opts).unwrap().info(true).unwrap();
    assert!(info.chain_usage.is_none());
    let note = info.chain_usage_note.unwrap();
    assert!(note.contains("--parent"), "{note}");
}
