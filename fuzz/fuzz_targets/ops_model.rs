//! Fuzz target: the write paths against a model. An `arbitrary` description picks a small
//! valid disk — VHDX dynamic, fixed or differencing (512 or 4096-byte sectors, 1 or 2 MiB
//! blocks), VHD dynamic, fixed or differencing (512 KiB or 2 MiB blocks), up to 16 MiB —
//! which is created in a folder under /dev/shm, then applies up to 24 operations: write,
//! trim, flush, close and reopen, compact (quick or full, without the guest free-space
//! pass so the model stays exact), resize. The model is a plain byte vector of the virtual
//! disk.
//!
//! After every step the whole disk must read as the model. After a flush, a second,
//! read-only open of the file (which replays a dirty log in memory) must read the same: what
//! a flush made durable is on the file. After every close, `check` must find no corruption.
//! An operation that fails must leave the disk reading as before it.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::write::{resize, CompactOptions};
use vhdx_core::{CompactMode, Disk, DiskType, Format, OpenOptions, VirtualDisk, WritableDisk};

const MIB: u64 = 1 << 20;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    VhdxDynamic,
    VhdxFixed,
    VhdxDifferencing,
    VhdDynamic,
    VhdFixed,
    VhdDifferencing,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// `len % 3 MiB` bytes of a pattern at `at % size`.
    Write {
        at: u32,
        len: u32,
        byte: u8,
    },
    /// Zeros.
    WriteZeros {
        at: u32,
        len: u32,
    },
    Trim {
        at: u32,
        len: u32,
    },
    Flush,
    Reopen,
    Compact {
        full: bool,
    },
    /// To `1 + size_mib % 16` MiB, minus `sectors % 8` sectors.
    Resize {
        size_mib: u8,
        sectors: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    kind: Kind,
    size_mib: u8,
    big_sectors: bool,
    big_blocks: bool,
    ops: Vec<Op>,
}

fn dir() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = PathBuf::from(format!("/dev/shm/vhdx-ops-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("work folder");
        d
    })
}

/// Sector-distinct bytes, so a sector written to the wrong place is seen.
fn pattern(byte: u8, at: u64, len: usize) -> Vec<u8> {
    // Filled a sector at a time: a byte loop would be instrumented and dominate the run.
    let mut v = vec![0u8; len];
    let mut pos = 0;
    while pos < len {
        let abs = at + pos as u64;
        let n = ((512 - abs % 512) as usize).min(len - pos);
        v[pos..pos + n].fill(byte ^ ((abs >> 9) as u8).wrapping_mul(31));
        pos += n;
    }
    v
}

fn read_all(disk: &dyn VirtualDisk) -> Vec<u8> {
    let mut buf = vec![0u8; disk.size() as usize];
    disk.read_at(&mut buf, 0).expect("a valid disk reads");
    buf
}

fn assert_model(disk: &dyn VirtualDisk, model: &[u8], what: &str) {
    assert_eq!(disk.size(), model.len() as u64, "size after {what}");
    let got = read_all(disk);
    if got == model {
        return;
    }
    if let Some(i) = got.iter().zip(model).position(|(a, b)| a != b) {
        panic!(
            "after {what}: byte {i} reads {:#04x}, the model has {:#04x}",
            got[i], model[i]
        );
    }
}

fn check_clean(path: &Path, model: &[u8], what: &str) {
    let disk = Disk::open(path).expect("the closed disk opens");
    let report = disk.check();
    assert!(!report.is_corrupt(), "check after {what}: {report:?}");
    assert_model(&disk, model, &format!("{what} (reopened read-only)"));
}

fn open_rw(path: &Path) -> WritableDisk {
    Disk::open_rw(path, &OpenOptions::default()).expect("the disk opens for writing")
}

