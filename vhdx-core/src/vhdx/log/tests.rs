//! Unit tests of the log: crafted entries and sequences.

use super::*;
use crate::storage::MemStorage;
use crate::ErrorKind;

const LOG_OFF: u64 = MIB;
const LOG_LEN: u64 = MIB;
const GUID: Guid = Guid([0x5A; 16]);

/// A 4 MiB "file" with a log at 1 MiB (1 MiB long) and a current header naming it.
fn file() -> MemStorage {
    let m = MemStorage::new(vec![0u8; 4 << 20]);
    m.write_all_at(b"vhdxfile", 0).unwrap();
    let h = header(GUID);
    m.write_all_at(h.as_bytes(), crate::format::vhdx::header::OFFSETS[0])
        .unwrap();
    m
}

fn header(guid: Guid) -> Header {
    let mut h = Header::new_zeroed();
    h.signature = crate::format::vhdx::header::SIGNATURE;
    h.version.set(1);
    h.sequence_number.set(7);
    h.log_guid = guid;
    h.log_offset.set(LOG_OFF);
    h.log_length.set(LOG_LEN as u32);
    let crc = Header::compute_checksum(h.as_bytes().try_into().unwrap());
    h.checksum.set(crc);
    h
}

fn geom(m: &MemStorage) -> Geometry {
    Geometry {
        offset: LOG_OFF,
        length: LOG_LEN,
        guid: GUID,
        file_len: m.len().unwrap(),
    }
}

/// Writes `entry` at log position `pos`, wrapping at the end of the log.
fn put(m: &MemStorage, pos: u64, entry: &[u8]) {
    for (i, s) in entry.chunks(fl::SECTOR).enumerate() {
        let p = (pos + i as u64 * SECTOR) % LOG_LEN;
        m.write_all_at(s, LOG_OFF + p).unwrap();
    }
}

fn sector(fill: u8) -> [u8; fl::SECTOR] {
    let mut s = [fill; fl::SECTOR];
    s[..8].copy_from_slice(b"LEADING!");
    s[4092..].copy_from_slice(b"TAIL");
    s
}

/// An entry with one data write of `fill` at 3 MiB + 4 KiB·`seq % 16`.
fn entry(seq: u64, tail: u64, fill: u8) -> Vec<u8> {
    let s = sector(fill);
    encode_entry(
        GUID,
        seq,
        tail as u32,
        4 << 20,
        4 << 20,
        &[LogWrite::Data {
            file_offset: (3 << 20) + (seq % 16) * SECTOR,
            sector: &s,
        }],
    )
    .unwrap()
}

fn seqs(m: &MemStorage) -> Option<Vec<(u64, u64)>> {
    find_sequence(m, &geom(m)).unwrap().map(|s| {
        s.entries
            .iter()
            .map(|e| (e.position, e.sequence_number))
            .collect()
    })
}

#[test]
fn empty_log_has_no_sequence() {
    let m = file();
    assert_eq!(seqs(&m), None);
}

#[test]
fn single_and_chained_entries() {
    let m = file();
    put(&m, 0, &entry(10, 0, 1));
    assert_eq!(seqs(&m), Some(vec![(0, 10)]));
    put(&m, 8192, &entry(11, 0, 2));
    put(&m, 16384, &entry(12, 0, 3));
    assert_eq!(seqs(&m), Some(vec![(0, 10), (8192, 11), (16384, 12)]));
    // The head's tail may also name a later entry of the run.
    put(&m, 16384, &entry(12, 8192, 3));
    assert_eq!(seqs(&m), Some(vec![(8192, 11), (16384, 12)]));
}

#[test]
fn sequence_wrapping_around_the_log_end() {
    let m = file();
    let a = LOG_LEN - 3 * SECTOR;
    put(&m, a, &entry(5, a, 1));
    // A 12 KiB entry in the last sector and the first two (zero descriptor, two data).
    let (s1, s2) = (sector(7), sector(8));
    let big = encode_entry(
        GUID,
        6,
        a as u32,
        4 << 20,
        4 << 20,
        &[
            LogWrite::Data {
                file_offset: 3 << 20,
                sector: &s1,
            },
            LogWrite::Zero {
                file_offset: (3 << 20) + 65536,
                length: 65536,
            },
            LogWrite::Data {
                file_offset: (3 << 20) + 4096,
                sector: &s2,
            },
        ],
    )
    .unwrap();
    assert_eq!(big.len(), 3 * fl::SECTOR);
    put(&m, LOG_LEN - SECTOR, &big);
    put(&m, 2 * SECTOR, &entry(7, a, 3));
    assert_eq!(
        seqs(&m),
        Some(vec![(a, 5), (LOG_LEN - SECTOR, 6), (2 * SECTOR, 7)])
    );
}

