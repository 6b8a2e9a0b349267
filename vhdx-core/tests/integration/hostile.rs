//! Crafted files that claim huge or looping structures (issue #8 item 2, docs/limits.md):
//! each must open with a typed error (or open and read within its real size) quickly and
//! without an allocation the size of the claim — a terabyte BAT in a small file, metadata
//! items of gigabytes, a log whose entries wrap around forever, overlapping regions, a VHD
//! block table of four billion entries, chains deeper than the limit.

use std::time::{Duration, Instant};
use uuid::Uuid;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::vhdx::log::{encode_entry, LogWrite};
use vhdx_core::{Disk, DiskType, ErrorKind, Format, OpenOptions, VirtualDisk};

const MIB: u64 = 1 << 20;
const RT: [usize; 2] = [192 << 10, 256 << 10];
const HEADERS: [usize; 2] = [64 << 10, 128 << 10];
const BAT_GUID: &str = "2dc27766-f623-4200-9d64-115e9bfd4a08";
const META_GUID: &str = "8b7ca206-4790-4b9a-b8fe-575f050f886e";
const VIRTUAL_SIZE_GUID: &str = "2fa54224-cd1b-4876-b211-5dbed83bf4b8";

/// A new 8 MiB dynamic image of `fmt` (1 MiB VHDX blocks), as bytes.
fn image(fmt: Format) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(if fmt == Format::Vhdx {
        "x.vhdx"
    } else {
        "x.vhd"
    });
    let mut o = CreateOptions::new()
        .size(8 * MIB)
        .disk_type(DiskType::Dynamic);
    if fmt == Format::Vhdx {
        o = o.block_size(MIB as u32);
    }
    create(&p, &o).unwrap();
    std::fs::read(p).unwrap()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Recomputes the CRC-32C (field at +4) of the `len`-byte structure at `start`.
fn fix_crc(b: &mut [u8], start: usize, len: usize) {
    b[start + 4..start + 8].fill(0);
    let c = crc32c::crc32c(&b[start..start + len]);
    b[start + 4..start + 8].copy_from_slice(&c.to_le_bytes());
}

/// The byte position of the region table entry for `guid` in table `copy`.
fn region_entry(b: &[u8], copy: usize, guid: &str) -> usize {
    let g = Uuid::parse_str(guid).unwrap().to_bytes_le();
    let t = RT[copy];
    (0..u32_at(b, t + 8) as usize)
        .map(|i| t + 16 + 32 * i)
        .find(|&e| b[e..e + 16] == g)
        .unwrap()
}

/// Sets (offset, length) of region `guid` in both region tables, checksums fixed.
fn set_region(b: &mut [u8], guid: &str, offset: Option<u64>, length: Option<u32>) {
    for (copy, &table) in RT.iter().enumerate() {
        let e = region_entry(b, copy, guid);
        if let Some(o) = offset {
            b[e + 16..e + 24].copy_from_slice(&o.to_le_bytes());
        }
        if let Some(l) = length {
            b[e + 24..e + 28].copy_from_slice(&l.to_le_bytes());
        }
        fix_crc(b, table, 64 << 10);
    }
}

/// The byte position of the metadata table entry for item `guid`, and the table's offset.
fn metadata_entry(b: &[u8], guid: &str) -> (usize, usize) {
    let meta = u64_at(b, region_entry(b, 0, META_GUID) + 16) as usize;
    let g = Uuid::parse_str(guid).unwrap().to_bytes_le();
    let n = u16::from_le_bytes([b[meta + 10], b[meta + 11]]) as usize;
    let e = (0..n)
        .map(|i| meta + 32 + 32 * i)
        .find(|&e| b[e..e + 16] == g)
        .unwrap();
    (e, meta)
}

/// Opens `bytes` from memory, reads what it can, and returns the open's error kind (if
/// any); fails when it takes more than `limit`.
fn open_within(bytes: Vec<u8>, limit: Duration, what: &str) -> Option<ErrorKind> {
    let t = Instant::now();
    let r = Disk::from_bytes(bytes).map(|d| {
        let _ = d.check();
        let _ = d.info(true);
        let mut buf = vec![0u8; MIB as usize];
        let _ = d.read_at(&mut buf, 0);
        let _ = d.read_at(&mut buf, d.size().saturating_sub(MIB));
    });
    assert!(t.elapsed() < limit, "{what}: took {:?}", t.elapsed());
    r.err().map(|e| e.kind())
}

const QUICK: Duration = Duration::from_secs(3);

#[test]
fn a_64_tib_disk_in_an_8_mib_file_is_refused_without_reading_its_bat() {
    let mut b = image(Format::Vhdx);
    let (e, meta) = metadata_entry(&b, VIRTUAL_SIZE_GUID);
    let at = meta + u32_at(&b, e + 16) as usize;
    b[at..at + 8].copy_from_slice(&(64u64 << 40).to_le_bytes());
    // The BAT region (1 MiB) cannot hold the 64 Mi entries the size needs.
    let kind = open_within(b.clone(), QUICK, "64 TiB, small BAT region");
    assert_eq!(kind, Some(ErrorKind::Corrupt));
    // A BAT region that claims 4 GiB lies past the end of the file.
    set_region(&mut b, BAT_GUID, None, Some(0xFFF0_0000));
    let kind = open_within(b, QUICK, "64 TiB, 4 GiB BAT region");
    assert_eq!(kind, Some(ErrorKind::Corrupt));
}

