//! Fault injection (issue #8 item 3): every operation that writes — create, write, trim,
//! compact, merge, convert, resize — driven through every failure point of its run on small
//! images: the Nth write, flush or length change fails with `EIO` (once) or `ENOSPC` (from
//! then on), for every N the operation reaches (counted by a first, fault-free run under
//! [`Faults::count_only`]).
//!
//! After each failure:
//! - the error names the file and carries the host's error (`EIO`/`ENOSPC`), in a message
//!   saying what was being done;
//! - the disk reads exactly as before the operation or exactly as after it (a new file —
//!   create, convert — is absent or complete; no temporary file is left);
//! - `check` finds no corruption, and neither does `qemu-img check` (leaks allowed) where
//!   QEMU opens the file;
//! - the operation run again without faults succeeds and gives the full result.
//!
//! The matrix (operations × failure points exercised) is printed by each test (`--nocapture`)
//! and summarised in SECURITY.md.

use super::common;
use std::path::{Path, PathBuf};
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::ops::convert::{convert, ConvertOptions};
use vhdx_core::ops::merge::{merge, MergeOptions};
use vhdx_core::storage::faulty::{inject, FaultErrno, FaultOp, Faults};
use vhdx_core::write::resize;
use vhdx_core::{CompactMode, Disk, DiskType, Format, OpenOptions, Result};

const MIB: u64 = 1 << 20;

/// One operation under test: `prepare` makes the starting files in a fresh folder and
/// returns the file the operation changes or makes; `run` is the operation.
struct Case {
    name: &'static str,
    prepare: fn(&Path) -> PathBuf,
    run: fn(&Path) -> Result<()>,
    /// Whether `run` makes `target` (create, convert) rather than changing it.
    makes: bool,
    /// What "unchanged or fully updated" means for it.
    judge: Judge,
}

/// How the state after a failure is judged.
#[derive(Clone, Copy, PartialEq)]
enum Judge {
    /// The disk reads exactly as before or exactly as after (a new file: absent or
    /// complete).
    Whole,
    /// Guest writes and trims: every sector reads as before or as after, as on a real
    /// disk (a write that fails may have reached some of its sectors; so may the writes
    /// of the same session that the closing commit makes durable).
    Sectors,
    /// A merge: the child's view never changes (its ancestor may hold some of the child's
    /// ranges already — by design, see `ops::merge` — and its marker file stays for the
    /// re-run), and the re-run completes.
    Merge,
}

fn pattern(byte: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| byte ^ (i / 512) as u8).collect()
}

fn folder() -> tempfile::TempDir {
    // tmpfs where there is one: these tests make thousands of small files.
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

fn new_disk(path: &Path, fmt: Format, ty: DiskType, size: u64) {
    let mut o = CreateOptions::new().format(fmt).size(size).disk_type(ty);
    if ty == DiskType::Dynamic {
        o = o.block_size(if fmt == Format::Vhdx {
            MIB as u32
        } else {
            512 << 10
        });
    }
    create(path, &o).unwrap();
}

/// Writes `pieces` (offset, byte, length) and closes.
fn fill(path: &Path, pieces: &[(u64, u8, usize)]) {
    let w = Disk::open_rw(path, &OpenOptions::default()).unwrap();
    for &(at, b, n) in pieces {
        w.write_at(&pattern(b, n), at).unwrap();
    }
    w.close().unwrap();
}

/// The virtual disk at `path` (with its parents), or `None` when there is no file.
fn content(path: &Path) -> Option<Vec<u8>> {
    if !path.exists() {
        return None;
    }
    let d = Disk::open(path).unwrap_or_else(|e| panic!("{} does not open: {e}", path.display()));
    Some(common::read_all(&d, 4 * MIB as usize))
}

fn ext(fmt: Format) -> &'static str {
    match fmt {
        Format::Vhd => "vhd",
        _ => "vhdx",
    }
}

fn dynamic(dir: &Path, fmt: Format) -> PathBuf {
    let p = dir.join(format!("d.{}", ext(fmt)));
    new_disk(&p, fmt, DiskType::Dynamic, 8 * MIB);
    fill(
        &p,
        &[
            (0, 0x11, 70_000),
            (3 * MIB, 0x22, MIB as usize),
            (5 * MIB + 512, 0x33, 4096),
        ],
    );
    p
}