#[test]
fn incomplete_run_is_not_a_sequence() {
    let m = file();
    // Head 21's tail names a position outside its run.
    put(&m, 0, &entry(20, 0x10000, 1));
    put(&m, 8192, &entry(21, 0x10000, 2));
    assert_eq!(seqs(&m), None);
    // An older complete sequence elsewhere wins over the higher incomplete one.
    put(&m, 0x20000, &entry(5, 0x20000, 3));
    assert_eq!(seqs(&m), Some(vec![(0x20000, 5)]));
}

#[test]
fn bad_crc_in_the_middle_cuts_the_run() {
    let m = file();
    put(&m, 0, &entry(10, 0, 1));
    let mut bad = entry(11, 0, 2);
    bad[fl::SECTOR + 100] ^= 1; // a data byte: only the CRC catches it
    put(&m, 8192, &bad);
    put(&m, 16384, &entry(12, 0, 3));
    // 10 alone is complete; 12 alone names a tail outside its run.
    assert_eq!(seqs(&m), Some(vec![(0, 10)]));
    let g = geom(&m);
    assert_eq!(
        read_entry(&m, &g, 8192).unwrap().err(),
        Some("bad CRC-32C checksum")
    );
}

#[test]
fn newest_complete_sequence_wins_over_stale_ones() {
    let m = file();
    put(&m, 0, &entry(30, 0, 1));
    put(&m, 8192, &entry(31, 0, 2));
    put(&m, 0x80000, &entry(3, 0x80000, 3));
    put(&m, 0x82000, &entry(4, 0x80000, 4));
    assert_eq!(seqs(&m), Some(vec![(0, 30), (8192, 31)]));
    // The same with the newer sequence later in the log.
    let m = file();
    put(&m, 0, &entry(3, 0, 1));
    put(&m, 0x80000, &entry(40, 0x80000, 3));
    assert_eq!(seqs(&m), Some(vec![(0x80000, 40)]));
}

#[test]
fn entries_with_another_log_guid_are_ignored() {
    let m = file();
    let s = sector(1);
    let other = encode_entry(
        Guid([1; 16]),
        100,
        0,
        0,
        0,
        &[LogWrite::Data {
            file_offset: 3 << 20,
            sector: &s,
        }],
    )
    .unwrap();
    put(&m, 0, &other);
    assert_eq!(seqs(&m), None);
    assert_eq!(
        read_entry(&m, &geom(&m), 0).unwrap().err(),
        Some("log GUID differs from the header's")
    );
    put(&m, 0x10000, &entry(50, 0x10000, 2));
    assert_eq!(seqs(&m), Some(vec![(0x10000, 50)]));
}

