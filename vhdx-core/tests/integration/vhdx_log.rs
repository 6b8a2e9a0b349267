//! Dirty VHDX logs: real ones left by QEMU when killed in the middle of block allocations
//! (the committed testdata/dirty-log-*.vhdx.gz fixtures and one made at test time), and
//! crafted multi-entry logs cross-checked against QEMU's own replay.
//!
//! For every image: a read-only open replays the log in memory and leaves the file
//! byte-identical; what it reads equals QEMU's export after `qemu-img check -r all`; and our
//! replay onto a copy gives a clean file that reads the same and that qemu-img accepts.

use super::common::*;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vhdx_core::format::vhdx::Guid;
use vhdx_core::storage::{FileStorage, StorageMut};
use vhdx_core::vhdx::header_write::HeaderWriter;
use vhdx_core::vhdx::log::{encode_entry, LogWrite};
use vhdx_core::vhdx::{headers, replay_log_in_place};
use vhdx_core::{Backend, Disk, Image, OpenOptions, Severity, VirtualDisk};

pub const FIXTURES: [&str; 3] = [
    "dirty-log-a.vhdx.gz",
    "dirty-log-b.vhdx.gz",
    "dirty-log-c.vhdx.gz",
];

/// Decompresses a fixture into `dir`, leaving runs of zeros as holes.
pub fn gunzip(name: &str, dir: &Path) -> PathBuf {
    let src = testdata().join(name);
    let mut gz = flate2::read::GzDecoder::new(
        File::open(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())),
    );
    let out = dir.join(name.trim_end_matches(".gz"));
    let f = File::create(&out).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut off = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let k = gz.read(&mut buf[n..]).unwrap();
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            std::os::unix::fs::FileExt::write_all_at(&f, &buf[..n], off).unwrap();
        }
        off += n as u64;
    }
    f.set_len(off).unwrap();
    out
}

