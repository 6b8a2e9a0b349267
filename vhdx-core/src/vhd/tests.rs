//! Unit tests of VHD opening on small images built in memory: footer selection, the
//! validation of every field that sizes or places something, and the typed errors.

use super::open::FooterCopy;
use super::Vhd;
use crate::disk::{read_layer, Layer};
use crate::error::ErrorKind;
use crate::format::vhd::dynamic_header::{DynamicHeader, SIZE as HSIZE};
use crate::format::vhd::footer::{self as ft, Footer};
use crate::image::ImageFile;
use crate::storage::MemStorage;
use std::sync::Arc;
use zerocopy::{FromZeros, IntoBytes};

fn footer(disk_type: u32, size: u64, data_offset: u64) -> [u8; 512] {
    let mut f = Footer::new_zeroed();
    f.cookie = ft::COOKIE;
    f.features.set(2);
    f.file_format_version.set(0x0001_0000);
    f.data_offset.set(data_offset);
    f.creator_application = *b"test";
    f.current_size.set(size);
    f.original_size.set(size);
    f.disk_type.set(disk_type);
    f.unique_id = [7; 16];
    seal_footer(f.as_bytes())
}

fn seal_footer(b: &[u8]) -> [u8; 512] {
    let mut a = [0u8; 512];
    a.copy_from_slice(b);
    let c = Footer::compute_checksum(&a);
    a[64..68].copy_from_slice(&c.to_be_bytes());
    a
}

fn header(table: u64, entries: u32, block_size: u32) -> [u8; HSIZE] {
    let mut h = DynamicHeader::new_zeroed();
    h.cookie = *b"cxsparse";
    h.data_offset.set(u64::MAX);
    h.table_offset.set(table);
    h.header_version.set(0x0001_0000);
    h.max_table_entries.set(entries);
    h.block_size.set(block_size);
    let mut a = [0u8; HSIZE];
    a.copy_from_slice(h.as_bytes());
    let c = DynamicHeader::compute_checksum(&a);
    a[36..40].copy_from_slice(&c.to_be_bytes());
    a
}

/// A dynamic disk of `size` bytes in 4 KiB blocks, block 1 allocated with bytes 0xAB.
fn dynamic(size: u64, entries: u32, block_size: u32) -> Vec<u8> {
    let f = footer(ft::DISK_TYPE_DYNAMIC, size, 512);
    let mut v = f.to_vec();
    v.extend_from_slice(&header(1536, entries, block_size));
    let mut bat = vec![0xFFu8; (entries as usize * 4).div_ceil(512) * 512];
    let block_at = 1536 + bat.len();
    if entries > 1 {
        bat[4..8].copy_from_slice(&((block_at / 512) as u32).to_be_bytes());
    }
    v.extend_from_slice(&bat);
    v.extend_from_slice(&[0xFF; 512]); // bitmap
    v.extend_from_slice(&vec![0xAB; block_size as usize]);
    v.extend_from_slice(&f);
    v
}

fn open(bytes: Vec<u8>) -> crate::Result<Vhd> {
    Vhd::open(Arc::new(MemStorage::new(bytes)), "test")
}

fn read(v: &Vhd, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    read_layer(v, &mut b, off).unwrap();
    b
}

#[test]
fn dynamic_reads_allocated_and_unallocated_blocks() {
    let v = open(dynamic(3 * 4096, 3, 4096)).unwrap();
    assert_eq!(v.layer_size(), 3 * 4096);
    assert_eq!(v.footer_copy(), FooterCopy::End);
    assert!(v.findings().is_empty());
    let all = read(&v, 0, 3 * 4096);
    assert!(all[..4096].iter().all(|&b| b == 0));
    assert!(all[4096..8192].iter().all(|&b| b == 0xAB));
    assert!(all[8192..].iter().all(|&b| b == 0));
    // Unaligned reads across block edges.
    assert_eq!(read(&v, 4095, 3), [0, 0xAB, 0xAB]);
}

#[test]
fn legacy_511_byte_footer() {
    let mut img = dynamic(3 * 4096, 3, 4096);
    img.pop();
    let v = open(img).unwrap();
    assert_eq!(v.footer_copy(), FooterCopy::End);
    assert!(v.findings().iter().any(|f| f.message.contains("511")));
    assert_eq!(read(&v, 4096, 1), [0xAB]);
}

#[test]
fn fixed_footer_never_falls_back_to_offset_0() {
    // A fixed disk whose payload starts with a valid dynamic footer, and whose own footer
    // has a bad checksum: the end footer is still the one used.
    let size = 8192u64;
    let mut img = footer(ft::DISK_TYPE_DYNAMIC, 4096, 512).to_vec();
    img.resize(size as usize, 0x5A);
    let mut f = footer(ft::DISK_TYPE_FIXED, size, u64::MAX);
    f[100] ^= 1;
    img.extend_from_slice(&f);
    let v = open(img).unwrap();
    assert_eq!(v.disk_type(), crate::DiskType::Fixed);
    assert_eq!(v.footer_copy(), FooterCopy::End);
    assert_eq!(v.layer_size(), size);
    assert_eq!(v.findings().len(), 1);
    assert_eq!(read(&v, 0, 8), b"conectix");
}

