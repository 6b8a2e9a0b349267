//! Corrupt every field of every structure in turn on small images: each mutation must give a
//! typed error that names the structure and offset, or open and read without panicking.
//! Checksummed structures are mutated twice: once as is (the checksum catches it) and once
//! with the checksum recomputed, so the parser meets semantically wrong values.

use super::common::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use vhdx_core::storage::{MemStorage, Overlay, Storage};
use vhdx_core::{Disk, ErrorKind, VirtualDisk};

fn gunzip(path: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// How to fix the checksum of a structure after a mutation.
#[derive(Clone, Copy)]
enum Sum {
    None,
    /// CRC-32C over `len` bytes at `start`, stored LE at `start + 4`.
    Crc32c {
        start: u64,
        len: usize,
    },
    /// VHD one's-complement byte sum over `len` bytes at `start`, stored BE at `start + field`.
    Vhd {
        start: u64,
        len: usize,
        field: usize,
    },
}

struct Field {
    name: &'static str,
    start: u64,
    len: u64,
    sum: Sum,
}

fn fix_sum(img: &mut [u8], sum: Sum) {
    match sum {
        Sum::None => {}
        Sum::Crc32c { start, len } => {
            let s = start as usize;
            img[s + 4..s + 8].fill(0);
            let c = crc32c::crc32c(&img[s..s + len]);
            img[s + 4..s + 8].copy_from_slice(&c.to_le_bytes());
        }
        Sum::Vhd { start, len, field } => {
            let s = start as usize;
            img[s + field..s + field + 4].fill(0);
            let total: u32 = img[s..s + len]
                .iter()
                .fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
            img[s + field..s + field + 4].copy_from_slice(&(!total).to_be_bytes());
        }
    }
}

/// Opens the mutant, asks everything of it, and classifies the outcome.
fn exercise(storage: Arc<dyn Storage>) -> Result<(), ErrorKind> {
    let disk = Disk::from_storage(storage, "mutant").map_err(|e| {
        if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Unsupported) {
            assert!(
                e.structure_name().is_some(),
                "error without a structure: {e}"
            );
            assert!(e.file_offset().is_some(), "error without an offset: {e}");
        }
        e.kind()
    })?;
    let _ = disk.info(true);
    let _ = disk.check();
    let size = disk.size().min(64 << 20);
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        if let Err(e) = disk.read_at(&mut buf[..n], off) {
            return Err(e.kind());
        }
        off += n as u64;
    }
    let _ = vhdx_core::disk::extents(&disk);
    Ok(())
}

