//! Crash safety (issue #3 item 5): a writer process doing random writes with periodic
//! `flush()` is SIGKILLed at random moments. After every kill:
//! - reopening for writing replays the log (VHDX) and closing leaves a clean file;
//! - `vhdx check` finds nothing, and `qemu-img check` finds no error or leak (VHDX);
//! - every write acknowledged by `flush()` reads back, and every other byte holds either its
//!   value at the last flush or a value some later write put there.
//!
//! While the log is dirty, QEMU must replay our log to the same content as our own in-memory
//! replay of the untouched original (`qemu-img check -r all` on a copy).
//!
//! The suite runs [`KILLS`] kills; `VHDX_CRASH_KILLS=3000 cargo test --release -p vhdx-core
//! --test integration crash:: -- --nocapture` (scripts/crash.sh) runs the long version.
//! The writer is this test binary itself, re-run with `VHDX_CRASH_CHILD` set.

use super::common::*;
use super::write::{our_check, qemu_check};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::{Disk, Format, OpenOptions, VirtualDisk};

/// Kills in the normal suite (per format: VHDX gets two thirds).
const KILLS: usize = 300;
/// Virtual size of the disks under test.
const SIZE: u64 = 48 << 20;
/// Writes between flushes in the writer.
const FLUSH_EVERY: u64 = 5;

/// Write `i` of the sequence `seed`: offset, length and fill byte (0 for a zero write).
fn nth_write(seed: u64, i: u64) -> (u64, u64, u8) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (i + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
        | 1);
    for _ in 0..4 {
        rng.next();
    }
    let len = match rng.below(4) {
        0 => 1 + rng.below(1024),
        1 => 1 + rng.below(64 << 10),
        _ => 1 + rng.below(1 << 20),
    };
    let off = rng.below(SIZE - len);
    let fill = if rng.below(6) == 0 {
        0
    } else {
        (i % 255 + 1) as u8
    };
    (off, len, fill)
}

/// The writer: random writes forever, reporting `S i` before write `i` and `F i` once a
/// flush after write `i` has returned.
#[test]
#[ignore = "run by the crash tests as a child process"]
fn writer_child() {
    let Ok(spec) = std::env::var("VHDX_CRASH_CHILD") else {
        return;
    };
    let (path, seed) = spec.split_once('|').unwrap();
    let seed: u64 = seed.parse().unwrap();
    let d = Disk::open_rw(path, &OpenOptions::default()).unwrap();
    let out = std::io::stdout();
    let mut out = out.lock();
    for i in 0.. {
        let (off, len, fill) = nth_write(seed, i);
        writeln!(out, "S {i}").unwrap();
        out.flush().unwrap();
        d.write_at(&vec![fill; len as usize], off).unwrap();
        if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
            d.flush().unwrap();
            writeln!(out, "F {i}").unwrap();
            out.flush().unwrap();
        }
    }
}

