//! Reader benchmarks, each measured against its page-cache baseline in the same run.
//!
//! * `seq/<image>/<buffer>`: a whole-disk sequential read of a fully allocated 256 MiB disk
//!   through [`vhdx_core::Disk`] with 1 MiB and 4 MiB buffers, for VHDX with 1, 8 and 32 MiB
//!   blocks, dynamic VHD (2 MiB blocks) and fixed VHD; `seq/raw/<buffer>` reads the equal raw
//!   file with `read_exact_at` (pread). Throughput is in bytes of the virtual disk.
//! * `rand4k/<image>`: one 4 KiB read per iteration at the next offset of a fixed
//!   pseudo-random sequence (4 KiB aligned); `rand4k/raw` preads the same offsets from the raw
//!   file. The reported time is the time of one read.
//! * `open_info/16t-1m`: `Disk::open` and `info(false)` of a 16 TiB VHDX with 1 MiB blocks
//!   (a 128 MiB BAT).
//!
//! Images live in `$VHDX_BENCH_DIR` (default `/tmp/vhdx-bench`) and are made with `qemu-img`
//! and `qemu-io` when missing (`scripts/bench.sh` makes the same files). Everything is read
//! warm from the page cache: nothing drops caches. Images that cannot be opened (a format not
//! supported by this build, or missing qemu tools) are skipped with a note on stderr. Each
//! file alone is evicted (`posix_fadvise(DONTNEED)`) and read once before its benchmarks, so
//! all files sit in the page cache in the same layout. Buffers are page aligned.
//!
//! Keep runs short on a shared machine:
//! `cargo bench -p vhdx-core --bench read -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vhdx_core::{Disk, VirtualDisk};
#[path = "support/common.rs"]
mod common;
use common::{random_offsets, Aligned};

const MIB: u64 = 1 << 20;
/// Virtual size of the fully written images.
const FULL_SIZE: u64 = 256 * MIB;
/// Offsets in the random-read sequence (cycled through).
const RANDOM_READS: usize = 1 << 16;

fn bench_dir() -> PathBuf {
    std::env::var_os("VHDX_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/vhdx-bench"))
}

/// One fully allocated test image: file name, qemu format and creation options.
struct FullImage {
    name: &'static str,
    file: &'static str,
    qemu_fmt: &'static str,
    opts: &'static str,
}

const FULL_IMAGES: &[FullImage] = &[
    FullImage {
        name: "vhdx-1m",
        file: "vhdx-1m.vhdx",
        qemu_fmt: "vhdx",
        opts: "block_size=1M",
    },
    FullImage {
        name: "vhdx-8m",
        file: "vhdx-8m.vhdx",
        qemu_fmt: "vhdx",
        opts: "block_size=8M",
    },
    FullImage {
        name: "vhdx-32m",
        file: "vhdx-32m.vhdx",
        qemu_fmt: "vhdx",
        opts: "block_size=32M",
    },
    FullImage {
        name: "vhd-dynamic",
        file: "vhd-dynamic.vhd",
        qemu_fmt: "vpc",
        opts: "subformat=dynamic,force_size=on",
    },
    FullImage {
        name: "vhd-fixed",
        file: "vhd-fixed.vhd",
        qemu_fmt: "vpc",
        opts: "subformat=fixed,force_size=on",
    },
];

fn run(cmd: &mut Command) -> bool {
    match cmd.output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "bench: {:?} failed: {}",
                cmd,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("bench: cannot run {:?}: {e}", cmd);
            false
        }
    }
}

/// Creates `path` as a `size`-byte image of `fmt` and, when `fill` is set, writes the whole
/// disk with the byte 0x5a so every block is allocated. Builds under a temporary name so an
/// interrupted run leaves no half-made image.
fn make_image(path: &Path, fmt: &str, opts: &str, size: &str, fill: bool) -> bool {
    if path.exists() {
        return true;
    }
    let tmp = path.with_extension("part");
    let _ = std::fs::remove_file(&tmp);
    let mut create = Command::new("qemu-img");
    create.args(["create", "-q", "-f", fmt]);
    if !opts.is_empty() {
        create.args(["-o", opts]);
    }
    create.arg(&tmp).arg(size);
    if !run(&mut create) {
        return false;
    }
    if fill
        && !run(Command::new("qemu-io")
            .args(["-f", fmt, "-c", &format!("write -P 0x5a 0 {size}")])
            .arg(&tmp))
    {
        return false;
    }
    std::fs::rename(&tmp, path).is_ok()
}

