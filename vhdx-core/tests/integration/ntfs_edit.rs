//! A test helper that edits NTFS MFT records in a volume image made by mkntfs/ntfscp, to give
//! chosen files the attributes ntfs-3g cannot set offline: sparse, compressed, encrypted
//! (the `$STANDARD_INFORMATION` file attribute bits and the `$DATA` attribute header
//! flags) and a reparse point (a resident `$REPARSE_POINT` attribute is inserted). The
//! record is found by scanning the MFT for its `$FILE_NAME`; the update sequence array
//! (fixups) is undone before the edit and redone after it, with a new sequence number,
//! as NTFS does on every write. ntfsinfo confirms what ntfs-3g sees.
#![allow(dead_code)]

/// `$STANDARD_INFORMATION` bits.
pub const SI_SPARSE: u32 = 0x200;
pub const SI_REPARSE: u32 = 0x400;
pub const SI_COMPRESSED: u32 = 0x800;
pub const SI_ENCRYPTED: u32 = 0x4000;
/// `$DATA` attribute header flags.
pub const ATTR_COMPRESSED: u16 = 0x0001;
pub const ATTR_ENCRYPTED: u16 = 0x4000;
pub const ATTR_SPARSE: u16 = 0x8000;

const AT_STANDARD_INFORMATION: u32 = 0x10;
const AT_FILE_NAME: u32 = 0x30;
const AT_DATA: u32 = 0x80;
const AT_REPARSE_POINT: u32 = 0xC0;
const AT_END: u32 = 0xFFFF_FFFF;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// (MFT byte offset, record size) from the boot sector.
fn geometry(vol: &[u8]) -> (usize, usize) {
    assert_eq!(&vol[3..11], b"NTFS    ");
    let cluster = usize::from(u16_at(vol, 11)) * usize::from(vol[13]);
    let mft = u64_at(vol, 0x30) as usize * cluster;
    let raw = vol[0x40] as i8;
    let record = if raw < 0 {
        1usize << (-raw)
    } else {
        raw as usize * cluster
    };
    (mft, record)
}

/// Undoes the fixups of a record in place (panics when they do not match: a torn record).
fn unfix(rec: &mut [u8]) {
    let usa = usize::from(u16_at(rec, 4));
    let count = usize::from(u16_at(rec, 6));
    let usn = u16_at(rec, usa);
    for i in 1..count {
        let end = i * 512 - 2;
        assert_eq!(u16_at(rec, end), usn, "fixup mismatch in sector {i}");
        let orig = u16_at(rec, usa + 2 * i);
        put(rec, end, &orig.to_le_bytes());
    }
}

/// Applies the fixups with the next update sequence number.
fn refix(rec: &mut [u8]) {
    let usa = usize::from(u16_at(rec, 4));
    let count = usize::from(u16_at(rec, 6));
    let mut usn = u16_at(rec, usa).wrapping_add(1);
    if usn == 0 || usn == 0xFFFF {
        usn = 1;
    }
    put(rec, usa, &usn.to_le_bytes());
    for i in 1..count {
        let end = i * 512 - 2;
        let orig = u16_at(rec, end);
        put(rec, usa + 2 * i, &orig.to_le_bytes());
        put(rec, end, &usn.to_le_bytes());
    }
}

/// Offsets of the attributes of an unfixed record: (offset, type).
fn attributes(rec: &[u8]) -> Vec<(usize, u32)> {
    let mut out = Vec::new();
    let mut at = usize::from(u16_at(rec, 0x14));
    loop {
        let ty = u32_at(rec, at);
        if ty == AT_END {
            return out;
        }
        out.push((at, ty));
        let len = u32_at(rec, at + 4) as usize;
        assert!(len >= 16 && at + len < rec.len(), "bad attribute length");
        at += len;
    }
}

/// The file name in a resident `$FILE_NAME` attribute at `at`.
fn file_name(rec: &[u8], at: usize) -> String {
    let v = at + usize::from(u16_at(rec, at + 0x14));
    let n = usize::from(rec[v + 0x40]);
    let units: Vec<u16> = (0..n).map(|i| u16_at(rec, v + 0x42 + 2 * i)).collect();
    String::from_utf16_lossy(&units)
}

/// Byte offset (in the volume) of the in-use MFT record whose `$FILE_NAME` is `name`.
pub fn find_record(vol: &[u8], name: &str) -> usize {
    let (mft, size) = geometry(vol);
    for n in 0..4096usize {
        let at = mft + n * size;
        if at + size > vol.len() {
            break;
        }
        let mut rec = vol[at..at + size].to_vec();
        if &rec[0..4] != b"FILE" || u16_at(&rec, 0x16) & 1 == 0 {
            continue;
        }
        unfix(&mut rec);
        for (a, ty) in attributes(&rec) {
            if ty == AT_FILE_NAME && file_name(&rec, a) == name {
                return at;
            }
        }
    }
    panic!("no MFT record named {name:?}");
}