/// Runs the writer on `path` with `seed`, kills it after `delay`; returns (last write
/// started, last write acknowledged by a flush).
fn run_and_kill(path: &Path, seed: u64, delay: Duration) -> (Option<u64>, Option<u64>) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash::writer_child",
            "--ignored",
            "--nocapture",
            "-q",
        ])
        .env("VHDX_CRASH_CHILD", format!("{}|{seed}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let (mut started, mut flushed) = (None, None);
    for line in out.stdout.lines() {
        let line = line.unwrap();
        if let Some(i) = line.strip_prefix("S ") {
            started = Some(i.parse().unwrap());
        } else if let Some(i) = line.strip_prefix("F ") {
            flushed = Some(i.parse().unwrap());
        }
    }
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "the writer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (started, flushed)
}

/// Checks `got` against `base` with the acknowledged writes applied; bytes that differ
/// must carry the value of an unacknowledged write covering them.
fn verify(
    got: &[u8],
    base: &mut [u8],
    seed: u64,
    started: Option<u64>,
    flushed: Option<u64>,
    what: &str,
) {
    let acked = flushed.map_or(0, |f| f + 1);
    for i in 0..acked {
        let (off, len, fill) = nth_write(seed, i);
        base[off as usize..(off + len) as usize].fill(fill);
    }
    let pending: Vec<_> = (acked..=started.unwrap_or(0).max(acked))
        .map(|i| nth_write(seed, i))
        .collect();
    if let Some(b) = got.iter().zip(base.iter()).position(|(a, b)| a != b) {
        // Slow path only when something differs.
        for (k, (&g, &w)) in got.iter().zip(base.iter()).enumerate().skip(b) {
            if g == w {
                continue;
            }
            let k64 = k as u64;
            let explained = pending
                .iter()
                .any(|&(o, l, f)| k64 >= o && k64 < o + l && f == g);
            assert!(
                explained,
                "{what}: byte {k:#x} reads {g:#04x}, expected {w:#04x} (acknowledged through write {flushed:?}, started {started:?})"
            );
        }
    }
    base.copy_from_slice(got);
}

/// Our read-only view (a dirty log replayed in memory) of `path`, whole.
fn read_whole(path: &Path) -> Vec<u8> {
    let d = Disk::open(path).unwrap();
    read_all(&d, 4 << 20)
}

fn fresh(dir: &Path, fmt: Format, n: usize) -> PathBuf {
    let p = dir.join(format!(
        "crash{n}.{}",
        if fmt == Format::Vhdx { "vhdx" } else { "vhd" }
    ));
    let mut o = CreateOptions::new().size(SIZE).format(fmt);
    if fmt == Format::Vhdx {
        o = o.block_size(1 << 20);
    }
    create(&p, &o).unwrap();
    p
}

struct Tally {
    kills: usize,
    dirty: usize,
    qemu_replays: usize,
    acknowledged: u64,
}

fn crash_loop(fmt: Format, kills: usize, seed0: u64) -> Tally {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed0);
    let mut t = Tally {
        kills: 0,
        dirty: 0,
        qemu_replays: 0,
        acknowledged: 0,
    };
    let mut image = fresh(dir.path(), fmt, 0);
    let mut base = vec![0u8; SIZE as usize];
    for n in 0..kills {
        if n % 12 == 11 {
            std::fs::remove_file(&image).unwrap();
            image = fresh(dir.path(), fmt, n);
            base.fill(0);
        }
        let seed = seed0 * 100_000 + n as u64;
        let delay = Duration::from_millis(3 + rng.below(60));
        let (started, flushed) = run_and_kill(&image, seed, delay);
        t.kills += 1;
        t.acknowledged += flushed.map_or(0, |f| f + 1);
        let what = format!("{fmt:?} kill {n} (seed {seed}, after {delay:?})");
        // What a read-only opener sees (log replayed in memory, file untouched).
        let before = std::fs::read(&image).unwrap();
        let seen = read_whole(&image);
        assert!(
            std::fs::read(&image).unwrap() == before,
            "{what}: read-only open wrote"
        );
        if fmt == Format::Vhdx {
            let info = Disk::open(&image).unwrap().info(false).unwrap();
            let dirty = info.vhdx.unwrap().log.state == "dirty";
            if dirty {
                t.dirty += 1;
                if t.dirty % 4 == 1 {
                    // QEMU replays our log to the same content.
                    let copy = qemu_replayed_copy(&image, dir.path());
                    assert_same(
                        &qemu_raw(&copy, "vhdx"),
                        &seen,
                        &format!("{what}: qemu replay"),
                    );
                    t.qemu_replays += 1;
                }
            }
        }
        // Reopening for writing replays the log onto the file; closing leaves it clean.
        Disk::open_rw(&image, &OpenOptions::default())
            .unwrap_or_else(|e| panic!("{what}: reopen: {e}"))
            .close()
            .unwrap();
        let after = read_whole(&image);
        assert_same(
            &after,
            &seen,
            &format!("{what}: replayed file vs in-memory replay"),
        );
        our_check(&image);
        if fmt == Format::Vhdx {
            qemu_check(&image);
        }
        verify(&after, &mut base, seed, started, flushed, &what);
    }
    t
}

