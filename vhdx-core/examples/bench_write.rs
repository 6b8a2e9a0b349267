//! Timing helper for `scripts/bench-write.sh`: the write pattern of `qemu-img bench -w -d 1`
//! through `vhdx_core::WritableDisk`, so both tools do the same work on the same image.
//!
//! ```text
//! bench_write IMAGE COUNT SIZE STEP [OFFSET [FLUSH_EVERY]]
//! ```
//! writes COUNT buffers of SIZE bytes at OFFSET, OFFSET + STEP, … (wrapping to OFFSET at the
//! end of the disk, as qemu-img bench does), calling `flush()` after every FLUSH_EVERY writes
//! when it is given and not 0 (QEMU makes each new block durable before the write returns;
//! this is the same guarantee), then closes the disk (commit and flush), and
//! prints `{"seconds": …, "writes": …}`. The time covers open, writes and close, as the
//! `qemu-img bench` run it is compared with does.

use std::process::ExitCode;
use std::time::Instant;
use vhdx_core::{Disk, OpenOptions, VirtualDisk};

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: bench_write IMAGE COUNT SIZE STEP [OFFSET [FLUSH_EVERY]]");
        return ExitCode::from(2);
    }
    let num = |s: &str| s.parse::<u64>().expect("a number");
    let (count, size, step) = (num(&a[2]), num(&a[3]), num(&a[4]));
    let start = a.get(5).map_or(0, |s| num(s));
    let flush_every = a.get(6).map_or(0, |s| num(s));
    let buf = vec![0xA5u8; size as usize];
    let t0 = Instant::now();
    let d = match Disk::open_rw(&a[1], &OpenOptions::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bench_write: {e}");
            return ExitCode::from(1);
        }
    };
    let mut off = start;
    for i in 1..=count {
        if off + size > d.size() {
            off = start;
        }
        d.write_at(&buf, off).expect("write");
        off += step;
        if flush_every > 0 && i % flush_every == 0 {
            d.flush().expect("flush");
        }
    }
    d.close().expect("close");
    let secs = t0.elapsed().as_secs_f64();
    println!("{{\"seconds\": {secs:.6}, \"writes\": {count}}}");
    ExitCode::SUCCESS
}
