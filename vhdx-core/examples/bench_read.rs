//! Timing helper for `scripts/bench.sh`: reads a disk through `vhdx_core::Disk` and, in the
//! same process and interleaved pass by pass, the equal raw file with `pread`, so both see the
//! same machine load. Prints one JSON object per run.
//!
//! ```text
//! bench_read seq  IMAGE RAW BUFSIZE REPS   whole-disk sequential reads with BUFSIZE buffers
//! bench_read rand IMAGE RAW COUNT REPS     COUNT random 4 KiB reads per pass
//! bench_read info IMAGE                    Disk::open + info(false), printed as JSON
//! bench_read map IMAGE                     the allocation map (number of extents)
//! bench_read convert IMAGE OUT             raw export (ops::convert::to_raw)
//! ```
//!
//! Buffers are page aligned, like `dd`'s and the C reference's: the kernel copies out of the
//! page cache markedly slower into a misaligned buffer (a plain `Vec` of 1 MiB or more starts
//! 16 bytes into a page), which would otherwise dominate the comparison. Times are reported as
//! the best and the median pass, with `time_ratio`: the median over the alternating
//! (raw, ours) pairs of ours / raw. `BENCH_BACKEND=mmap` opens the disk with the memory-map
//! backend instead of `pread`. The random offsets are the fixed
//! xorshift64 sequence shared with `benches/read.rs` and the C and Python peers of
//! `scripts/bench.sh`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::time::Instant;
use vhdx_core::{Backend, Disk, OpenOptions, VirtualDisk};
#[path = "../benches/support/common.rs"]
mod common;
use common::{random_offsets, Aligned};

fn parse_size(s: &str) -> u64 {
    let (num, mul) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().expect("a size") * mul
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2])
}

/// Median over the alternating pairs of ours / raw time: the steadiest figure on a loaded
/// machine, since both halves of a pair run back to back.
fn pair_ratio(raw: &[f64], ours: &[f64]) -> f64 {
    let r: Vec<f64> = raw.iter().zip(ours).map(|(r, o)| o / r).collect();
    stats(r).1
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!("usage: bench_read seq|rand IMAGE RAW N REPS | info IMAGE | map IMAGE | convert IMAGE OUT");
        ExitCode::from(2)
    };
    if args.len() < 2 {
        return usage();
    }
    let opts = OpenOptions {
        backend: match std::env::var("BENCH_BACKEND").as_deref() {
            Ok("mmap") => Backend::Mmap,
            _ => Backend::File,
        },
        ..OpenOptions::default()
    };
    let disk = match Disk::open_with(&args[1], &opts) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bench_read: {e}");
            return ExitCode::from(1);
        }
    };
    match (args[0].as_str(), args.len()) {
        ("seq", 5) => {
            let raw = File::open(&args[2]).expect("cannot open the raw file");
            let bufsz = parse_size(&args[3]) as usize;
            let reps: usize = args[4].parse().expect("REPS");
            let size = disk.size();
            assert_eq!(raw.metadata().unwrap().len(), size, "raw file size differs");
            let mut abuf = Aligned::new(bufsz);
            let buf = abuf.get();
            let (mut t_raw, mut t_ours) = (Vec::new(), Vec::new());
            for rep in 0..reps {
                // Alternate which side goes first: the second read of a pair runs a little
                // faster (warmer kernel paths), and that must not favour either side.
                for side in [rep % 2, 1 - rep % 2] {
                    let t = Instant::now();
                    let mut off = 0;
                    while off < size {
                        let n = (size - off).min(bufsz as u64) as usize;
                        if side == 0 {
                            raw.read_exact_at(&mut buf[..n], off).unwrap();
                        } else {
                            disk.read_at(&mut buf[..n], off).unwrap();
                        }
                        off += n as u64;
                    }
                    let dt = t.elapsed().as_secs_f64();
                    if side == 0 {
                        t_raw.push(dt)
                    } else {
                        t_ours.push(dt)
                    }
                    std::hint::black_box(&*buf);
                }
            }
            let ratio = pair_ratio(&t_raw, &t_ours);
            let (rb, rm) = stats(t_raw);
            let (ob, om) = stats(t_ours);
            println!(
                "{{\"size\":{size},\"raw_best_s\":{rb},\"raw_median_s\":{rm},\"ours_best_s\":{ob},\"ours_median_s\":{om},\"time_ratio\":{ratio}}}"
            );
        }
        ("rand", 5) => {
            // COUNT reads per pass, cut into chunks of 256 read by raw and ours back to back
            // (which goes first alternates), so a burst of load from elsewhere hits both
            // sides of a pair alike. The figures per side are the best and the median of the
            // per-chunk averages.
            const CHUNK: usize = 256;
            let raw = File::open(&args[2]).expect("cannot open the raw file");
            let count: usize = args[3].parse().expect("COUNT");
            let reps: usize = args[4].parse().expect("REPS");
            let offsets = random_offsets(disk.size(), count);
            let mut abuf = Aligned::new(4096);
            let buf = abuf.get();
            let (mut t_raw, mut t_ours) = (Vec::new(), Vec::new());
            for rep in 0..reps {
                for (k, chunk) in offsets.chunks(CHUNK).enumerate() {
                    let first = (rep + k) % 2;
                    for side in [first, 1 - first] {
                        let t = Instant::now();
                        for &o in chunk {
                            if side == 0 {
                                raw.read_exact_at(buf, o).unwrap();
                            } else {
                                disk.read_at(buf, o).unwrap();
                            }
                        }
                        let dt = t.elapsed().as_secs_f64() * 1e6 / chunk.len() as f64;
                        if side == 0 {
                            t_raw.push(dt)
                        } else {
                            t_ours.push(dt)
                        }
                    }
                    std::hint::black_box(&*buf);
                }
            }
            let ratio = pair_ratio(&t_raw, &t_ours);
            let (rb, rm) = stats(t_raw);
            let (ob, om) = stats(t_ours);
            println!(
                "{{\"raw_best_us\":{rb},\"raw_median_us\":{rm},\"ours_best_us\":{ob},\"ours_median_us\":{om},\"time_ratio\":{ratio}}}"
            );
        }
        ("info", 2) => {
            let info = disk.info(false).expect("info");
            println!("{}", serde_json::to_string(&info).unwrap());
        }
        ("map", 2) => {
            let map = vhdx_core::ops::map::map(&disk).expect("map");
            println!("{{\"extents\":{}}}", map.len());
        }
        ("convert", 3) => {
            let s =
                vhdx_core::ops::convert::to_raw(&disk, args[2].as_ref(), None).expect("convert");
            println!("{}", serde_json::to_string(&s).unwrap());
        }
        _ => return usage(),
    }
    ExitCode::SUCCESS
}
