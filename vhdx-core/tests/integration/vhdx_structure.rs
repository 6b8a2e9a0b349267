//! Targeted damage to the structures of a qemu-made VHDX: each case states what the spec
//! (FORMATS.md part A) requires and checks our reader does exactly that. Structures are
//! located by parsing the bytes here, independently of the library.

use super::common::*;
use std::path::{Path, PathBuf};
use vhdx_core::{Disk, ErrorKind, Severity, VirtualDisk};

const H1: usize = 0x10000;
const H2: usize = 0x20000;
const RT1: usize = 0x30000;
const RT2: usize = 0x40000;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Recomputes the CRC-32C of the structure of `len` bytes at `start` (field at +4).
fn fix_crc(img: &mut [u8], start: usize, len: usize) {
    img[start + 4..start + 8].fill(0);
    let c = crc32c::crc32c(&img[start..start + len]);
    img[start + 4..start + 8].copy_from_slice(&c.to_le_bytes());
}

/// (BAT offset, metadata offset) from region table 1.
fn regions(img: &[u8]) -> (usize, usize) {
    let n = le32(img, RT1 + 8) as usize;
    let (mut bat, mut meta) = (0, 0);
    for i in 0..n {
        let e = RT1 + 16 + 32 * i;
        match img[e] {
            0x66 => bat = le64(img, e + 16) as usize,
            0x06 => meta = le64(img, e + 16) as usize,
            _ => {}
        }
    }
    (bat, meta)
}

struct Case {
    _dir: tempfile::TempDir,
    path: PathBuf,
    img: Vec<u8>,
    content: Vec<u8>,
}

/// A 24 MiB dynamic VHDX with 1 MiB blocks and data in a few blocks, and its content as
/// qemu exports it.
fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let path = make_qemu_image(
        dir.path(),
        "s.vhdx",
        "vhdx",
        "block_size=1M,block_state_zero=off",
        "24M",
        99,
    );
    let content = qemu_raw(&path, "vhdx");
    let img = std::fs::read(&path).unwrap();
    Case {
        _dir: dir,
        path,
        img,
        content,
    }
}

fn write(path: &Path, img: &[u8]) {
    std::fs::write(path, img).unwrap();
}

#[test]
fn damaged_header_copy_is_tolerated_and_reported() {
    for (bad, good_index) in [(H1, 2u8), (H2, 1u8)] {
        let c = case();
        let mut img = c.img.clone();
        // Make the surviving copy the older one, so the choice cannot come from sequence order.
        img[bad + 8] ^= 0x40; // flip a sequence-number bit without fixing the CRC
        write(&c.path, &img);
        let d = Disk::open(&c.path).unwrap();
        assert_same(
            &read_all(&d, 1 << 20),
            &c.content,
            "content after header damage",
        );
        let info = d.info(false).unwrap();
        assert_eq!(info.vhdx.as_ref().unwrap().current_header, good_index);
        let r = d.check();
        assert!(!r.is_corrupt(), "{r:?}");
        let f = r
            .findings
            .iter()
            .find(|f| f.message.contains("CRC"))
            .unwrap_or_else(|| panic!("damaged header not reported: {r:?}"));
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.offset, Some(bad as u64));
    }
}