#[test]
fn fixed_size_must_fit_the_file() {
    let mut img = vec![0u8; 4096];
    img.extend_from_slice(&footer(ft::DISK_TYPE_FIXED, 8192, u64::MAX));
    assert_eq!(open(img).unwrap_err().kind(), ErrorKind::Corrupt);
}

#[test]
fn typed_errors_for_bad_fields() {
    let kind = |img: Vec<u8>| open(img).map(|_| ()).unwrap_err().kind();
    // Not a VHD at all.
    assert_eq!(kind(vec![0u8; 4096]), ErrorKind::NotADisk);
    assert_eq!(kind(vec![0u8; 10]), ErrorKind::NotADisk);
    // Disk types: reserved values are unsupported, others corrupt.
    for (t, k) in [(1u32, ErrorKind::Unsupported), (9, ErrorKind::Corrupt)] {
        let mut img = vec![0u8; 4096];
        img.extend_from_slice(&footer(t, 4096, u64::MAX));
        assert_eq!(kind(img), k, "type {t}");
    }
    // Size not a multiple of 512; beyond 2040 GiB.
    let mut img = dynamic(3 * 4096, 3, 4096);
    let n = img.len();
    let f = footer(ft::DISK_TYPE_DYNAMIC, 3 * 4096 + 1, 512);
    img[n - 512..].copy_from_slice(&f);
    img[..512].copy_from_slice(&f);
    assert_eq!(kind(img), ErrorKind::Corrupt);
    let mut img = dynamic(3 * 4096, 3, 4096);
    let f = footer(ft::DISK_TYPE_DYNAMIC, 2041 << 30, 512);
    img[n - 512..].copy_from_slice(&f);
    assert_eq!(kind(img), ErrorKind::Corrupt);
    // Header outside the file.
    let mut img = dynamic(3 * 4096, 3, 4096);
    img[n - 512..].copy_from_slice(&footer(ft::DISK_TYPE_DYNAMIC, 3 * 4096, u64::MAX - 8));
    assert_eq!(kind(img), ErrorKind::Corrupt);
    // Header fields.
    let with_header = |h: [u8; HSIZE]| {
        let mut img = dynamic(3 * 4096, 3, 4096);
        img[512..1536].copy_from_slice(&h);
        kind(img)
    };
    assert_eq!(with_header(header(1536, 3, 4000)), ErrorKind::Corrupt); // not a power of 2
    assert_eq!(with_header(header(1536, 3, 256)), ErrorKind::Corrupt); // < 512
    assert_eq!(
        with_header(header(1536, 1, 512 << 20)),
        ErrorKind::Unsupported
    ); // > cap
    assert_eq!(with_header(header(1536, 2, 4096)), ErrorKind::Corrupt); // BAT too small
    assert_eq!(
        with_header(header(u64::MAX - 4, 3, 4096)),
        ErrorKind::Corrupt
    ); // BAT outside
    assert_eq!(
        with_header(header(1536, u32::MAX, 4096)),
        ErrorKind::Corrupt
    ); // BAT > file
    let mut h = header(1536, 3, 4096);
    h[0] = b'X';
    assert_eq!(with_header(h), ErrorKind::Corrupt); // cookie
    let mut h = header(1536, 3, 4096);
    h[24] = 2;
    assert_eq!(with_header(h), ErrorKind::Unsupported); // version
}

#[test]
fn block_past_eof_is_a_corrupt_error_with_offset() {
    let mut img = dynamic(3 * 4096, 3, 4096);
    // BAT entry 1 points far past the end of the file.
    img[1536 + 4..1536 + 8].copy_from_slice(&0x0010_0000u32.to_be_bytes());
    let v = open(img).unwrap();
    let mut b = [0u8; 16];
    let e = read_layer(&v, &mut b, 4096).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(e.file_offset(), Some(1536 + 4));
    read_layer(&v, &mut b, 0).unwrap();
    let mut r = crate::Report::default();
    v.check(&mut r);
    assert!(r.is_corrupt(), "{r:?}");
}

#[test]
fn check_finds_overlaps_and_extra_entries() {
    let mut img = dynamic(3 * 4096, 4, 4096);
    // Entry 2 shares block 1's place; entry 3 (beyond the size) points into the BAT.
    let e1: [u8; 4] = img[1536 + 4..1536 + 8].try_into().unwrap();
    img[1536 + 8..1536 + 12].copy_from_slice(&e1);
    img[1536 + 12..1536 + 16].copy_from_slice(&3u32.to_be_bytes());
    let v = open(img).unwrap();
    let mut r = crate::Report::default();
    v.check(&mut r);
    let msgs: Vec<&str> = r.findings.iter().map(|f| f.message.as_str()).collect();
    assert!(
        msgs.iter().any(|m| m.contains("overlaps block 1")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("beyond the virtual size")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("overlaps the footer copy, the dynamic header or the BAT")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("MaxTableEntries is 4")),
        "{msgs:?}"
    );
}

#[test]
fn start_copy_differing_is_reported() {
    let mut img = dynamic(3 * 4096, 3, 4096);
    img[..512].copy_from_slice(&footer(ft::DISK_TYPE_DYNAMIC, 2 * 4096, 512));
    let v = open(img).unwrap();
    let mut r = crate::Report::default();
    v.check(&mut r);
    assert!(r
        .findings
        .iter()
        .any(|f| f.structure == "VHD footer copy" && f.message.contains("differs")));
}