#[test]
fn regions_that_overlap_or_pass_the_end_are_refused() {
    let b = image(Format::Vhdx);
    let meta = u64_at(&b, region_entry(&b, 0, META_GUID) + 16);
    let mut over = b.clone();
    set_region(&mut over, BAT_GUID, Some(meta), None);
    assert_eq!(
        open_within(over, QUICK, "BAT over metadata"),
        Some(ErrorKind::Corrupt)
    );
    let mut past = b.clone();
    set_region(&mut past, META_GUID, Some(1 << 40), None);
    assert_eq!(
        open_within(past, QUICK, "metadata at 1 TiB"),
        Some(ErrorKind::Corrupt)
    );
    let mut wrap = b;
    set_region(
        &mut wrap,
        BAT_GUID,
        Some(u64::MAX - (1 << 20) + 1),
        Some(2 << 20),
    );
    assert_eq!(
        open_within(wrap, QUICK, "BAT wrapping u64"),
        Some(ErrorKind::Corrupt)
    );
}

#[test]
fn metadata_items_of_gigabytes_are_refused() {
    let b = image(Format::Vhdx);
    for (field, value) in [(20, u32::MAX), (20, 1 << 30), (16, u32::MAX)] {
        let mut m = b.clone();
        let (e, _) = metadata_entry(&m, VIRTUAL_SIZE_GUID);
        m[e + field..e + field + 4].copy_from_slice(&value.to_le_bytes());
        let kind = open_within(m, QUICK, "huge metadata item");
        assert_eq!(
            kind,
            Some(ErrorKind::Corrupt),
            "field +{field} = {value:#x}"
        );
    }
    // An entry count past the table's 2047 entries.
    let mut m = b;
    let (_, meta) = metadata_entry(&m, VIRTUAL_SIZE_GUID);
    m[meta + 10..meta + 12].copy_from_slice(&u16::MAX.to_le_bytes());
    assert_eq!(
        open_within(m, QUICK, "65535 metadata entries"),
        Some(ErrorKind::Corrupt)
    );
}

/// Gives both headers the log GUID `g` (checksums fixed); returns (log offset, length).
fn dirty(b: &mut [u8], g: Uuid) -> (usize, usize) {
    for h in HEADERS {
        b[h + 48..h + 64].copy_from_slice(&g.to_bytes_le());
        fix_crc(b, h, 4096);
    }
    (
        u64_at(b, HEADERS[0] + 72) as usize,
        u32_at(b, HEADERS[0] + 68) as usize,
    )
}

#[test]
fn a_log_that_wraps_around_forever_ends_the_scan() {
    let g = Uuid::from_u128(0x1234_5678);
    let guid = vhdx_core::format::vhdx::Guid::from_uuid(g);
    // Every sector of the log a valid one-sector entry; each names the next one (the
    // oldest, around the ring) as the tail of its sequence, so following tails never ends.
    let mut b = image(Format::Vhdx);
    let (off, len) = dirty(&mut b, g);
    let n = len / 4096;
    let file_len = b.len() as u64;
    for i in 0..n {
        let tail = (((i + 1) % n) * 4096) as u32;
        let e = encode_entry(guid, 100 + i as u64, tail, file_len, file_len, &[]).unwrap();
        b[off + i * 4096..off + i * 4096 + e.len()].copy_from_slice(&e);
    }
    let kind = open_within(b.clone(), QUICK, "circular tails");
    assert!(
        kind.is_none() || kind == Some(ErrorKind::Corrupt),
        "{kind:?}"
    );
    // The same sequence number everywhere, each entry its own tail.
    for i in 0..n {
        let e = encode_entry(guid, 7, (i * 4096) as u32, file_len, file_len, &[]).unwrap();
        b[off + i * 4096..off + i * 4096 + e.len()].copy_from_slice(&e);
    }
    let kind = open_within(b.clone(), QUICK, "equal sequence numbers");
    assert!(
        kind.is_none() || kind == Some(ErrorKind::Corrupt),
        "{kind:?}"
    );
    // An entry that claims to extend the file to 2^60 bytes.
    let e = encode_entry(guid, 9, 0, file_len, 1 << 60, &[]).unwrap();
    b[off..off + e.len()].copy_from_slice(&e);
    let kind = open_within(b, QUICK, "entry extending the file to 2^60");
    assert!(
        kind.is_none() || kind == Some(ErrorKind::Corrupt),
        "{kind:?}"
    );
}