#[test]
fn invalid_descriptors_are_rejected() {
    let g = Geometry {
        offset: LOG_OFF,
        length: LOG_LEN,
        guid: GUID,
        file_len: 4 << 20,
    };
    let s = sector(1);
    let one = |w: LogWrite<'_>| encode_entry(GUID, 9, 0, 0, 4 << 20, &[w]).unwrap();
    let reason = |b: &[u8]| validate_entry(b, 0, &g).err();
    // Into the headers.
    let b = one(LogWrite::Data {
        file_offset: 64 * 1024,
        sector: &s,
    });
    assert_eq!(
        reason(&b),
        Some("descriptor targets the file identifier or the headers")
    );
    // Into the log itself.
    let b = one(LogWrite::Zero {
        file_offset: LOG_OFF + LOG_LEN - SECTOR,
        length: 2 * SECTOR,
    });
    assert_eq!(reason(&b), Some("descriptor targets the log itself"));
    // Past both the file end and LastFileOffset.
    let b = one(LogWrite::Zero {
        file_offset: 4 << 20,
        length: SECTOR,
    });
    assert_eq!(
        reason(&b),
        Some("descriptor targets bytes past LastFileOffset and the file end")
    );
    // Overflowing range.
    let b = one(LogWrite::Zero {
        file_offset: u64::MAX - 4095,
        length: 1 << 20,
    });
    assert_eq!(reason(&b), Some("descriptor target range overflows"));
    // Data sector sequence halves.
    let mut b = one(LogWrite::Data {
        file_offset: 3 << 20,
        sector: &s,
    });
    b[fl::SECTOR + 4] = 1; // SequenceHigh
    assert_eq!(reason(&b), Some("data sector sequence number mismatch"));
    // Descriptor count larger than the entry.
    let mut b = one(LogWrite::Data {
        file_offset: 3 << 20,
        sector: &s,
    });
    b[24..28].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(
        reason(&b),
        Some("descriptor count does not fit in the entry")
    );
    b[24..28].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(reason(&b), Some("unknown descriptor signature"));
    // Unaligned zero length.
    let mut b = one(LogWrite::Zero {
        file_offset: 3 << 20,
        length: SECTOR,
    });
    b[64 + 8] = 1;
    assert_eq!(
        reason(&b),
        Some("zero descriptor length not a multiple of 4 KiB")
    );
}

#[test]
fn split_sequence_numbers_above_32_bits() {
    let m = file();
    let seq = (7u64 << 32) | 3;
    put(&m, 0, &entry(seq, 0, 1));
    put(&m, 8192, &entry(seq + 1, 0, 2));
    assert_eq!(seqs(&m), Some(vec![(0, seq), (8192, seq + 1)]));
}

#[test]
fn mutated_entries_never_panic() {
    let g = Geometry {
        offset: LOG_OFF,
        length: LOG_LEN,
        guid: GUID,
        file_len: 4 << 20,
    };
    let base = entry(77, 0, 9);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..20_000 {
        let mut b = base.clone();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % 128) as usize; // header and descriptor bytes mostly
            let i = if x & 1 == 0 {
                i
            } else {
                (x as usize >> 8) % b.len()
            };
            b[i] = (x >> 32) as u8;
        }
        let _ = validate_entry(&b, 0, &g);
    }
    // Garbage entry headers in a whole log.
    let m = file();
    for p in (0..LOG_LEN).step_by(fl::SECTOR) {
        let mut h = base[..64].to_vec();
        h[8..12].copy_from_slice(&((p as u32 % 7 + 1) * 4096).to_le_bytes());
        h[16..24].copy_from_slice(&(p / 4096 + 1).to_le_bytes());
        h[12..16].copy_from_slice(&(p as u32).to_le_bytes());
        m.write_all_at(&h, LOG_OFF + p).unwrap();
    }
    let _ = find_sequence(&m, &geom(&m)).unwrap();
}

fn read(s: &dyn Storage, off: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    s.read_exact_at(&mut b, off).unwrap();
    b
}

/// A two-entry sequence: a data write, a zero range, and growth to 6 MiB.
fn dirty_file() -> MemStorage {
    let m = file();
    m.write_all_at(&[0xEE; 0x20000], 3 << 20).unwrap();
    let s = sector(0x42);
    let e1 = encode_entry(
        GUID,
        1,
        0,
        4 << 20,
        4 << 20,
        &[LogWrite::Data {
            file_offset: (3 << 20) + 4096,
            sector: &s,
        }],
    )
    .unwrap();
    let e2 = encode_entry(
        GUID,
        2,
        0,
        4 << 20,
        (5 << 20) + 1,
        &[LogWrite::Zero {
            file_offset: (3 << 20) + 0x10000,
            length: 0x8000,
        }],
    )
    .unwrap();
    put(&m, 0, &e1);
    put(&m, e1.len() as u64, &e2);
    m
}

fn check_replayed(s: &dyn Storage) {
    assert_eq!(s.len().unwrap(), 6 << 20);
    assert_eq!(read(s, 3 << 20, 4096), vec![0xEE; 4096]);
    assert_eq!(read(s, (3 << 20) + 4096, 4096), sector(0x42).to_vec());
    assert_eq!(read(s, (3 << 20) + 0x10000, 0x8000), vec![0; 0x8000]);
    assert_eq!(read(s, (3 << 20) + 0x18000, 0x8000), vec![0xEE; 0x8000]);
    assert_eq!(read(s, 4 << 20, 4096), vec![0; 4096]);
}