/// Asserts two files hold the same bytes, reading them piecewise.
fn assert_same_file(a: &Path, b: &Path) {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    assert_eq!(
        fa.metadata().unwrap().len(),
        fb.metadata().unwrap().len(),
        "{} vs {}: lengths differ",
        a.display(),
        b.display()
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0usize;
    loop {
        let n = fa.read(&mut x).unwrap();
        if n == 0 {
            break;
        }
        fb.read_exact(&mut y[..n]).unwrap();
        if x[..n] != y[..n] {
            let i = x[..n]
                .iter()
                .zip(&y[..n])
                .position(|(p, q)| p != q)
                .unwrap();
            panic!("{} changed at byte {:#x}", a.display(), off + i);
        }
        off += n;
    }
}

/// Asserts `disk` reads exactly the bytes of the raw file `raw`. The holes of the sparse raw
/// file (as `qemu-img map` lists them) must read as zeros; only its data ranges are read.
fn assert_disk_equals_raw(disk: &dyn VirtualDisk, raw: &Path, what: &str) {
    let f = File::open(raw).unwrap();
    assert_eq!(disk.size(), f.metadata().unwrap().len(), "{what}: sizes");
    let map = qemu_img(&["map", "--output=json", "-f", "raw", s(raw)]);
    let map: serde_json::Value = serde_json::from_slice(&map).unwrap();
    let piece = 4u64 << 20;
    let (mut ours, mut theirs) = (vec![0u8; piece as usize], vec![0u8; piece as usize]);
    let mut covered = 0u64;
    for ext in map.as_array().unwrap() {
        let start = ext["start"].as_u64().unwrap();
        let len = ext["length"].as_u64().unwrap();
        let data = ext["data"].as_bool().unwrap();
        assert_eq!(start, covered, "{what}: map gap");
        covered += len;
        let mut off = start;
        while off < start + len {
            let n = piece.min(start + len - off) as usize;
            disk.read_at(&mut ours[..n], off).unwrap();
            if data {
                std::os::unix::fs::FileExt::read_exact_at(&f, &mut theirs[..n], off).unwrap();
            } else {
                theirs[..n].fill(0);
            }
            if ours[..n] != theirs[..n] {
                assert_same(&ours[..n], &theirs[..n], &format!("{what} at {off:#x}"));
            }
            off += n as u64;
        }
    }
    assert_eq!(covered, disk.size(), "{what}: map coverage");
}

/// Asserts two disks read the same bytes.
fn assert_disks_equal(a: &dyn VirtualDisk, b: &dyn VirtualDisk, what: &str) {
    assert_eq!(a.size(), b.size(), "{what}: sizes");
    let piece = 4 << 20;
    let (mut x, mut y) = (vec![0u8; piece], vec![0u8; piece]);
    let mut off = 0u64;
    while off < a.size() {
        let n = piece.min((a.size() - off) as usize);
        a.read_at(&mut x[..n], off).unwrap();
        b.read_at(&mut y[..n], off).unwrap();
        if x[..n] != y[..n] {
            assert_same(&x[..n], &y[..n], &format!("{what} at {off:#x}"));
        }
        off += n as u64;
    }
}

fn log_info(d: &Disk) -> vhdx_core::ops::info::LogInfo {
    d.info(false).unwrap().vhdx.unwrap().log
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Whether `qemu-img info` refuses the image because its log needs replaying.
fn qemu_sees_dirty_log(p: &Path) -> bool {
    let out = Command::new("qemu-img")
        .args(["info", "-f", "vhdx", s(p)])
        .output()
        .unwrap();
    !out.status.success()
        && String::from_utf8_lossy(&out.stderr).contains("contains a log that needs to be replayed")
}

/// The whole check on one dirty image `orig` (in `dir`). Returns the number of entries.
fn exercise(orig: &Path, dir: &Path) -> u64 {
    let stem = orig.file_stem().unwrap().to_str().unwrap().to_string();
    assert!(
        qemu_sees_dirty_log(orig),
        "{stem}: qemu-img must see a dirty log"
    );
    let pristine = dir.join(format!("{stem}.pristine"));
    std::fs::copy(orig, &pristine).unwrap();

    // (a) Read-only open: the log is replayed in memory and reported.
    let t = Instant::now();
    let disk = Disk::open(orig).unwrap_or_else(|e| panic!("{stem}: {e}"));
    let log = log_info(&disk);
    assert_eq!(log.state, "dirty", "{stem}");
    assert!(log.entries >= 1, "{stem}");
    assert!(log.replayed_in_memory, "{stem}");
    let info = disk.info(false).unwrap();
    assert!(
        info.warnings.iter().any(|f| f.severity == Severity::Warning
            && f.message.contains("replayed in memory")
            && f.message.contains("the file was not modified")),
        "{stem}: {:?}",
        info.warnings
    );
    // The memory-map backend reads the same through its overlay.
    let mapped = Disk::open_with(
        orig,
        &OpenOptions {
            backend: Backend::Mmap,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert_eq!(log_info(&mapped).entries, log.entries);
    assert_disks_equal(&disk, &mapped, &format!("{stem}: file vs mmap backend"));
    drop(mapped);
    eprintln!(
        "{stem}: dirty log, {} entr(y/ies), opened in {:?}",
        log.entries,
        t.elapsed()
    );

    // (b) QEMU's replay (check -r all) and raw export of a copy equal our in-memory read.
    let q = dir.join(format!("{stem}.qemu.vhdx"));
    std::fs::copy(orig, &q).unwrap();
    qemu_img(&["check", "-q", "-r", "all", "-f", "vhdx", s(&q)]);
    assert!(!qemu_sees_dirty_log(&q));
    let raw = dir.join(format!("{stem}.raw"));
    qemu_img(&["convert", "-f", "vhdx", "-O", "raw", s(&q), s(&raw)]);
    assert_disk_equals_raw(&disk, &raw, &format!("{stem}: in-memory replay vs qemu"));
    std::fs::remove_file(&raw).unwrap();

    // (c) Our replay onto another copy: clean log, same bytes, qemu-img accepts it.
    let o = dir.join(format!("{stem}.ours.vhdx"));
    std::fs::copy(orig, &o).unwrap();
    let out = replay_log_in_place(&o).unwrap();
    assert_eq!(out.state, "dirty", "{stem}");
    assert_eq!(out.entries, log.entries, "{stem}");
    let replayed = Disk::open(&o).unwrap();
    let l2 = log_info(&replayed);
    assert_eq!(l2.state, "clean", "{stem}");
    assert!(!l2.replayed_in_memory);
    assert!(replayed.info(false).unwrap().warnings.is_empty());
    let mut hs_findings = Vec::new();
    let hs = headers::read_headers(&FileStorage::open(&o).unwrap(), &mut hs_findings).unwrap();
    assert!(hs.current.log_guid.is_nil());
    assert!(hs.other.is_some_and(|h| h.log_guid.is_nil()));
    assert_disks_equal(
        &disk,
        &replayed,
        &format!("{stem}: in-memory vs on-file replay"),
    );
    assert!(!qemu_sees_dirty_log(&o));
    qemu_img(&["info", "-f", "vhdx", s(&o)]);
    qemu_img(&["check", "-q", "-f", "vhdx", s(&o)]);
    qemu_img(&["compare", "-q", "-f", "vhdx", "-F", "vhdx", s(&q), s(&o)]);
    assert_eq!(
        std::fs::metadata(&q).unwrap().len(),
        std::fs::metadata(&o).unwrap().len(),
        "{stem}: file length after replay (qemu vs ours)"
    );
    drop(disk);

    // The read-only open left the original untouched.
    assert_same_file(orig, &pristine);
    log.entries
}

fn committed(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let p = gunzip(name, dir.path());
    exercise(&p, dir.path());
    eprintln!("{name}: checked in {:?}", t.elapsed());
}

#[test]
fn committed_qemu_dirty_log_a() {
    committed(FIXTURES[0]);
}

#[test]
fn committed_qemu_dirty_log_b_wrapped() {
    committed(FIXTURES[1]);
}

#[test]
fn committed_qemu_dirty_log_c() {
    committed(FIXTURES[2]);
}

/// The qemu-io command line of the fixture script: write i (pattern i mod 255 + 1) lands in
/// its own 1 MiB block, so each one allocates a block and logs a BAT update.
fn qemu_io_args(img: &Path) -> Vec<String> {
    let mut args = vec!["-f".to_string(), "vhdx".to_string()];
    for i in 0u64..2000 {
        args.push("-c".into());
        args.push(format!(
            "write -P {} {} 4k",
            i % 255 + 1,
            i * 1048576 + (i * 37 % 256) * 4096
        ));
    }
    args.push(s(img).to_string());
    args
}

/// Kills qemu-io in the middle of its writes until the image is left with a dirty log.
fn make_fresh_dirty_log(dir: &Path) -> PathBuf {
    let img = dir.join("fresh.vhdx");
    let mut delay_ms = 300u64;
    for attempt in 0..40 {
        let _ = std::fs::remove_file(&img);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "vhdx",
            "-o",
            "block_size=1M,block_state_zero=off",
            s(&img),
            "2G",
        ]);
        let mut child = Command::new("qemu-io")
            .args(qemu_io_args(&img))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-io");
        // Vary the moment a little from try to try.
        std::thread::sleep(Duration::from_millis(delay_ms + (attempt % 5) * 7));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if qemu_sees_dirty_log(&img) {
            eprintln!(
                "fresh dirty log after {} attempt(s), delay {delay_ms} ms",
                attempt + 1
            );
            return img;
        }
        // Too late (qemu-io done) or outside the log window: try again, earlier.
        if finished || attempt % 3 == 2 {
            delay_ms = (delay_ms * 2 / 3).max(40);
        }
    }
    panic!("qemu-io never left a dirty log in 40 attempts");
}

#[test]
fn fresh_qemu_dirty_log() {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let p = make_fresh_dirty_log(dir.path());
    exercise(&p, dir.path());
    eprintln!("fresh dirty log checked in {:?}", t.elapsed());
}

/// A clean QEMU image whose log is then filled by hand with a three-entry sequence that
/// wraps around the end of the log (data sectors, a zero range, growth of the file), with a
/// stale entry of another log GUID next to it. QEMU replays it with `check -r all`; our
/// in-memory replay and our replay onto a copy must agree with it.
#[test]
fn crafted_multi_entry_log_matches_qemu_replay() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("crafted.vhdx");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vhdx",
        "-o",
        "block_size=1M,block_state_zero=off",
        s(&img),
        "64M",
    ]);
    qemu_io(&[
        "-f",
        "vhdx",
        "-c",
        "write -P 0xA1 0 1M",
        "-c",
        "write -P 0xB2 1M 1M",
        "-c",
        "write -P 0xC3 5M 64k",
        s(&img),
    ]);
    // Where blocks 0 and 1 live in the file.
    let (b0, b1, log_off, log_len) = {
        let d = Disk::open(&img).unwrap();
        let Image::Vhdx(v) = d.image() else {
            panic!("not vhdx")
        };
        let off = |b: u64| (v.payload_entry(b).unwrap() >> 20) << 20;
        let h = v.header();
        (
            off(0),
            off(1),
            h.log_offset.get(),
            u64::from(h.log_length.get()),
        )
    };
    let file_len = std::fs::metadata(&img).unwrap().len();
    let f = FileStorage::open_rw(&img).unwrap();
    let hs = headers::read_headers(&f, &mut Vec::new()).unwrap();
    let guid = Guid([0x3C; 16]);
    let mut w = HeaderWriter::new(&hs);
    w.update_both(&f, |h| h.log_guid = guid).unwrap();

    let mut sec1 = [0x5Au8; 4096];
    sec1[..8].copy_from_slice(b"LEADING8");
    sec1[4092..].copy_from_slice(b"TRL4");
    let sec2 = [0x77u8; 4096];
    let grown = file_len + (3 << 20) + 12345; // LastFileOffset, not a MiB multiple
    let tail = (log_len - 2 * 4096) as u32;
    let e1 = encode_entry(
        guid,
        1000,
        tail,
        file_len,
        file_len,
        &[LogWrite::Data {
            file_offset: b0 + 8192,
            sector: &sec1,
        }],
    )
    .unwrap();
    let e2 = encode_entry(
        guid,
        1001,
        tail,
        file_len,
        file_len,
        &[
            LogWrite::Zero {
                file_offset: b0 + 65536,
                length: 3 * 65536,
            },
            LogWrite::Data {
                file_offset: b1 + 4096 * 17,
                sector: &sec2,
            },
        ],
    )
    .unwrap();
    let e3 = encode_entry(
        guid,
        1002,
        tail,
        file_len,
        grown,
        &[
            LogWrite::Data {
                file_offset: b0 + 8192,
                sector: &sec2,
            },
            LogWrite::Data {
                file_offset: b1,
                sector: &sec1,
            },
        ],
    )
    .unwrap();
    let stale = encode_entry(
        Guid([0x99; 16]),
        5000,
        0x40000,
        file_len,
        file_len,
        &[LogWrite::Zero {
            file_offset: b0,
            length: 1 << 20,
        }],
    )
    .unwrap();
    let put = |pos: u64, entry: &[u8]| {
        for (i, sec) in entry.chunks(4096).enumerate() {
            let p = (pos + i as u64 * 4096) % log_len;
            f.write_all_at(sec, log_off + p).unwrap();
        }
    };
    put(u64::from(tail), &e1); // the last two sectors of the log
    put(0, &e2); // wraps: e1 ends exactly at the log end
    put(e2.len() as u64, &e3);
    put(0x40000, &stale);
    f.sync().unwrap();
    drop(f);

    let n = exercise(&img, dir.path());
    assert_eq!(n, 3);
    // The file grew to LastFileOffset rounded up to 1 MiB.
    let o = dir.path().join("crafted.ours.vhdx");
    assert_eq!(
        std::fs::metadata(&o).unwrap().len(),
        grown.next_multiple_of(1 << 20)
    );
    // And the content is what the sequence says, with the newest write winning.
    let d = Disk::open(&o).unwrap();
    let mut b = vec![0u8; 4096];
    d.read_at(&mut b, 8192).unwrap();
    assert_eq!(b, sec2);
    d.read_at(&mut b, 1 << 20).unwrap();
    assert_eq!(b[..], sec1[..]);
    d.read_at(&mut b, 65536 * 2).unwrap();
    assert_eq!(b, vec![0u8; 4096]);
    d.read_at(&mut b, 0).unwrap();
    assert_eq!(b, vec![0xA1u8; 4096]);
    let _ = std::io::stderr().flush();
}
