//! Concurrency (issue #8 item 5): one `Disk` shared by many threads reads exactly what a
//! raw model holds, and a `WritableDisk` written by several threads at once (its write API
//! takes `&self`) ends up holding every write.

use super::common::{read_all, Rng};
use std::sync::Arc;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::{Disk, DiskType, Format, OpenOptions, VirtualDisk};

const MIB: u64 = 1 << 20;
const THREADS: u64 = 6;

fn new_disk(path: &std::path::Path, fmt: Format, parent: Option<&std::path::Path>) {
    let o = match parent {
        Some(p) => CreateOptions::new().parent(p),
        None => CreateOptions::new()
            .size(24 * MIB)
            .disk_type(DiskType::Dynamic)
            .block_size(if fmt == Format::Vhdx {
                MIB as u32
            } else {
                512 << 10
            }),
    };
    create(path, &o.format(fmt)).unwrap();
}

/// Fills scattered ranges of `path` with pseudo-random bytes.
fn scatter(path: &std::path::Path, seed: u64) {
    let w = Disk::open_rw(path, &OpenOptions::default()).unwrap();
    let mut rng = Rng(seed);
    for _ in 0..40 {
        let at = rng.below(w.size() - 300_000);
        let len = 1 + rng.below(200_000) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        w.write_at(&data, at).unwrap();
    }
    w.close().unwrap();
}

#[test]
fn one_disk_read_by_many_threads_matches_the_model() {
    let dir = tempfile::tempdir().unwrap();
    for fmt in [Format::Vhdx, Format::Vhd] {
        let ext = if fmt == Format::Vhdx { "vhdx" } else { "vhd" };
        let base = dir.path().join(format!("base.{ext}"));
        let child = dir.path().join(format!("child.{ext}"));
        new_disk(&base, fmt, None);
        scatter(&base, 1);
        new_disk(&child, fmt, Some(&base));
        scatter(&child, 2);
        let disk = Arc::new(Disk::open(&child).unwrap());
        let model = Arc::new(read_all(&*disk, MIB as usize));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (disk, model) = (disk.clone(), model.clone());
                std::thread::spawn(move || {
                    let mut rng = Rng(100 + t);
                    let size = disk.size();
                    for _ in 0..1500 {
                        let at = rng.below(size);
                        let len = (1 + rng.below(256 << 10)).min(size - at) as usize;
                        let mut buf = vec![0u8; len];
                        disk.read_at(&mut buf, at).unwrap();
                        let want = &model[at as usize..at as usize + len];
                        assert!(
                            buf == want,
                            "{fmt:?} thread {t}: read at {at}+{len} differs"
                        );
                        let _ = disk.block_status(at, size - at).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}

#[test]
fn a_writable_disk_written_by_several_threads_holds_every_write() {
    let dir = tempfile::tempdir().unwrap();
    for fmt in [Format::Vhdx, Format::Vhd] {
        let path = dir.path().join(if fmt == Format::Vhdx {
            "w.vhdx"
        } else {
            "w.vhd"
        });
        new_disk(&path, fmt, None);
        let w = Arc::new(Disk::open_rw(&path, &OpenOptions::default()).unwrap());
        let size = w.size();
        // Thread t owns the 3 KiB stripes s with s % THREADS == t: stripes share sectors and
        // blocks with their neighbours, so writes meet in the same sectors (read-modify-
        // write) and the same new blocks.
        const STRIPE: u64 = 3 << 10;
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    let mut rng = Rng(7 + t);
                    let mut mine = Vec::new();
                    for i in 0..400 {
                        let stripe = rng.below(size / STRIPE / THREADS) * THREADS + t;
                        let at = stripe * STRIPE + rng.below(STRIPE / 2);
                        let len = 1 + rng.below(STRIPE - (at - stripe * STRIPE)) as usize;
                        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                        w.write_at(&data, at).unwrap();
                        let mut back = vec![0u8; len];
                        w.read_at(&mut back, at).unwrap();
                        assert!(back == data, "{fmt:?} thread {t}: read-back at {at}");
                        mine.push((at, data));
                        if i % 100 == 99 {
                            w.flush().unwrap();
                        }
                    }
                    mine
                })
            })
            .collect();
        let mut model = vec![0u8; size as usize];
        let writes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        // Each thread's writes in its own order (stripes never overlap across threads).
        for mine in writes {
            for (at, data) in mine {
                model[at as usize..at as usize + data.len()].copy_from_slice(&data);
            }
        }
        assert!(
            read_all(&*w, MIB as usize) == model,
            "{fmt:?}: content while open"
        );
        w.close().unwrap();
        let d = Disk::open(&path).unwrap();
        assert!(
            read_all(&d, MIB as usize) == model,
            "{fmt:?}: content after close"
        );
        assert!(!d.check().is_corrupt(), "{fmt:?}: {:?}", d.check());
    }
}