fn mutate_all(img: &[u8], fields: &[Field]) -> BTreeMap<String, usize> {
    let base: Arc<dyn Storage> = Arc::new(MemStorage::new(img.to_vec()));
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut panics = Vec::new();
    for f in fields {
        for pos in f.start..f.start + f.len {
            let orig = img[pos as usize];
            for v in [0x00, 0xFF, orig ^ 0x01, orig ^ 0x80, orig.wrapping_add(1)] {
                if v == orig {
                    continue;
                }
                for fix in [false, true] {
                    if fix && matches!(f.sum, Sum::None) {
                        continue;
                    }
                    let mut ov = Overlay::new(base.clone()).unwrap();
                    match (fix, f.sum) {
                        (true, Sum::Crc32c { start, len } | Sum::Vhd { start, len, .. }) => {
                            let mut s = img[start as usize..start as usize + len].to_vec();
                            s[(pos - start) as usize] = v;
                            let mut tmp = img[..start as usize].to_vec();
                            tmp.extend_from_slice(&s);
                            tmp.resize(start as usize + len, 0);
                            fix_sum(&mut tmp, f.sum);
                            ov.write(start, &tmp[start as usize..]);
                        }
                        _ => ov.write(pos, &[v]),
                    }
                    let r = catch_unwind(AssertUnwindSafe(|| exercise(Arc::new(ov))));
                    match r {
                        Ok(Ok(())) => *outcomes.entry("ok".into()).or_default() += 1,
                        Ok(Err(k)) => *outcomes.entry(k.as_str().into()).or_default() += 1,
                        Err(_) => panics.push(format!(
                            "{} byte {pos:#x} = {v:#04x} (checksum fixed: {fix})",
                            f.name
                        )),
                    }
                }
            }
        }
    }
    assert!(
        panics.is_empty(),
        "{} mutations panicked, first: {:?}",
        panics.len(),
        &panics[..panics.len().min(5)]
    );
    outcomes
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// The fields of a VHDX image, located by parsing it here independently of the library.
fn vhdx_fields(img: &[u8]) -> Vec<Field> {
    let mut f = vec![
        Field {
            name: "file identifier",
            start: 0,
            len: 8,
            sum: Sum::None,
        },
        Field {
            name: "header 1",
            start: 0x10000,
            len: 80,
            sum: Sum::Crc32c {
                start: 0x10000,
                len: 4096,
            },
        },
        Field {
            name: "header 2",
            start: 0x20000,
            len: 80,
            sum: Sum::Crc32c {
                start: 0x20000,
                len: 4096,
            },
        },
    ];
    let rt = 0x30000usize;
    let n = le32(img, rt + 8) as u64;
    f.push(Field {
        name: "region table 1",
        start: rt as u64,
        len: 16 + 32 * n,
        sum: Sum::Crc32c {
            start: rt as u64,
            len: 65536,
        },
    });
    let mut bat = (0u64, 0u64);
    let mut meta = 0u64;
    for i in 0..n as usize {
        let e = rt + 16 + 32 * i;
        let off = le64(img, e + 16);
        let len = u64::from(le32(img, e + 24));
        match img[e] {
            0x66 => bat = (off, len),
            0x06 => meta = off,
            _ => {}
        }
    }
    let mn = u64::from(u16::from_le_bytes([
        img[meta as usize + 10],
        img[meta as usize + 11],
    ]));
    f.push(Field {
        name: "metadata table",
        start: meta,
        len: 32 + 32 * mn,
        sum: Sum::None,
    });
    for i in 0..mn {
        let e = (meta + 32 + 32 * i) as usize;
        let off = u64::from(le32(img, e + 16));
        let len = u64::from(le32(img, e + 20)).min(64);
        f.push(Field {
            name: "metadata item",
            start: meta + off,
            len,
            sum: Sum::None,
        });
    }
    f.push(Field {
        name: "BAT",
        start: bat.0,
        len: 64,
        sum: Sum::None,
    });
    let _ = bat.1;
    // The log, when the header names one with entries.
    let lo = le64(img, 0x10000 + 72);
    if le32(img, 0x10000 + 68) > 0 && img[lo as usize..lo as usize + 4] == *b"loge" {
        f.push(Field {
            name: "log entry",
            start: lo,
            len: 128,
            sum: Sum::None,
        });
    }
    f
}

/// The fields of a dynamic VHD image.
fn vhd_fields(img: &[u8]) -> Vec<Field> {
    let end = img.len() as u64 - 512;
    let dh = be64(img, end as usize + 16);
    let bat = be64(img, dh as usize + 16);
    let entries = u64::from(be32(img, dh as usize + 28));
    vec![
        Field {
            name: "footer",
            start: end,
            len: 88,
            sum: Sum::Vhd {
                start: end,
                len: 512,
                field: 64,
            },
        },
        Field {
            name: "footer copy",
            start: 0,
            len: 88,
            sum: Sum::Vhd {
                start: 0,
                len: 512,
                field: 64,
            },
        },
        Field {
            name: "dynamic header",
            start: dh,
            len: 64,
            sum: Sum::Vhd {
                start: dh,
                len: 1024,
                field: 36,
            },
        },
        Field {
            name: "BAT",
            start: bat,
            len: (entries * 4).min(32),
            sum: Sum::None,
        },
    ]
}

#[test]
fn mutations_of_every_vhdx_field_never_panic() {
    let img = gunzip(&testdata().join("fuzz/base.vhdx.gz"));
    let out = mutate_all(&img, &vhdx_fields(&img));
    eprintln!("VHDX mutation outcomes: {out:?}");
    assert!(out.get("corrupt").copied().unwrap_or(0) > 100, "{out:?}");
}

#[test]
fn mutations_of_every_vhd_field_never_panic() {
    let img = gunzip(&testdata().join("fuzz/base.vhd.gz"));
    let out = mutate_all(&img, &vhd_fields(&img));
    eprintln!("VHD mutation outcomes: {out:?}");
    assert!(out.len() > 1, "{out:?}");
}