fn ensure_images(dir: &Path) {
    std::fs::create_dir_all(dir).expect("cannot create the benchmark directory");
    make_image(&dir.join("full.raw"), "raw", "", "256M", true);
    for im in FULL_IMAGES {
        make_image(&dir.join(im.file), im.qemu_fmt, im.opts, "256M", true);
    }
    make_image(
        &dir.join("big-16t.vhdx"),
        "vhdx",
        "block_size=1M",
        "16T",
        false,
    );
}

/// Evicts `path` from the page cache (that file only) and reads it once, so every file is
/// cached in the same read-ahead layout, whatever way qemu-io wrote it (files written block
/// by block sit in small folios and read up to 25 % slower with the same system calls).
fn recache(path: &Path) {
    let Ok(f) = File::open(path) else { return };
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a file descriptor we own; no memory is passed.
        #[allow(unsafe_code)]
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
    let mut buf = vec![0u8; 16 << 20];
    let mut off = 0;
    while let Ok(n) = f.read_at(&mut buf, off) {
        if n == 0 {
            break;
        }
        off += n as u64;
    }
}

fn open(dir: &Path, file: &str) -> Option<Disk> {
    recache(&dir.join(file));
    let path = dir.join(file);
    match Disk::open(&path) {
        Ok(d) if d.size() == FULL_SIZE => Some(d),
        Ok(d) => {
            eprintln!(
                "bench: skipping {}: virtual size {} != {FULL_SIZE}",
                path.display(),
                d.size()
            );
            None
        }
        Err(e) => {
            eprintln!("bench: skipping {}: {e}", path.display());
            None
        }
    }
}

fn seq(c: &mut Criterion) {
    let dir = bench_dir();
    ensure_images(&dir);
    recache(&dir.join("full.raw"));
    let raw = File::open(dir.join("full.raw")).expect("full.raw is missing");
    let disks: Vec<(&str, Disk)> = FULL_IMAGES
        .iter()
        .filter_map(|im| open(&dir, im.file).map(|d| (im.name, d)))
        .collect();

    let mut g = c.benchmark_group("seq");
    g.throughput(Throughput::Bytes(FULL_SIZE));
    g.sample_size(10);
    for bufsz in [MIB as usize, 4 * MIB as usize] {
        let label = format!("{}M", bufsz as u64 / MIB);
        let mut abuf = Aligned::new(bufsz);
        let buf = abuf.get();
        g.bench_with_input(BenchmarkId::new("raw", &label), &bufsz, |b, _| {
            b.iter(|| {
                let mut off = 0;
                while off < FULL_SIZE {
                    raw.read_exact_at(buf, off).unwrap();
                    off += bufsz as u64;
                }
                black_box(&*buf);
            })
        });
        for (name, disk) in &disks {
            g.bench_with_input(BenchmarkId::new(*name, &label), &bufsz, |b, _| {
                b.iter(|| {
                    let mut off = 0;
                    while off < FULL_SIZE {
                        disk.read_at(buf, off).unwrap();
                        off += bufsz as u64;
                    }
                    black_box(&*buf);
                })
            });
        }
    }
    g.finish();
}

fn rand4k(c: &mut Criterion) {
    let dir = bench_dir();
    ensure_images(&dir);
    let offsets = random_offsets(FULL_SIZE, RANDOM_READS);
    let raw = File::open(dir.join("full.raw")).expect("full.raw is missing");
    let disks: Vec<(&str, Disk)> = FULL_IMAGES
        .iter()
        .filter_map(|im| open(&dir, im.file).map(|d| (im.name, d)))
        .collect();

    let mut g = c.benchmark_group("rand4k");
    g.throughput(Throughput::Bytes(4096));
    let mut abuf = Aligned::new(4096);
    let buf = abuf.get();
    let mut i = 0usize;
    g.bench_function("raw", |b| {
        b.iter(|| {
            raw.read_exact_at(buf, offsets[i]).unwrap();
            i = (i + 1) % RANDOM_READS;
            black_box(&*buf);
        })
    });
    for (name, disk) in &disks {
        let mut i = 0usize;
        g.bench_function(*name, |b| {
            b.iter(|| {
                disk.read_at(buf, offsets[i]).unwrap();
                i = (i + 1) % RANDOM_READS;
                black_box(&*buf);
            })
        });
    }
    g.finish();
}

fn open_info(c: &mut Criterion) {
    let dir = bench_dir();
    ensure_images(&dir);
    let path = dir.join("big-16t.vhdx");
    if let Err(e) = Disk::open(&path).and_then(|d| d.info(false)) {
        eprintln!("bench: skipping open_info: {e}");
        return;
    }
    let mut g = c.benchmark_group("open_info");
    g.bench_function("16t-1m", |b| {
        b.iter(|| {
            let d = Disk::open(&path).unwrap();
            black_box(d.info(false).unwrap());
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = seq, rand4k, open_info
}
criterion_main!(benches);
