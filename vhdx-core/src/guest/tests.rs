//! Partition tables and volumes built byte by byte: MBR with logical partitions, GPT with
//! both copies, damaged copies, hostile sizes and loops, at 512 and 4096-byte sectors.
//! (The integration tests check the same against tables made by sfdisk and sgdisk.)

use super::testdisk::MemDisk;
use super::*;
use crate::ErrorKind;
use uuid::Uuid;

const MIB: usize = 1 << 20;
const BASIC_DATA: &str = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7";
const LINUX_FS: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

fn ntfs_boot() -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0..3].copy_from_slice(&[0xEB, 0x52, 0x90]);
    b[3..11].copy_from_slice(b"NTFS    ");
    b[510] = 0x55;
    b[511] = 0xAA;
    b
}

fn put(bytes: &mut [u8], at: usize, data: &[u8]) {
    bytes[at..at + data.len()].copy_from_slice(data);
}

fn mbr_entry(sector: &mut [u8], slot: usize, status: u8, kind: u8, first: u32, sectors: u32) {
    let at = 446 + 16 * slot;
    sector[at] = status;
    sector[at + 4] = kind;
    put(sector, at + 8, &first.to_le_bytes());
    put(sector, at + 12, &sectors.to_le_bytes());
    sector[510] = 0x55;
    sector[511] = 0xAA;
}

fn crc(data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(data);
    h.finalize()
}

/// Writes a protective MBR and both GPT copies (128 entries of 128 bytes).
fn write_gpt(b: &mut [u8], sector: usize, parts: &[(&str, u64, u64, &str)]) {
    let last = (b.len() / sector - 1) as u64;
    let entry_sectors = (128 * 128 / sector) as u64;
    let mut entries = vec![0u8; 128 * 128];
    for (i, (t, first, end, name)) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        put(e, 0, &Uuid::parse_str(t).unwrap().to_bytes_le());
        put(e, 16, &Uuid::from_u128(i as u128 + 1).to_bytes_le());
        put(e, 32, &first.to_le_bytes());
        put(e, 40, &end.to_le_bytes());
        put(e, 48, &(1u64 << 63).to_le_bytes());
        put(e, 56, &crate::format::utf16::encode_le(name));
    }
    let ecrc = crc(&entries);
    let mut lba0 = vec![0u8; 512];
    mbr_entry(
        &mut lba0,
        0,
        0,
        0xEE,
        1,
        u32::try_from(last).unwrap_or(u32::MAX),
    );
    put(b, 0, &lba0);
    for (my, alt, elba) in [(1, last, 2), (last, 1, last - entry_sectors)] {
        let mut h = vec![0u8; 92];
        put(&mut h, 0, b"EFI PART");
        put(&mut h, 8, &0x0001_0000u32.to_le_bytes());
        put(&mut h, 12, &92u32.to_le_bytes());
        put(&mut h, 24, &my.to_le_bytes());
        put(&mut h, 32, &alt.to_le_bytes());
        put(&mut h, 40, &(2 + entry_sectors).to_le_bytes());
        put(&mut h, 48, &(last - entry_sectors - 1).to_le_bytes());
        put(&mut h, 56, &Uuid::from_u128(0xABCD).to_bytes_le());
        put(&mut h, 72, &elba.to_le_bytes());
        put(&mut h, 80, &128u32.to_le_bytes());
        put(&mut h, 84, &128u32.to_le_bytes());
        put(&mut h, 88, &ecrc.to_le_bytes());
        let hcrc = crc(&h);
        put(&mut h, 16, &hcrc.to_le_bytes());
        put(b, my as usize * sector, &h);
        put(b, elba as usize * sector, &entries);
    }
}

fn disk(bytes: Vec<u8>, sector: u32) -> MemDisk {
    MemDisk { bytes, sector }
}

#[test]
fn empty_disk_has_no_table_and_no_volume() {
    let l = inspect(&disk(vec![0u8; MIB], 512)).unwrap();
    assert_eq!(l.table, PartitionTable::None);
    assert!(l.volumes.is_empty());
}