fn prep_vhdx(dir: &Path) -> PathBuf {
    dynamic(dir, Format::Vhdx)
}

fn prep_vhd(dir: &Path) -> PathBuf {
    dynamic(dir, Format::Vhd)
}

/// A disk whose blocks were written last to first, then the middle ones trimmed: holes
/// for a compaction to fill.
fn fragmented(dir: &Path, fmt: Format) -> PathBuf {
    let p = dir.join(format!("f.{}", ext(fmt)));
    new_disk(&p, fmt, DiskType::Dynamic, 8 * MIB);
    let pieces: Vec<_> = (0..8u64)
        .rev()
        .map(|b| (b * MIB, b as u8 + 1, 4096))
        .collect();
    fill(&p, &pieces);
    let w = Disk::open_rw(&p, &OpenOptions::default()).unwrap();
    w.trim(3 * MIB, 3 * MIB).unwrap();
    w.close().unwrap();
    p
}

fn target(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_stem()
                .is_some_and(|s| s == "d" || s == "f" || s == "c")
        })
        .unwrap()
}

fn rw(dir: &Path, f: impl FnOnce(&vhdx_core::WritableDisk) -> Result<()>) -> Result<()> {
    let w = Disk::open_rw(target(dir), &OpenOptions::default())?;
    f(&w)?;
    w.close()
}

fn run_write(dir: &Path) -> Result<()> {
    // One write into a new block, one over stored data.
    rw(dir, |w| {
        w.write_at(&pattern(0x44, 8192), 6 * MIB + 512)?;
        w.flush()?;
        w.write_at(&pattern(0x55, 4096), 3 * MIB + 4096)
    })
}

fn run_trim(dir: &Path) -> Result<()> {
    rw(dir, |w| w.trim(2 * MIB + 4096, 2 * MIB))
}

fn run_compact(dir: &Path) -> Result<()> {
    rw(dir, |w| w.compact(CompactMode::Full, None).map(|_| ()))
}

fn run_grow(dir: &Path) -> Result<()> {
    resize(&target(dir), 40 * MIB, &OpenOptions::default(), None).map(|_| ())
}

fn run_shrink(dir: &Path) -> Result<()> {
    resize(&target(dir), 6 * MIB, &OpenOptions::default(), None).map(|_| ())
}

fn prep_create(dir: &Path) -> PathBuf {
    dir.join("c.vhdx")
}

fn run_create_vhdx(dir: &Path) -> Result<()> {
    let o = CreateOptions::new().size(8 * MIB).block_size(MIB as u32);
    create(&dir.join("c.vhdx"), &o)
}

fn prep_create_vhd(dir: &Path) -> PathBuf {
    dir.join("c.vhd")
}

fn run_create_vhd(dir: &Path) -> Result<()> {
    let o = CreateOptions::new()
        .size(4 * MIB)
        .disk_type(DiskType::Fixed);
    create(&dir.join("c.vhd"), &o)
}

/// A source `s.vhdx` with data; the target is `c.EXT`, made by the conversion.
fn prep_convert(dir: &Path, out: &str) -> PathBuf {
    let s = dir.join("s.vhdx");
    new_disk(&s, Format::Vhdx, DiskType::Dynamic, 8 * MIB);
    fill(&s, &[(0, 0x11, 70_000), (3 * MIB, 0x22, MIB as usize)]);
    dir.join(out)
}

fn run_convert(dir: &Path, out: &str, fmt: Format) -> Result<()> {
    let src = Disk::open(dir.join("s.vhdx"))?;
    let mut o = ConvertOptions::new(fmt);
    if fmt != Format::Raw {
        o = o.block_size(if fmt == Format::Vhdx {
            MIB as u32
        } else {
            512 << 10
        });
    }
    convert(&src, &dir.join(out), &o, None).map(|_| ())
}

/// `p.vhdx` with data, and its child `c.avhdx` with more; the merge changes the parent
/// (the child keeps reading the same).
fn prep_merge(dir: &Path) -> PathBuf {
    let p = dir.join("p.vhdx");
    new_disk(&p, Format::Vhdx, DiskType::Dynamic, 8 * MIB);
    fill(&p, &[(0, 0x11, 70_000), (4 * MIB, 0x22, 4096)]);
    let c = dir.join("c.avhdx");
    create(&c, &CreateOptions::new().parent(&p).block_size(MIB as u32)).unwrap();
    fill(&c, &[(4096, 0x33, 8192), (6 * MIB, 0x44, 70_000)]);
    p
}