fn kills() -> usize {
    std::env::var("VHDX_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KILLS)
}

#[test]
fn killed_vhdx_writers_lose_nothing_acknowledged() {
    let n = kills() * 2 / 3;
    let t = crash_loop(Format::Vhdx, n, 1);
    eprintln!(
        "VHDX: {} kills, {} with a dirty log, {} replayed by qemu, {} acknowledged writes checked, 0 failures",
        t.kills, t.dirty, t.qemu_replays, t.acknowledged
    );
    // Timing decides how many kills land after the first commit (24-38 % in runs so far):
    // this bound only makes sure the dirty-log path is exercised.
    assert!(
        t.dirty * 10 >= t.kills,
        "too few kills hit a dirty log: {}",
        t.dirty
    );
    assert!(t.qemu_replays > 0);
}

#[test]
fn killed_vhd_writers_lose_nothing_acknowledged() {
    let n = kills() - kills() * 2 / 3;
    let t = crash_loop(Format::Vhd, n, 2);
    eprintln!(
        "VHD: {} kills, {} acknowledged writes checked, 0 failures",
        t.kills, t.acknowledged
    );
    assert!(t.acknowledged > 0);
}

/// The writer takes the lock: a second writer — ours or qemu-io — is refused while it runs.
#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = fresh(dir.path(), Format::Vhdx, 0);
    let first = Disk::open_rw(&p, &OpenOptions::default()).unwrap();
    let e = Disk::open_rw(&p, &OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind(), vhdx_core::ErrorKind::InUse, "{e}");
    assert!(e.to_string().contains("in use"), "{e}");
    let q = Command::new("qemu-io")
        .args(["-f", "vhdx", "-c", "write 0 4k"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!q.status.success(), "qemu-io wrote while we held the disk");
    first.write_at(&[1; 4096], 0).unwrap();
    first.close().unwrap();
    // Closed: qemu may write now.
    qemu_io(&["-f", "vhdx", "-c", "write -P 3 0 4k", p.to_str().unwrap()]);
    // And while qemu holds it, we are refused.
    let mut hold = super::locking::qemu_holding(&p, false);
    let e = Disk::open_rw(&p, &OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind(), vhdx_core::ErrorKind::InUse, "{e}");
    hold.kill().unwrap();
    hold.wait().unwrap();
    let mut b = [0u8; 4096];
    Disk::open(&p).unwrap().read_at(&mut b, 0).unwrap();
    assert_eq!(b, [3; 4096]);
}

/// While a child is open for writing, its parent cannot be written — by us or by QEMU — and
/// a parent that is being written cannot have a child opened for writing.
#[test]
fn parents_are_locked_while_a_child_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let parent = make_qemu_image(dir.path(), "p.vhdx", "vhdx", "block_size=1M", "16M", 4);
    let child = dir.path().join("c.avhdx");
    create(&child, &CreateOptions::new().parent(&parent)).unwrap();
    let c = Disk::open_rw(&child, &OpenOptions::default()).unwrap();
    let e = Disk::open_rw(&parent, &OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind(), vhdx_core::ErrorKind::InUse, "{e}");
    let q = Command::new("qemu-io")
        .args(["-f", "vhdx", "-c", "write -P 0xcd 0 512"])
        .arg(&parent)
        .output()
        .unwrap();
    assert!(
        !q.status.success(),
        "qemu-io wrote the parent of an open child"
    );
    // Readers are welcome.
    Disk::open(&parent).unwrap();
    c.write_at(&[5; 512], 0).unwrap();
    c.close().unwrap();

    // Closed: the parent is free again (opened and closed without a write, so the child
    // stays linked to it).
    Disk::open_rw(&parent, &OpenOptions::default())
        .unwrap()
        .close()
        .unwrap();
    // The other way round: a parent held by a writer blocks a writable child.
    let mut hold = super::locking::qemu_holding(&parent, false);
    let e = Disk::open_rw(&child, &OpenOptions::default()).unwrap_err();
    assert_eq!(e.kind(), vhdx_core::ErrorKind::InUse, "{e}");
    assert_eq!(e.path(), Some(parent.as_path()), "{e}");
    hold.kill().unwrap();
    hold.wait().unwrap();
}