/// Creates the disk described by `input` at `path` and returns the model of its content.
fn make(input: &Input, path: &Path) -> Option<Vec<u8>> {
    let vhdx = matches!(
        input.kind,
        Kind::VhdxDynamic | Kind::VhdxFixed | Kind::VhdxDifferencing
    );
    let size = (1 + u64::from(input.size_mib % 16)) * MIB;
    let lss = if vhdx && input.big_sectors { 4096 } else { 512 };
    let block = match (vhdx, input.big_blocks) {
        (true, false) => MIB as u32,
        (true, true) => 2 * MIB as u32,
        (false, false) => 512 << 10,
        (false, true) => 2 * MIB as u32,
    };
    let fmt = if vhdx { Format::Vhdx } else { Format::Vhd };
    let mut base = CreateOptions::new()
        .format(fmt)
        .size(size)
        .logical_sector_size(lss);
    if vhdx || !matches!(input.kind, Kind::VhdFixed) {
        base = base.block_size(block);
    }
    let mut model = vec![0u8; size as usize];
    match input.kind {
        Kind::VhdxDifferencing | Kind::VhdDifferencing => {
            let parent =
                path.with_file_name(format!("parent.{}", if vhdx { "vhdx" } else { "vhd" }));
            create(&parent, &base.clone().disk_type(DiskType::Dynamic)).expect("parent created");
            let p = open_rw(&parent);
            for (at, len, byte) in [(0, 70_000, 0x5a), (size / 2 - 4096, 1 << 20, 0xc3)] {
                let len = len.min((size - at) as usize);
                let data = pattern(byte, at, len);
                p.write_at(&data, at).expect("parent written");
                model[at as usize..at as usize + len].copy_from_slice(&data);
            }
            p.close().expect("parent closed");
            create(
                path,
                &CreateOptions::new()
                    .format(fmt)
                    .block_size(block)
                    .parent(&parent),
            )
            .expect("child created");
        }
        Kind::VhdxFixed | Kind::VhdFixed => {
            create(path, &base.disk_type(DiskType::Fixed)).expect("fixed created")
        }
        _ => create(path, &base.disk_type(DiskType::Dynamic)).expect("dynamic created"),
    }
    Some(model)
}

/// `(offset, length)` inside a disk of `size` bytes from fuzzer numbers.
fn range(size: u64, at: u32, len: u32) -> (u64, u64) {
    let at = u64::from(at) % size;
    let len = (u64::from(len) % (3 * MIB)).min(size - at);
    (at, len)
}

fn run(input: &Input) {
    let d = dir();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    let path = d.join(
        if matches!(
            input.kind,
            Kind::VhdDynamic | Kind::VhdFixed | Kind::VhdDifferencing
        ) {
            "disk.vhd"
        } else {
            "disk.vhdx"
        },
    );
    let Some(mut model) = make(input, &path) else {
        return;
    };
    let mut w = Some(open_rw(&path));
    assert_model(w.as_ref().unwrap(), &model, "create");
    for (i, op) in input.ops.iter().take(24).enumerate() {
        let what = format!("op {i} {op:?}");
        let disk = w.get_or_insert_with(|| open_rw(&path));
        let size = model.len() as u64;
        match *op {
            Op::Write { at, len, byte } => {
                let (at, len) = range(size, at, len);
                let data = pattern(byte, at, len as usize);
                disk.write_at(&data, at).expect("write");
                model[at as usize..(at + len) as usize].copy_from_slice(&data);
            }
            Op::WriteZeros { at, len } => {
                let (at, len) = range(size, at, len);
                disk.write_at(&vec![0u8; len as usize], at)
                    .expect("zero write");
                model[at as usize..(at + len) as usize].fill(0);
            }
            Op::Trim { at, len } => {
                let (at, len) = range(size, at, len);
                disk.trim(at, len).expect("trim");
                model[at as usize..(at + len) as usize].fill(0);
            }
            Op::Flush => {
                disk.flush().expect("flush");
                // What the flush made durable is on the file: a read-only open sees it.
                if let Ok(ro) = Disk::open(&path) {
                    assert_model(&ro, &model, &format!("{what} (read-only open)"));
                }
            }
            Op::Reopen => {
                w.take().expect("open").close().expect("close");
                check_clean(&path, &model, &what);
                continue;
            }
            Op::Compact { full } => {
                let mode = if full {
                    CompactMode::Full
                } else {
                    CompactMode::Quick
                };
                let how = CompactOptions {
                    mode,
                    free_space: false,
                };
                disk.compact(how, None).expect("compact");
            }
            Op::Resize { size_mib, sectors } => {
                w.take().expect("open").close().expect("close");
                let lss = Disk::open(&path).expect("opens").logical_sector_size();
                let new =
                    (1 + u64::from(size_mib % 16)) * MIB - u64::from(sectors % 8) * u64::from(lss);
                // A failed resize must leave the disk as it was (checked just below).
                if resize(&path, new, &OpenOptions::default(), None).is_ok() {
                    // A differencing disk must keep its parent's size, which never changes
                    // here: a resize of it that succeeds changes nothing.
                    let differencing =
                        matches!(input.kind, Kind::VhdxDifferencing | Kind::VhdDifferencing);
                    assert!(
                        !differencing || new == model.len() as u64,
                        "a differencing disk was resized away from its parent's size"
                    );
                    model.resize(new as usize, 0);
                }
                check_clean(&path, &model, &what);
                continue;
            }
        }
        assert_model(w.as_ref().unwrap(), &model, &what);
    }
    if let Some(disk) = w.take() {
        disk.close().expect("final close");
    }
    check_clean(&path, &model, "the final close");
}

fuzz_target!(|input: Input| {
    run(&input);
});