/// Inserts `n` zero bytes at `at` of an unfixed record, updating bytes-in-use.
fn insert(rec: &mut [u8], at: usize, n: usize) {
    let used = u32_at(rec, 0x18) as usize;
    let alloc = u32_at(rec, 0x1C) as usize;
    assert!(used + n <= alloc, "the record has no room");
    rec.copy_within(at..used, at + n);
    rec[at..at + n].fill(0);
    put(rec, 0x18, &((used + n) as u32).to_le_bytes());
}

/// Edits the record of `name` in the volume bytes: ORs `si` into the `$STANDARD_INFORMATION`
/// file attributes and `data` into the unnamed `$DATA` header flags. A non-resident `$DATA`
/// that becomes sparse or compressed gets its 8-byte compressed-size field (the header
/// grows from 0x40 to 0x48 bytes, as NTFS lays such attributes out); compressed also sets
/// the compression unit (16 clusters).
pub fn set_flags(vol: &mut [u8], name: &str, si: u32, data: u16) {
    let at = find_record(vol, name);
    let size = geometry(vol).1;
    let mut rec = vol[at..at + size].to_vec();
    unfix(&mut rec);
    for (a, ty) in attributes(&rec) {
        match ty {
            AT_STANDARD_INFORMATION => {
                let v = a + usize::from(u16_at(&rec, a + 0x14)) + 0x20;
                let old = u32_at(&rec, v);
                put(&mut rec, v, &(old | si).to_le_bytes());
            }
            AT_DATA if rec[a + 9] == 0 => {
                let old = u16_at(&rec, a + 12);
                put(&mut rec, a + 12, &(old | data).to_le_bytes());
                let non_resident = rec[a + 8] != 0;
                let needs_size = data & (ATTR_SPARSE | ATTR_COMPRESSED) != 0;
                if non_resident && needs_size && u16_at(&rec, a + 0x20) == 0x40 {
                    insert(&mut rec, a + 0x40, 8);
                    let allocated = u64_at(&rec, a + 0x28);
                    put(&mut rec, a + 0x40, &allocated.to_le_bytes());
                    put(&mut rec, a + 0x20, &0x48u16.to_le_bytes());
                    let len = u32_at(&rec, a + 4) + 8;
                    put(&mut rec, a + 4, &len.to_le_bytes());
                }
                if non_resident && data & ATTR_COMPRESSED != 0 {
                    rec[a + 0x22] = 4;
                }
            }
            _ => {}
        }
    }
    refix(&mut rec);
    vol[at..at + size].copy_from_slice(&rec);
}

/// Gives the record of `name` a resident `$REPARSE_POINT` attribute with `tag` (and 16
/// bytes of reparse data) and sets FILE_ATTRIBUTE_REPARSE_POINT.
pub fn add_reparse_point(vol: &mut [u8], name: &str, tag: u32) {
    set_flags(vol, name, SI_REPARSE, 0);
    let at = find_record(vol, name);
    let size = geometry(vol).1;
    let mut rec = vol[at..at + size].to_vec();
    unfix(&mut rec);
    let attrs = attributes(&rec);
    let pos = attrs
        .iter()
        .find(|(_, ty)| *ty > AT_REPARSE_POINT)
        .map(|(a, _)| *a)
        .unwrap_or_else(|| {
            let (last, _) = *attrs.last().unwrap();
            last + u32_at(&rec, last + 4) as usize
        });
    let value_len = 8 + 16;
    let len = 0x18 + value_len;
    insert(&mut rec, pos, len);
    let instance = u16_at(&rec, 0x28);
    put(&mut rec, 0x28, &(instance + 1).to_le_bytes());
    put(&mut rec, pos, &AT_REPARSE_POINT.to_le_bytes());
    put(&mut rec, pos + 4, &(len as u32).to_le_bytes());
    put(&mut rec, pos + 10, &0x18u16.to_le_bytes()); // name offset (no name)
    put(&mut rec, pos + 14, &instance.to_le_bytes());
    put(&mut rec, pos + 0x10, &(value_len as u32).to_le_bytes());
    put(&mut rec, pos + 0x14, &0x18u16.to_le_bytes());
    put(&mut rec, pos + 0x18, &tag.to_le_bytes());
    put(&mut rec, pos + 0x1C, &16u16.to_le_bytes());
    for i in 0..16 {
        rec[pos + 0x20 + i] = i as u8 + 1;
    }
    refix(&mut rec);
    vol[at..at + size].copy_from_slice(&rec);
}