#[test]
fn a_log_entry_writing_a_terabyte_of_zeros_is_replayed_without_allocating_it() {
    let g = Uuid::from_u128(0x9abc);
    let guid = vhdx_core::format::vhdx::Guid::from_uuid(g);
    let mut b = image(Format::Vhdx);
    let (off, _) = dirty(&mut b, g);
    let file_len = b.len() as u64;
    let zero = LogWrite::Zero {
        file_offset: 8 * MIB,
        length: 1 << 40,
    };
    let e = encode_entry(guid, 1, 0, file_len, file_len, &[zero]).unwrap();
    b[off..off + e.len()].copy_from_slice(&e);
    let kind = open_within(b, QUICK, "1 TiB zero descriptor");
    assert!(
        kind.is_none() || kind == Some(ErrorKind::Corrupt),
        "{kind:?}"
    );
}

#[test]
fn a_vhd_block_table_of_four_billion_entries_is_refused() {
    let b = image(Format::Vhd);
    let h = u64::from_be_bytes(b[16..24].try_into().unwrap()) as usize;
    for (field, value) in [(28usize, u32::MAX), (32, u32::MAX), (32, 1 << 31)] {
        // MaxTableEntries (+28), BlockSize (+32); checksum at +36 (one's complement sum).
        let mut m = b.clone();
        m[h + field..h + field + 4].copy_from_slice(&value.to_be_bytes());
        m[h + 36..h + 40].fill(0);
        let sum: u32 = m[h..h + 1024].iter().map(|&x| u32::from(x)).sum();
        m[h + 36..h + 40].copy_from_slice(&(!sum).to_be_bytes());
        let kind = open_within(m, QUICK, "huge VHD table");
        // A 2 GiB block is refused as beyond what this reader accepts.
        let ok =
            kind == Some(ErrorKind::Corrupt) || field == 32 && kind == Some(ErrorKind::Unsupported);
        assert!(ok, "field +{field} = {value:#x}: {kind:?}");
    }
}

#[test]
fn a_chain_deeper_than_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("c0.vhd");
    create(
        &base,
        &CreateOptions::new().size(MIB).disk_type(DiskType::Dynamic),
    )
    .unwrap();
    let depth = vhdx_core::chain::MAX_CHAIN_DEPTH + 1;
    for i in 1..=depth {
        let p = d.join(format!("c{i}.vhd"));
        create(
            &p,
            &CreateOptions::new().parent(d.join(format!("c{}.vhd", i - 1))),
        )
        .unwrap();
    }
    // On a thread with a 2 MiB stack (Rust's default for spawned threads: `compare`, batch
    // jobs): the walk down the chain is a loop, so the depth costs no stack (a crash on
    // a 64-deep chain in debug builds before; issue #8).
    let d2 = d.to_path_buf();
    let t = Instant::now();
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let top = d2.join(format!("c{depth}.vhd"));
            let err = Disk::open(&top).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ChainLoop, "{err}");
            assert!(err.to_string().contains("deeper than the limit"), "{err}");
            // One level less opens, and reads through every level.
            let ok = Disk::open(d2.join(format!("c{}.vhd", depth - 1))).unwrap();
            assert_eq!(ok.chain().len(), depth);
            let mut buf = vec![0u8; 4096];
            ok.read_at(&mut buf, 0).unwrap();
            assert!(ok
                .check()
                .findings
                .iter()
                .all(|f| f.severity != vhdx_core::Severity::Corrupt));
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    // A smaller limit of the caller's.
    let opts = OpenOptions {
        max_depth: 3,
        ..OpenOptions::default()
    };
    let err = Disk::open_with(d.join("c4.vhd"), &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ChainLoop, "{err}");
    Disk::open_with(d.join("c3.vhd"), &opts).unwrap();
}

#[test]
fn strict_policy_refuses_a_relative_locator_through_a_symlink_out_of_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (inside, outside) = (dir.path().join("case"), dir.path().join("elsewhere"));
    std::fs::create_dir_all(inside.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let base = outside.join("base.vhdx");
    create(&base, &CreateOptions::new().size(8 * MIB)).unwrap();
    // `case/link` points out of the case folder; the child's relative locator goes through
    // it (`.\link\base.vhdx`), so lexically it stays inside.
    std::os::unix::fs::symlink(&outside, inside.join("link")).unwrap();
    let child = inside.join("child.avhdx");
    create(
        &child,
        &CreateOptions::new().parent(inside.join("link/base.vhdx")),
    )
    .unwrap();
    let strict = OpenOptions {
        policy: vhdx_core::ParentPolicy::Strict,
        ..OpenOptions::default()
    };
    let err = Disk::open_with(&child, &strict).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PolicyRefused, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("base.vhdx") && text.contains("strict parent policy"),
        "{text}"
    );
    assert_eq!(err.path(), Some(child.as_path()));
    // The default policy follows it; naming the parent is the explicit way in strict mode.
    assert_eq!(Disk::open(&child).unwrap().chain().len(), 2);
    let named = OpenOptions {
        parents: vec![base.clone()],
        ..strict
    };
    assert_eq!(Disk::open_with(&child, &named).unwrap().chain().len(), 2);
}