#[test]
fn both_headers_damaged_is_corrupt() {
    let c = case();
    let mut img = c.img.clone();
    img[H1 + 8] ^= 1;
    img[H2 + 8] ^= 1;
    write(&c.path, &img);
    let e = Disk::open(&c.path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(e.path(), Some(c.path.as_path()));
}

#[test]
fn higher_sequence_number_wins() {
    let c = case();
    let mut img = c.img.clone();
    let s1 = le64(&img, H1 + 8);
    let s2 = le64(&img, H2 + 8);
    // Swap which copy is newer, keeping both valid.
    let (newer, older) = if s1 > s2 { (H2, H1) } else { (H1, H2) };
    img[newer + 8..newer + 16].copy_from_slice(&(s1.max(s2) + 10).to_le_bytes());
    fix_crc(&mut img, newer, 4096);
    write(&c.path, &img);
    let d = Disk::open(&c.path).unwrap();
    let v = d.info(false).unwrap().vhdx.unwrap();
    assert_eq!(v.header_sequence, s1.max(s2) + 10);
    assert_eq!(v.current_header, if newer == H1 { 1 } else { 2 });
    let _ = older;
}

#[test]
fn equal_sequence_numbers_with_different_bodies_are_corrupt() {
    let c = case();
    let mut img = c.img.clone();
    let s1 = le64(&img, H1 + 8);
    img[H2 + 8..H2 + 16].copy_from_slice(&s1.to_le_bytes());
    img[H2 + 16] ^= 0xFF; // a different FileWriteGuid
    fix_crc(&mut img, H2, 4096);
    write(&c.path, &img);
    assert_eq!(Disk::open(&c.path).unwrap_err().kind(), ErrorKind::Corrupt);
    // Identical bodies (as Disk2vhd writes them) are accepted.
    let mut img = c.img.clone();
    let h1 = img[H1..H1 + 4096].to_vec();
    img[H2..H2 + 4096].copy_from_slice(&h1);
    write(&c.path, &img);
    let d = Disk::open(&c.path).unwrap();
    assert_same(&read_all(&d, 1 << 20), &c.content, "identical headers");
}

#[test]
fn region_table_copy_2_is_used_when_copy_1_is_damaged() {
    let c = case();
    let mut img = c.img.clone();
    img[RT1 + 16 + 20] ^= 0x01; // damage copy 1 (BAT entry offset), CRC now wrong
    write(&c.path, &img);
    let d = Disk::open(&c.path).unwrap();
    assert_same(&read_all(&d, 1 << 20), &c.content, "copy 2");
    let r = d.check();
    assert!(
        r.findings
            .iter()
            .any(|f| f.offset == Some(RT1 as u64) && f.severity == Severity::Warning),
        "{r:?}"
    );
    // Both copies damaged: unusable.
    img[RT2 + 16 + 20] ^= 0x01;
    write(&c.path, &img);
    assert_eq!(Disk::open(&c.path).unwrap_err().kind(), ErrorKind::Corrupt);
}

/// Appends a region entry to both region tables.
fn add_region(img: &mut [u8], guid: [u8; 16], offset: u64, required: bool) {
    for rt in [RT1, RT2] {
        let n = le32(img, rt + 8) as usize;
        let e = rt + 16 + 32 * n;
        img[e..e + 16].copy_from_slice(&guid);
        img[e + 16..e + 24].copy_from_slice(&offset.to_le_bytes());
        img[e + 24..e + 28].copy_from_slice(&(1u32 << 20).to_le_bytes());
        img[e + 28..e + 32].copy_from_slice(&u32::from(required).to_le_bytes());
        img[rt + 8..rt + 12].copy_from_slice(&(n as u32 + 1).to_le_bytes());
        fix_crc(img, rt, 65536);
    }
}

#[test]
fn unknown_regions_required_refuses_optional_is_ignored() {
    let c = case();
    // Place the extra region past the end of the file's current content (1 MiB aligned).
    let off = (c.img.len() as u64).div_ceil(1 << 20) << 20;
    let mut img = c.img.clone();
    img.resize(off as usize + (1 << 20), 0);
    let guid = *b"\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff\x00";
    let mut optional = img.clone();
    add_region(&mut optional, guid, off, false);
    write(&c.path, &optional);
    let d = Disk::open(&c.path).unwrap();
    assert_same(&read_all(&d, 1 << 20), &c.content, "optional region");
    let mut required = img;
    add_region(&mut required, guid, off, true);
    write(&c.path, &required);
    let e = Disk::open(&c.path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("required"), "{e}");
}

#[test]
fn unknown_required_metadata_item_refuses() {
    let c = case();
    let (_, meta) = regions(&c.img);
    let mut img = c.img.clone();
    let n = u16::from_le_bytes([img[meta + 10], img[meta + 11]]) as usize;
    let e = meta + 32 + 32 * n;
    img[e..e + 16]
        .copy_from_slice(b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10");
    img[e + 16..e + 20].copy_from_slice(&0u32.to_le_bytes());
    img[e + 20..e + 24].copy_from_slice(&0u32.to_le_bytes());
    img[e + 24..e + 28].copy_from_slice(&4u32.to_le_bytes()); // IsRequired
    img[meta + 10..meta + 12].copy_from_slice(&(n as u16 + 1).to_le_bytes());
    write(&c.path, &img);
    let err = Disk::open(&c.path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    // The same item without IsRequired is ignored.
    img[e + 24..e + 28].copy_from_slice(&0u32.to_le_bytes());
    write(&c.path, &img);
    let d = Disk::open(&c.path).unwrap();
    assert_same(&read_all(&d, 1 << 20), &c.content, "optional metadata item");
}

/// Index of the first FULLY_PRESENT payload entry and its value.
fn first_present(img: &[u8], bat: usize) -> (usize, u64) {
    (0..24)
        .map(|i| (i, le64(img, bat + 8 * i)))
        .find(|(_, e)| e & 7 == 6)
        .expect("a present block")
}

#[test]
fn block_states_invalid_for_a_dynamic_disk_are_corrupt() {
    let c = case();
    let (bat, _) = regions(&c.img);
    let (i, e) = first_present(&c.img, bat);
    for state in [4u64, 7] {
        let mut img = c.img.clone();
        img[bat + 8 * i..bat + 8 * i + 8].copy_from_slice(&((e & !7) | state).to_le_bytes());
        write(&c.path, &img);
        let d = Disk::open(&c.path).unwrap();
        let mut buf = vec![0u8; 4096];
        let err = d.read_at(&mut buf, i as u64 * (1 << 20)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "state {state}: {err}");
        assert_eq!(err.file_offset(), Some((bat + 8 * i) as u64), "{err}");
        assert!(d.check().is_corrupt());
        // Other blocks still read.
        let other = (i as u64 + 1) % 24;
        d.read_at(&mut buf, other << 20).unwrap();
    }
}

#[test]
fn state_zero_unmapped_undefined_read_zeros_and_not_present_is_unallocated() {
    let c = case();
    let (bat, _) = regions(&c.img);
    let (i, e) = first_present(&c.img, bat);
    for (state, status) in [(2u64, "zero"), (3, "zero"), (1, "zero"), (0, "unallocated")] {
        let mut img = c.img.clone();
        let v = if state == 0 || state == 2 {
            state
        } else {
            (e & !7) | state
        };
        img[bat + 8 * i..bat + 8 * i + 8].copy_from_slice(&v.to_le_bytes());
        write(&c.path, &img);
        let d = Disk::open(&c.path).unwrap();
        let mut expect = c.content.clone();
        expect[i << 20..(i + 1) << 20].fill(0);
        assert_same(&read_all(&d, 1 << 20), &expect, &format!("state {state}"));
        let st = d.block_status((i as u64) << 20, 1 << 20).unwrap();
        let got = match st.status {
            vhdx_core::Status::Zero { .. } => "zero",
            vhdx_core::Status::Unallocated => "unallocated",
            vhdx_core::Status::Data { .. } => "data",
        };
        assert_eq!(got, status, "state {state}");
    }
}

#[test]
fn block_past_the_end_of_the_file_is_corrupt_and_short_last_block_reads_zeros() {
    let c = case();
    let (bat, _) = regions(&c.img);
    // Find the block stored last in the file.
    let (i, e) = (0..24)
        .map(|i| (i, le64(&c.img, bat + 8 * i)))
        .filter(|(_, e)| e & 7 == 6)
        .max_by_key(|(_, e)| e & !0xFFFFF)
        .unwrap();
    let off = (e & !0xFFFFF) as usize;
    // Cut the file in the middle of that block: the missing half reads as zeros (QEMU
    // tolerates a short last block too) and check warns.
    let mut img = c.img.clone();
    img.truncate(off + (1 << 19));
    write(&c.path, &img);
    let d = Disk::open(&c.path).unwrap();
    let mut expect = c.content.clone();
    expect[(i << 20) + (1 << 19)..(i + 1) << 20].fill(0);
    assert_same(&read_all(&d, 1 << 20), &expect, "short last block");
    let r = d.check();
    assert!(
        r.findings
            .iter()
            .any(|f| f.severity == Severity::Warning && f.message.contains("cut short")),
        "{r:?}"
    );
    // A block wholly past the end is corruption, named with its BAT entry.
    img.truncate(off);
    write(&c.path, &img);
    let d = Disk::open(&c.path).unwrap();
    let mut buf = vec![0u8; 512];
    let err = d.read_at(&mut buf, (i as u64) << 20).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_eq!(err.file_offset(), Some((bat + 8 * i) as u64));
    assert!(d.check().is_corrupt());
}

#[test]
fn overlapping_blocks_are_reported() {
    let c = case();
    let (bat, _) = regions(&c.img);
    let present: Vec<usize> = (0..24)
        .filter(|&i| le64(&c.img, bat + 8 * i) & 7 == 6)
        .collect();
    assert!(present.len() >= 2);
    let mut img = c.img.clone();
    let a = le64(&img, bat + 8 * present[0]);
    img[bat + 8 * present[1]..bat + 8 * present[1] + 8].copy_from_slice(&a.to_le_bytes());
    write(&c.path, &img);
    let r = Disk::open(&c.path).unwrap().check();
    assert!(r.is_corrupt());
    assert!(
        r.findings.iter().any(|f| f.message.contains("overlaps")),
        "{r:?}"
    );
}