fn run_merge(dir: &Path) -> Result<()> {
    merge(&dir.join("c.avhdx"), &MergeOptions::default(), None).map(|_| ())
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "create vhdx dynamic",
            prepare: prep_create,
            run: run_create_vhdx,
            makes: true,
            judge: Judge::Whole,
        },
        Case {
            name: "create vhd fixed",
            prepare: prep_create_vhd,
            run: run_create_vhd,
            makes: true,
            judge: Judge::Whole,
        },
        Case {
            name: "write vhdx",
            prepare: prep_vhdx,
            run: run_write,
            makes: false,
            judge: Judge::Sectors,
        },
        Case {
            name: "write vhd",
            prepare: prep_vhd,
            run: run_write,
            makes: false,
            judge: Judge::Sectors,
        },
        Case {
            name: "trim vhdx",
            prepare: prep_vhdx,
            run: run_trim,
            makes: false,
            judge: Judge::Sectors,
        },
        Case {
            name: "trim vhd",
            prepare: prep_vhd,
            run: run_trim,
            makes: false,
            judge: Judge::Sectors,
        },
        Case {
            name: "compact vhdx",
            prepare: |d| fragmented(d, Format::Vhdx),
            run: run_compact,
            makes: false,
            judge: Judge::Whole,
        },
        Case {
            name: "compact vhd",
            prepare: |d| fragmented(d, Format::Vhd),
            run: run_compact,
            makes: false,
            judge: Judge::Whole,
        },
        Case {
            name: "merge vhdx",
            prepare: prep_merge,
            run: run_merge,
            makes: false,
            judge: Judge::Merge,
        },
        Case {
            name: "convert vhdx to vhd",
            prepare: |d| prep_convert(d, "c.vhd"),
            run: |d| run_convert(d, "c.vhd", Format::Vhd),
            makes: true,
            judge: Judge::Whole,
        },
        Case {
            name: "convert vhdx to vhdx",
            prepare: |d| prep_convert(d, "c.vhdx"),
            run: |d| run_convert(d, "c.vhdx", Format::Vhdx),
            makes: true,
            judge: Judge::Whole,
        },
        Case {
            name: "convert vhdx to raw",
            prepare: |d| prep_convert(d, "c.raw"),
            run: |d| run_convert(d, "c.raw", Format::Raw),
            makes: true,
            judge: Judge::Whole,
        },
        Case {
            name: "resize vhdx grow",
            prepare: prep_vhdx,
            run: run_grow,
            makes: false,
            judge: Judge::Whole,
        },
        Case {
            name: "resize vhdx shrink",
            prepare: prep_vhdx,
            run: run_shrink,
            makes: false,
            judge: Judge::Whole,
        },
        Case {
            name: "resize vhd grow",
            prepare: prep_vhd,
            run: run_grow,
            makes: false,
            judge: Judge::Whole,
        },
    ]
}