#[test]
fn replay_in_memory_leaves_the_file_alone() {
    let m = dirty_file();
    let before = m.to_vec();
    let base: Arc<dyn Storage> = Arc::new(MemStorage::new(before.clone()));
    let mut findings = Vec::new();
    let (s, info) = open_log(base.clone(), &header(GUID), &mut findings).unwrap();
    assert_eq!(info.state, "dirty");
    assert_eq!(info.entries, 2);
    assert!(info.replayed_in_memory);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].severity, Severity::Warning);
    assert!(findings[0].message.contains("2 entries awaits replay"));
    assert!(findings[0].message.contains("replayed in memory"));
    check_replayed(&*s);
    assert_eq!(read(&*base, 0, before.len()), before);
}

#[test]
fn replay_onto_the_file_then_clean() {
    let m = dirty_file();
    let out = replay_onto_file(&m).unwrap();
    assert_eq!(out.state, "dirty");
    assert_eq!(out.entries, 2);
    assert_eq!(out.file_len_after, 6 << 20);
    check_replayed(&m);
    let mut findings = Vec::new();
    let hs = headers::read_headers(&m, &mut findings).unwrap();
    assert!(hs.current.log_guid.is_nil());
    assert_eq!(hs.current.sequence_number.get(), 7 + 4);
    let other = hs.other.unwrap();
    assert!(other.log_guid.is_nil());
    assert_eq!(other.sequence_number.get(), 7 + 3);
    assert_eq!(Some(hs.current.file_write_guid), out.file_write_guid);
    // A second replay has nothing to do.
    let again = replay_onto_file(&m).unwrap();
    assert_eq!(again.state, "clean");
    assert_eq!(again.file_write_guid, None);
}

#[test]
fn invalid_log_opens_with_a_warning_and_replays_nothing() {
    let m = file();
    let base: Arc<dyn Storage> = Arc::new(MemStorage::new(m.to_vec()));
    let mut findings = Vec::new();
    let (s, info) = open_log(base, &header(GUID), &mut findings).unwrap();
    assert_eq!(info.state, "invalid");
    assert!(!info.replayed_in_memory);
    assert_eq!(findings[0].severity, Severity::Warning);
    assert_eq!(s.len().unwrap(), 4 << 20);
    // Onto the file: the LogGuid is cleared.
    let out = replay_onto_file(&m).unwrap();
    assert_eq!(out.state, "invalid");
    let hs = headers::read_headers(&m, &mut findings).unwrap();
    assert!(hs.current.log_guid.is_nil());
}

#[test]
fn truncated_file_is_an_error() {
    let m = file();
    let s = sector(1);
    let e = encode_entry(
        GUID,
        1,
        0,
        8 << 20,
        8 << 20,
        &[LogWrite::Data {
            file_offset: 3 << 20,
            sector: &s,
        }],
    )
    .unwrap();
    put(&m, 0, &e);
    let base: Arc<dyn Storage> = Arc::new(MemStorage::new(m.to_vec()));
    let err = open_log(base, &header(GUID), &mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn misplaced_logs_are_errors() {
    let m = file();
    let base: Arc<dyn Storage> = Arc::new(MemStorage::new(m.to_vec()));
    type Case = (&'static str, fn(&mut Header));
    let cases: [Case; 5] = [
        ("offset 0", |h| h.log_offset.set(0)),
        ("length 0", |h| h.log_length.set(0)),
        ("unaligned", |h| h.log_offset.set(MIB + 4096)),
        ("past the end", |h| h.log_offset.set(4 << 20)),
        ("version", |h| h.log_version.set(1)),
    ];
    for (what, f) in cases {
        let mut h = header(GUID);
        f(&mut h);
        let r = open_log(base.clone(), &h, &mut Vec::new());
        assert!(r.is_err(), "{what}");
    }
    // A nil LogGuid reads nothing, whatever the placement.
    let mut h = header(Guid::default());
    h.log_offset.set(0);
    let (_, info) = open_log(base, &h, &mut Vec::new()).unwrap();
    assert_eq!(info.state, "clean");
}