#[test]
fn file_system_at_sector_zero_is_volume_zero() {
    // An NTFS boot sector ends in 55 AA and its "entries" are boot code: not an MBR.
    let mut b = vec![0u8; MIB];
    put(&mut b, 0, &ntfs_boot());
    put(
        &mut b,
        446,
        &[
            0x33, 0xC0, 0x8E, 0xD0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ],
    );
    let l = inspect(&disk(b, 512)).unwrap();
    assert_eq!(l.table, PartitionTable::None);
    assert_eq!(l.volumes.len(), 1);
    assert_eq!(
        (
            l.volumes[0].number,
            l.volumes[0].offset,
            l.volumes[0].length
        ),
        (0, 0, MIB as u64)
    );
    assert_eq!(l.volumes[0].kind, VolumeKind::Ntfs);
}

#[test]
fn mbr_primaries_and_logicals() {
    let mut b = vec![0u8; 8 * MIB];
    put(&mut b, 440, &0xDEAD_BEEFu32.to_le_bytes());
    mbr_entry(&mut b, 0, 0x80, 0x07, 2048, 2048);
    mbr_entry(&mut b, 2, 0, 0x05, 4096, 8192);
    // EBR 1 at 4096: logical at +2048 (2048 sectors), next EBR at extended + 4096.
    let mut ebr = vec![0u8; 512];
    mbr_entry(&mut ebr, 0, 0, 0x83, 2048, 1024);
    mbr_entry(&mut ebr, 1, 0, 0x05, 4096, 4096);
    put(&mut b, 4096 * 512, &ebr);
    let mut ebr2 = vec![0u8; 512];
    mbr_entry(&mut ebr2, 0, 0, 0x82, 1, 1000);
    put(&mut b, 8192 * 512, &ebr2);
    put(&mut b, 2048 * 512, &ntfs_boot());
    put(&mut b, (8193 * 512) + 4086, b"SWAPSPACE2");
    let l = inspect(&disk(b, 512)).unwrap();
    assert_eq!(
        l.table,
        PartitionTable::Mbr {
            disk_signature: 0xDEAD_BEEF
        }
    );
    let got: Vec<_> = l
        .volumes
        .iter()
        .map(|v| (v.number, v.offset / 512, v.length / 512, v.kind))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, 2048, 2048, VolumeKind::Ntfs),
            (5, 6144, 1024, VolumeKind::Unknown),
            (6, 8193, 1000, VolumeKind::Swap),
        ]
    );
    let p = l.volumes[0].partition.as_ref().unwrap();
    assert!(p.bootable);
    assert_eq!(p.mbr_type, Some(7));
    assert_eq!(
        l.volumes[2].partition.as_ref().unwrap().scheme,
        Scheme::MbrLogical
    );
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn mbr_logical_loop_is_corrupt() {
    let mut b = vec![0u8; 4 * MIB];
    mbr_entry(&mut b, 0, 0, 0x0F, 2048, 4096);
    let mut ebr = vec![0u8; 512];
    mbr_entry(&mut ebr, 0, 0, 0x83, 1, 10);
    mbr_entry(&mut ebr, 1, 0, 0x05, 0x800, 10); // next EBR: 2048 + 2048
    put(&mut b, 2048 * 512, &ebr);
    let mut ebr2 = ebr.clone();
    mbr_entry(&mut ebr2, 1, 0, 0x05, 0, 10); // back to the first one? 0 = end of chain
    put(&mut b, 4096 * 512, &ebr2);
    let l = inspect(&disk(b.clone(), 512)).unwrap();
    assert_eq!(l.volumes.len(), 2);
    // Now make the second EBR link back to the first one (relative 0 is "end"; use a loop
    // through a link to itself instead).
    mbr_entry(&mut ebr2, 1, 0, 0x05, 2048, 10);
    put(&mut b, 4096 * 512, &ebr2);
    let e = inspect(&disk(b.clone(), 512)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    // An EBR link outside the extended partition.
    mbr_entry(&mut ebr2, 1, 0, 0x05, 100_000, 10);
    put(&mut b, 4096 * 512, &ebr2);
    let e = inspect(&disk(b, 512)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("outside"), "{e}");
}

#[test]
fn mbr_partition_past_the_end_is_cut_with_a_warning() {
    let mut b = vec![0u8; MIB];
    mbr_entry(&mut b, 0, 0, 0x83, 1024, 4096);
    mbr_entry(&mut b, 1, 0, 0x83, 100_000, 10);
    let l = inspect(&disk(b, 512)).unwrap();
    assert_eq!(l.volumes.len(), 1);
    assert_eq!(l.volumes[0].length, (2048 - 1024) * 512);
    assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
}

fn gpt_disk(sector: usize) -> Vec<u8> {
    let mut b = vec![0u8; 8 * MIB];
    let mib = (MIB / sector) as u64;
    write_gpt(
        &mut b,
        sector,
        &[
            (BASIC_DATA, mib, 3 * mib - 1, "data"),
            (LINUX_FS, 3 * mib, 5 * mib - 1, "root"),
        ],
    );
    put(&mut b, MIB, &ntfs_boot());
    b
}

#[test]
fn gpt_both_sector_sizes() {
    for sector in [512usize, 4096] {
        let l = inspect(&disk(gpt_disk(sector), sector as u32)).unwrap();
        let PartitionTable::Gpt {
            disk_guid, header, ..
        } = &l.table
        else {
            panic!("{:?}", l.table);
        };
        assert_eq!(*disk_guid, Uuid::from_u128(0xABCD));
        assert_eq!(*header, gpt::GptHeaderCopy::Primary);
        let got: Vec<_> = l
            .volumes
            .iter()
            .map(|v| (v.number, v.offset, v.length, v.kind))
            .collect();
        let m = MIB as u64;
        assert_eq!(
            got,
            vec![
                (1, m, 2 * m, VolumeKind::Ntfs),
                (2, 3 * m, 2 * m, VolumeKind::Unknown)
            ],
            "sector {sector}"
        );
        let p = l.volumes[0].partition.as_ref().unwrap();
        assert_eq!(p.name.as_deref(), Some("data"));
        assert_eq!(p.type_name, Some("Microsoft basic data"));
        assert_eq!(p.attributes, 1 << 63);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }
}

#[test]
fn gpt_damaged_primary_uses_backup() {
    // Header CRC broken.
    let mut b = gpt_disk(512);
    b[512 + 60] ^= 1;
    let l = inspect(&disk(b, 512)).unwrap();
    assert!(matches!(
        l.table,
        PartitionTable::Gpt {
            header: gpt::GptHeaderCopy::Backup,
            ..
        }
    ));
    assert_eq!(l.volumes.len(), 2);
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    // Entry array CRC broken.
    let mut b = gpt_disk(512);
    b[1024 + 40] ^= 1;
    let l = inspect(&disk(b, 512)).unwrap();
    assert!(matches!(
        l.table,
        PartitionTable::Gpt {
            header: gpt::GptHeaderCopy::Backup,
            ..
        }
    ));
    // Primary gone (zeroed): the backup, with a warning.
    let mut b = gpt_disk(512);
    b[512..1024].fill(0);
    let l = inspect(&disk(b, 512)).unwrap();
    assert_eq!(l.volumes.len(), 2);
    assert!(l.warnings[0].contains("no primary"), "{:?}", l.warnings);
}

#[test]
fn gpt_damaged_backup_is_a_warning() {
    let mut b = gpt_disk(512);
    let n = b.len();
    b[n - 512 + 60] ^= 1;
    let l = inspect(&disk(b, 512)).unwrap();
    assert!(matches!(
        l.table,
        PartitionTable::Gpt {
            header: gpt::GptHeaderCopy::Primary,
            ..
        }
    ));
    assert!(l.warnings[0].contains("backup"), "{:?}", l.warnings);
}

#[test]
fn gpt_both_damaged_is_corrupt() {
    let mut b = gpt_disk(512);
    let n = b.len();
    b[512 + 60] ^= 1;
    b[n - 512 + 60] ^= 1;
    let e = inspect(&disk(b, 512)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(e.structure_name(), Some("primary GPT header"));
    assert_eq!(e.file_offset(), Some(512));
}

#[test]
fn protective_mbr_without_gpt() {
    let mut b = gpt_disk(512);
    let n = b.len();
    b[512..1024].fill(0);
    b[n - 512..].fill(0);
    let l = inspect(&disk(b, 512)).unwrap();
    assert_eq!(l.table, PartitionTable::ProtectiveMbrOnly);
    assert!(l.volumes.is_empty());
}

/// Rewrites the primary header's field at `at` and fixes its CRC.
fn patch_primary(b: &mut [u8], at: usize, value: &[u8]) {
    put(b, 512 + at, value);
    put(b, 512 + 16, &[0; 4]);
    let c = crc(&b[512..512 + 92]);
    put(b, 512 + 16, &c.to_le_bytes());
}

#[test]
fn gpt_hostile_fields_are_errors_not_allocations() {
    let cases: Vec<(usize, Vec<u8>, ErrorKind)> = vec![
        (80, u32::MAX.to_le_bytes().to_vec(), ErrorKind::Unsupported), // entry count
        (84, 100u32.to_le_bytes().to_vec(), ErrorKind::Corrupt),       // entry size
        (
            84,
            (1u32 << 31).to_le_bytes().to_vec(),
            ErrorKind::Unsupported,
        ),
        (12, 4000u32.to_le_bytes().to_vec(), ErrorKind::Corrupt), // header size > sector
        (
            72,
            (u64::MAX / 2).to_le_bytes().to_vec(),
            ErrorKind::Corrupt,
        ), // entries LBA
        (48, u64::MAX.to_le_bytes().to_vec(), ErrorKind::Corrupt), // last usable
        (24, 5u64.to_le_bytes().to_vec(), ErrorKind::Corrupt),    // my LBA
    ];
    for (at, value, kind) in cases {
        let mut b = gpt_disk(512);
        patch_primary(&mut b, at, &value);
        // Also break the backup so the primary's error is reported.
        let n = b.len();
        b[n - 512..].fill(0);
        let e = inspect(&disk(b, 512)).unwrap_err();
        assert_eq!(e.kind(), kind, "field at {at}: {e}");
    }
}

#[test]
fn gpt_entry_ending_before_start_is_corrupt() {
    let mut b = vec![0u8; 4 * MIB];
    write_gpt(&mut b, 512, &[(LINUX_FS, 4000, 3000, "bad")]);
    let e = inspect(&disk(b, 512)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
}

#[test]
fn tiny_disks_do_not_fail() {
    for n in [0usize, 1, 511, 512, 1024, 1536] {
        let l = inspect(&disk(vec![0u8; n], 512)).unwrap();
        assert!(l.volumes.is_empty());
    }
    let mut b = vec![0u8; 1024];
    mbr_entry(&mut b, 0, 0, 0xEE, 1, 1);
    assert!(inspect(&disk(b, 512)).is_ok());
}

#[test]
fn volume_reader_of_a_volume() {
    let l = inspect(&disk(gpt_disk(512), 512)).unwrap();
    let d = disk(gpt_disk(512), 512);
    let r = l.volumes[0].reader(&d).unwrap();
    let mut b = [0u8; 8];
    r.read_at(&mut b, 3).unwrap();
    assert_eq!(&b, b"NTFS    ");
    assert!(r.read_at(&mut b, r.len() - 4).is_err());
}

#[test]
fn layout_serializes() {
    let l = inspect(&disk(gpt_disk(512), 512)).unwrap();
    let j = serde_json::to_value(&l).unwrap();
    assert_eq!(j["table"]["type"], "gpt");
    assert_eq!(j["table"]["disk_guid"], Uuid::from_u128(0xABCD).to_string());
    assert_eq!(j["volumes"][0]["kind"], "ntfs");
    assert_eq!(j["volumes"][0]["partition"]["type_guid"], BASIC_DATA);
    assert_eq!(j["volumes"][0]["partition"]["scheme"], "gpt");
}

#[test]
fn impossible_sector_sizes_are_argument_errors() {
    for sector in [0u32, 100, 256, 1 << 17] {
        let e = inspect(&disk(vec![0u8; MIB], sector)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{sector}");
    }
}

/// Random damage to the tables of small MBR and GPT disks never panics: every outcome is a
/// layout or a typed error, and every volume lies inside the disk.
#[test]
fn damaged_tables_never_panic() {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut gpt = vec![0u8; 256 << 10];
    write_gpt(
        &mut gpt,
        512,
        &[(BASIC_DATA, 40, 200, "a"), (LINUX_FS, 201, 400, "b")],
    );
    let mut mbr = vec![0u8; 256 << 10];
    mbr_entry(&mut mbr, 0, 0, 0x07, 8, 100);
    mbr_entry(&mut mbr, 1, 0, 0x05, 200, 300);
    let mut ebr = vec![0u8; 512];
    mbr_entry(&mut ebr, 0, 0, 0x83, 1, 50);
    mbr_entry(&mut ebr, 1, 0, 0x05, 100, 50);
    put(&mut mbr, 200 * 512, &ebr);
    put(&mut mbr, 300 * 512, &ebr);
    for base in [&gpt, &mbr] {
        for _ in 0..400 {
            let mut b = base.clone();
            for _ in 0..1 + next() % 8 {
                // Damage mostly where the tables are: sector 0-2, the EBRs, the backup.
                let region = match next() % 4 {
                    0 => 0..1536,
                    1 => 200 * 512..201 * 512,
                    2 => 300 * 512..301 * 512,
                    _ => b.len() - 17 * 1024..b.len(),
                };
                let at = region.start + (next() as usize) % region.len();
                b[at] = next() as u8;
            }
            let d = disk(b, 512);
            if let Ok(l) = inspect(&d) {
                for v in &l.volumes {
                    assert!(v.offset + v.length <= d.size());
                }
            }
        }
    }
}

/// Damage to the primary GPT with both CRCs recomputed (so the fields themselves are what
/// the parser must survive): a layout or a typed error, volumes inside the disk.
#[test]
fn hostile_gpt_fields_with_valid_crcs_never_panic() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut base = vec![0u8; 256 << 10];
    write_gpt(
        &mut base,
        512,
        &[(BASIC_DATA, 40, 200, "a"), (LINUX_FS, 201, 400, "b")],
    );
    let n = base.len();
    base[n - 512..].fill(0); // no backup to fall back on
    for _ in 0..2000 {
        let mut b = base.clone();
        for _ in 0..1 + next() % 4 {
            let at = if next() % 2 == 0 {
                512 + 8 + (next() as usize) % 84
            } else {
                1024 + (next() as usize) % 256
            };
            b[at] = next() as u8;
        }
        let entries_crc = crc(&b[1024..1024 + 128 * 128]);
        put(&mut b, 512 + 88, &entries_crc.to_le_bytes());
        put(&mut b, 512 + 16, &[0; 4]);
        let hsize = (u32::from_le_bytes(b[524..528].try_into().unwrap()) as usize).clamp(92, 512);
        let c = crc(&b[512..512 + hsize]);
        put(&mut b, 512 + 16, &c.to_le_bytes());
        let d = disk(b, 512);
        if let Ok(l) = inspect(&d) {
            for v in &l.volumes {
                assert!(v.offset + v.length <= d.size());
            }
        }
    }
}

#[test]
fn gpt_for_the_other_sector_size_is_named() {
    // A GPT written for 4096-byte sectors, read as a 512-byte-sector disk.
    let l = inspect(&disk(gpt_disk(4096), 512)).unwrap();
    assert_eq!(l.table, PartitionTable::ProtectiveMbrOnly);
    assert!(
        l.warnings[1].contains("written for 4096-byte sectors"),
        "{:?}",
        l.warnings
    );
    // And the reverse.
    let l = inspect(&disk(gpt_disk(512), 4096)).unwrap();
    assert_eq!(l.table, PartitionTable::ProtectiveMbrOnly);
    assert!(
        l.warnings[1].contains("written for 512-byte sectors"),
        "{:?}",
        l.warnings
    );
}