/// `qemu-img check` of `path`, when QEMU is here and opens it: no corruption (leaks are
/// unreferenced space, allowed).
fn qemu_check(path: &Path) {
    let fmt = match path.extension().and_then(|e| e.to_str()) {
        Some("vhdx") | Some("avhdx") => "vhdx",
        _ => return, // QEMU checks no other format we make
    };
    if !common::have_tools(&["qemu-img"]) {
        return;
    }
    let out = std::process::Command::new("qemu-img")
        .args(["check", "-f", fmt, path.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    if text.contains("needs to be replayed") {
        return; // a log awaiting replay: QEMU opens it only to repair it
    }
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 3,
        "qemu-img check of {}: exit {code}: {text}",
        path.display()
    );
}

/// Files in `dir` that an operation left behind besides the ones the case names.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// The child's view of a merge case (linkage not verified: a failed merge has already
/// given the ancestor its new identity), else the target's content.
fn view(case: &Case, dir: &Path, t: &Path) -> Option<Vec<u8>> {
    if case.judge != Judge::Merge {
        return content(t);
    }
    let opts = OpenOptions {
        verify_linkage: false,
        ..OpenOptions::default()
    };
    let d = Disk::open_with(dir.join("c.avhdx"), &opts).unwrap();
    Some(common::read_all(&d, 4 * MIB as usize))
}

/// Whether `now` reads, sector by sector, as `before` or as `after`.
fn sectors_old_or_new(now: &[u8], before: &[u8], after: &[u8]) -> bool {
    now.len() == before.len()
        && now.len() == after.len()
        && now
            .chunks(512)
            .zip(before.chunks(512).zip(after.chunks(512)))
            .all(|(n, (b, a))| n == b || n == a)
}

/// Runs `case` through every failure point; returns the matrix line and the runs.
fn drive(case: &Case) -> (String, usize) {
    // The fault-free run: the result, and how many calls of each kind it makes.
    let clean = folder();
    let t = (case.prepare)(clean.path());
    let before = view(case, clean.path(), &t);
    let counter = Faults::count_only();
    inject(&counter, || (case.run)(clean.path())).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let after = view(case, clean.path(), &t);
    let target_after = content(&t);
    let mut runs = 0;
    let mut points = Vec::new();
    for op in FaultOp::ALL {
        let n = counter.count(op);
        points.push(format!("{op:?} {n}"));
        for at in 1..=n {
            for errno in [FaultErrno::Eio, FaultErrno::Enospc] {
                let faults = match errno {
                    FaultErrno::Eio => Faults::fail_nth(op, at, errno),
                    FaultErrno::Enospc => Faults::fail_from(op, at, errno),
                };
                let dir = folder();
                let t = (case.prepare)(dir.path());
                let what = format!("{}: {op:?} #{at} fails with {errno:?}", case.name);
                let r = inject(&faults, || (case.run)(dir.path()));
                runs += 1;
                let err = r.as_ref().err().map(|e| e.to_string());
                match &r {
                    Err(e) => {
                        let text = e.to_string();
                        assert!(
                            e.path().is_some(),
                            "{what}: the error names no file: {text}"
                        );
                        let os = errno.to_io_error().raw_os_error();
                        assert!(
                            e.os_error() == os || text.contains(&errno.to_io_error().to_string()),
                            "{what}: the error hides the host's error: {text}"
                        );
                    }
                    Ok(()) => assert!(faults.fired(), "{what}: the fault was not reached"),
                }
                let now = view(case, dir.path(), &t);
                let ok = match case.judge {
                    Judge::Whole | Judge::Merge => now == before || now == after,
                    Judge::Sectors => match (&now, &before, &after) {
                        (Some(n), Some(b), Some(a)) => sectors_old_or_new(n, b, a),
                        _ => false,
                    },
                };
                assert!(
                    ok,
                    "{what}: the disk reads neither as before nor as after ({err:?})"
                );
                let left = leftovers(dir.path());
                assert!(
                    left.is_empty() || case.judge == Judge::Merge,
                    "{what}: left {left:?}"
                );
                if t.exists() {
                    let d = Disk::open_with(
                        &t,
                        &OpenOptions {
                            verify_linkage: false,
                            ..OpenOptions::default()
                        },
                    )
                    .unwrap();
                    let report = d.check();
                    assert!(!report.is_corrupt(), "{what}: check: {report:?}");
                    drop(d);
                    qemu_check(&t);
                }
                // Running it again finishes the work.
                if content(&t) != target_after {
                    if case.makes && t.exists() {
                        std::fs::remove_file(&t).unwrap();
                    }
                    if case.judge != Judge::Sectors {
                        (case.run)(dir.path())
                            .unwrap_or_else(|e| panic!("{what}: the rerun fails: {e}"));
                        assert!(
                            content(&t) == target_after,
                            "{what}: the rerun gives another result"
                        );
                    }
                }
            }
        }
    }
    let matrix = format!("{}: {}", case.name, points.join(", "));
    println!("{matrix} — {runs} runs");
    (matrix, runs)
}

fn drive_named(prefix: &str) {
    let mut total = 0;
    for case in cases().iter().filter(|c| c.name.starts_with(prefix)) {
        total += drive(case).1;
    }
    assert!(total > 0, "no case named {prefix}");
}

#[test]
fn faults_create() {
    drive_named("create");
}

#[test]
fn faults_write() {
    drive_named("write");
}

#[test]
fn faults_trim() {
    drive_named("trim");
}

#[test]
fn faults_compact() {
    drive_named("compact");
}

#[test]
fn faults_merge() {
    drive_named("merge");
}

#[test]
fn faults_convert() {
    drive_named("convert");
}

#[test]
fn faults_resize() {
    drive_named("resize");
}
