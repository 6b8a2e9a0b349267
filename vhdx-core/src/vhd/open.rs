//! Opening a VHD: choosing the footer copy, validating the footer and the dynamic header
//! before anything is allocated (FORMATS.md D, VHD 1–6), and decoding the parent locators.

use super::bat::BatReader;
use crate::chain::{Locator, LocatorKind};
use crate::error::{Error, ErrorKind, Result};
use crate::format::vhd::dynamic_header::{self as dh, DynamicHeader};
use crate::format::vhd::footer::{self as ft, Footer};
use crate::format::vhd::parent_locator as pl;
use crate::format::vhd::{bitmap_bytes, SECTOR};
use crate::report::{Finding, Severity};
use crate::storage::{read_bytes, read_struct, Storage};
use zerocopy::{FromZeros, IntoBytes};

/// Largest BlockSize accepted: bounds every bitmap and block buffer (FORMATS.md D.VHD.4,
/// a safety policy; real writers use 512 KiB and 2 MiB).
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Largest parent locator accepted (FORMATS.md D.VHD.6).
pub const MAX_LOCATOR_LENGTH: u32 = 64 << 10;

/// Which footer copy an image is read through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FooterCopy {
    /// The footer at the end of the file (at EOF−512, or EOF−511 for a legacy footer).
    End,
    /// The copy at offset 0 (dynamic and differencing files only).
    Start,
}

/// One footer copy as found in the file.
#[derive(Debug, Clone, Copy)]
pub struct FooterRead {
    /// The footer (a legacy 511-byte footer is completed with a zero byte).
    pub footer: Footer,
    /// Its file offset.
    pub offset: u64,
    /// Whether it is the 511-byte footer of pre-2004 Virtual PC.
    pub legacy: bool,
    /// Whether its checksum is valid.
    pub checksum_ok: bool,
}

/// Result of footer selection.
#[derive(Debug, Clone, Copy)]
pub struct Footers {
    /// The footer in use.
    pub used: FooterRead,
    /// Which copy it is.
    pub which: FooterCopy,
    /// The end footer, when it has the `conectix` cookie.
    pub end: Option<FooterRead>,
}

/// Whether `[start, start + n)` lies inside a file of `len` bytes (without overflow).
fn fits(start: u64, n: u64, len: u64) -> bool {
    matches!(start.checked_add(n), Some(end) if end <= len)
}

fn type_ok(t: u32) -> bool {
    matches!(
        t,
        ft::DISK_TYPE_FIXED | ft::DISK_TYPE_DYNAMIC | ft::DISK_TYPE_DIFFERENCING
    )
}

fn sparse_type(t: u32) -> bool {
    matches!(t, ft::DISK_TYPE_DYNAMIC | ft::DISK_TYPE_DIFFERENCING)
}

fn footer_at(storage: &dyn Storage, offset: u64, size: usize) -> Result<Option<FooterRead>> {
    let mut f = Footer::new_zeroed();
    let buf = f
        .as_mut_bytes()
        .get_mut(..size)
        .ok_or_else(|| Error::corrupt("VHD footer", offset, "internal: footer size"))?;
    storage
        .read_exact_at(buf, offset)
        .map_err(|e| Error::read_failed("VHD footer", offset, e))?;
    if !f.cookie_ok() {
        return Ok(None);
    }
    Ok(Some(FooterRead {
        checksum_ok: f.checksum_ok(),
        footer: f,
        offset,
        legacy: size != ft::SIZE,
    }))
}

fn checksum_finding(r: &FooterRead, which: &str) -> Finding {
    Finding::new(
        Severity::Warning,
        "VHD footer",
        Some(r.offset),
        format!(
            "{which} footer checksum does not match (stored {:#010x}, computed {:#010x})",
            r.footer.checksum.get(),
            {
                let mut b = [0u8; ft::SIZE];
                b.copy_from_slice(r.footer.as_bytes());
                Footer::compute_checksum(&b)
            }
        ),
    )
}

/// Chooses the footer: the end copy, falling back to the copy at offset 0 for dynamic and
/// differencing files when the end copy is missing, unusable or fails its checksum while the
/// start copy is valid. Offset 0 is never probed first, so a fixed VHD whose payload begins
/// with another VHD's footer is read correctly.
pub fn select_footer(
    storage: &dyn Storage,
    len: u64,
    findings: &mut Vec<Finding>,
) -> Result<Footers> {
    if len < ft::LEGACY_SIZE as u64 {
        return Err(Error::new(
            ErrorKind::NotADisk,
            format!("the file has {len} bytes: too small for a VHD footer"),
        )
        .structure("VHD footer")
        .offset(0));
    }
    let mut end = None;
    if len >= ft::SIZE as u64 {
        end = footer_at(storage, len - ft::SIZE as u64, ft::SIZE)?;
    }
    if end.is_none() {
        end = footer_at(storage, len - ft::LEGACY_SIZE as u64, ft::LEGACY_SIZE)?;
        if let Some(e) = &end {
            findings.push(Finding::new(
                Severity::Info,
                "VHD footer",
                Some(e.offset),
                "legacy 511-byte footer (pre-2004 Virtual PC)",
            ));
        }
    }
    // The start copy only exists apart from the end footer in files of at least two sectors.
    let start = if len >= 2 * ft::SIZE as u64 {
        footer_at(storage, 0, ft::SIZE)?.filter(|s| sparse_type(s.footer.disk_type.get()))
    } else {
        None
    };
    let start_valid = start.filter(|s| s.checksum_ok);
    let pick_start = |s: FooterRead, why: String, findings: &mut Vec<Finding>| {
        findings.push(Finding::new(
            Severity::Warning,
            "VHD footer",
            end.map(|e| e.offset)
                .or(Some(len.saturating_sub(ft::SIZE as u64))),
            why,
        ));
        if !s.checksum_ok {
            findings.push(checksum_finding(&s, "start"));
        }
        Footers {
            used: s,
            which: FooterCopy::Start,
            end,
        }
    };
    match end {
        Some(e) if type_ok(e.footer.disk_type.get()) => {
            if e.checksum_ok {
                return Ok(Footers {
                    used: e,
                    which: FooterCopy::End,
                    end,
                });
            }
            // A fixed footer never falls back: its offset 0 is guest data.
            if e.footer.disk_type.get() != ft::DISK_TYPE_FIXED {
                if let Some(s) = start_valid {
                    return Ok(pick_start(
                        s,
                        "the end footer's checksum does not match; using the valid copy at offset 0"
                            .into(),
                        findings,
                    ));
                }
            }
            findings.push(checksum_finding(&e, "end"));
            Ok(Footers {
                used: e,
                which: FooterCopy::End,
                end,
            })
        }
        Some(e) => {
            let t = e.footer.disk_type.get();
            if let Some(s) = start_valid.or(start.filter(|_| !e.checksum_ok)) {
                return Ok(pick_start(
                    s,
                    format!(
                        "the end footer is unusable (disk type {t}); using the copy at offset 0"
                    ),
                    findings,
                ));
            }
            let err = if matches!(t, 0 | 1 | 5 | 6) {
                Error::unsupported("VHD footer", e.offset + 60, "unsupported disk type")
            } else {
                Error::corrupt("VHD footer", e.offset + 60, "invalid disk type")
            };
            Err(err
                .expected("2 (fixed), 3 (dynamic) or 4 (differencing)")
                .found(t))
        }
        None => match start {
            Some(s) => Ok(pick_start(
                s,
                "no footer at the end of the file (missing or damaged, e.g. a crash while a block \
                 was allocated); using the copy at offset 0"
                    .into(),
                findings,
            )),
            None => Err(Error::new(
                ErrorKind::NotADisk,
                "not a VHD: no `conectix` footer at the end of the file or at offset 0",
            )
            .structure("VHD footer")
            .offset(len.saturating_sub(ft::SIZE as u64))),
        },
    }
}

/// The validated dynamic-disk part of an image.
#[derive(Debug)]
pub struct Sparse {
    /// The dynamic header.
    pub header: DynamicHeader,
    /// Its file offset.
    pub header_offset: u64,
    /// Whether its checksum is valid.
    pub header_checksum_ok: bool,
    /// Data bytes per block.
    pub block_size: u32,
    /// Bitmap bytes before each block.
    pub bitmap_bytes: u64,
    /// Blocks the virtual size spans (≤ MaxTableEntries).
    pub blocks: u64,
    /// The BAT.
    pub bat: BatReader,
}

/// Reads and validates the dynamic header of a file of `len` bytes and virtual `size`.
pub fn read_sparse(
    storage: &dyn Storage,
    len: u64,
    footer: &FooterRead,
    size: u64,
    findings: &mut Vec<Finding>,
) -> Result<Sparse> {
    let f = &footer.footer;
    let at = f.data_offset.get();
    if !fits(at, dh::SIZE as u64, len) {
        return Err(Error::corrupt(
            "VHD footer",
            footer.offset + 16,
            "the dynamic header lies outside the file",
        )
        .expected(format!("DataOffset + 1024 ≤ file length {len}"))
        .found(format!("DataOffset {at:#x}")));
    }
    let h: DynamicHeader = read_struct(storage, at, "VHD dynamic header")?;
    if h.cookie != dh::COOKIE {
        return Err(
            Error::corrupt("VHD dynamic header", at, "bad dynamic header cookie")
                .expected("`cxsparse`")
                .found(format!("{:02x?}", h.cookie)),
        );
    }
    let header_checksum_ok = h.checksum_ok();
    if !header_checksum_ok {
        let mut b = [0u8; dh::SIZE];
        b.copy_from_slice(h.as_bytes());
        findings.push(Finding::new(
            Severity::Warning,
            "VHD dynamic header",
            Some(at),
            format!(
                "dynamic header checksum does not match (stored {:#010x}, computed {:#010x})",
                h.checksum.get(),
                DynamicHeader::compute_checksum(&b)
            ),
        ));
    }
    if h.header_version.get() != dh::HEADER_VERSION {
        return Err(Error::unsupported(
            "VHD dynamic header",
            at + 24,
            "unsupported dynamic header version",
        )
        .expected("0x00010000")
        .found(format!("{:#010x}", h.header_version.get())));
    }
    let bs = h.block_size.get();
    if bs < SECTOR as u32 || !bs.is_power_of_two() {
        return Err(Error::corrupt(
            "VHD dynamic header",
            at + 32,
            "BlockSize is not a power of two of at least 512 bytes",
        )
        .found(bs));
    }
    if bs > MAX_BLOCK_SIZE {
        return Err(Error::unsupported(
            "VHD dynamic header",
            at + 32,
            "BlockSize is larger than this reader accepts",
        )
        .expected(format!("at most {MAX_BLOCK_SIZE}"))
        .found(bs));
    }
    let mte = u64::from(h.max_table_entries.get());
    // u32 × u32 cannot overflow u64.
    if mte * u64::from(bs) < size {
        return Err(Error::corrupt(
            "VHD dynamic header",
            at + 28,
            "the BAT does not cover the virtual size",
        )
        .expected(format!(
            "MaxTableEntries ≥ {} for {size} bytes in {bs}-byte blocks",
            size.div_ceil(u64::from(bs))
        ))
        .found(mte));
    }
    let table = h.table_offset.get();
    if !fits(table, mte * 4, len) {
        return Err(Error::corrupt(
            "VHD dynamic header",
            at + 16,
            "the BAT lies outside the file",
        )
        .expected(format!("TableOffset + 4 × {mte} ≤ file length {len}"))
        .found(format!("TableOffset {table:#x}")));
    }
    Ok(Sparse {
        header: h,
        header_offset: at,
        header_checksum_ok,
        block_size: bs,
        bitmap_bytes: bitmap_bytes(bs),
        blocks: size.div_ceil(u64::from(bs)),
        bat: super::bat::bat_reader(table, mte),
    })
}

/// Whether a Windows path is absolute or drive-qualified (`C:…`, `\…`, `/…`).
fn has_root(p: &str) -> bool {
    let b = p.as_bytes();
    p.starts_with('\\')
        || p.starts_with('/')
        || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
}

/// Decodes the 512-byte UTF-16 big-endian ParentUnicodeName (NUL-terminated or padded).
pub fn parent_unicode_name(h: &DynamicHeader) -> String {
    crate::format::utf16::decode_be(&h.parent_unicode_name)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Turns a MacX `file://` URL into a path and its kind.
fn macx_path(url: &str) -> Option<(String, LocatorKind)> {
    let rest = url.strip_prefix("file://")?;
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    let path = percent_decode(rest);
    if path.is_empty() {
        return None;
    }
    let kind = if path.starts_with('/') {
        LocatorKind::Absolute
    } else {
        LocatorKind::Relative
    };
    Some((path, kind))
}

/// Decodes the parent locators of a differencing header, in lookup order: W2ru, W2ku,
/// ParentUnicodeName, MacX, then the entries that are not paths. Entries whose data is empty,
/// larger than 64 KiB or outside the file are skipped with a finding.
pub fn read_locators(
    storage: &dyn Storage,
    len: u64,
    sparse: &Sparse,
    findings: &mut Vec<Finding>,
) -> Vec<Locator> {
    let h = &sparse.header;
    let mut ranked: Vec<(u8, Locator)> = Vec::new();
    for (i, e) in h.parent_locators.iter().enumerate() {
        if !e.is_used() {
            continue;
        }
        let entry_at = sparse.header_offset + 576 + 24 * i as u64;
        let code = e.platform_code;
        let key = ft::code_text(code);
        let n = e.platform_data_length.get();
        let off = e.platform_data_offset.get();
        let skip = |why: String, findings: &mut Vec<Finding>| {
            findings.push(Finding::new(
                Severity::Warning,
                "VHD parent locator",
                Some(entry_at),
                format!("parent locator {i} ({key}) ignored: {why}"),
            ));
        };
        if n == 0 {
            skip("its data length is 0".into(), findings);
            continue;
        }
        if n > MAX_LOCATOR_LENGTH {
            skip(
                format!("its data length {n} exceeds {MAX_LOCATOR_LENGTH} bytes"),
                findings,
            );
            continue;
        }
        if !fits(off, u64::from(n), len) {
            skip(
                format!("its data at {off:#x}+{n} lies outside the file of {len} bytes"),
                findings,
            );
            continue;
        }
        // Bounded by MAX_LOCATOR_LENGTH above.
        let data = match read_bytes(storage, off, n as usize, "VHD parent locator data") {
            Ok(d) => d,
            Err(err) => {
                skip(err.to_string(), findings);
                continue;
            }
        };
        let le16 = || crate::format::utf16::decode_le(&data);
        let narrow = || {
            String::from_utf8_lossy(&data)
                .trim_end_matches('\0')
                .to_string()
        };
        let (rank, value, kind) = match code {
            pl::PLATFORM_W2RU => (0, le16(), LocatorKind::Relative),
            pl::PLATFORM_W2KU => (1, le16(), LocatorKind::Absolute),
            pl::PLATFORM_MACX => {
                let url = narrow();
                match macx_path(&url) {
                    Some((p, k)) => (3, p, k),
                    None => (4, url, LocatorKind::Other),
                }
            }
            pl::PLATFORM_WI2R | pl::PLATFORM_WI2K => (4, narrow(), LocatorKind::Other),
            pl::PLATFORM_MAC => (4, format!("<Mac OS alias, {n} bytes>"), LocatorKind::Other),
            _ => (
                4,
                format!("<unknown platform code, {n} bytes>"),
                LocatorKind::Other,
            ),
        };
        if value.is_empty() {
            skip("it holds an empty path".into(), findings);
            continue;
        }
        ranked.push((rank, Locator { key, value, kind }));
    }
    let name = parent_unicode_name(h);
    if !name.is_empty() {
        let kind = if has_root(&name) {
            LocatorKind::Absolute
        } else {
            LocatorKind::Relative
        };
        ranked.push((
            2,
            Locator {
                key: "parent_unicode_name".into(),
                value: name,
                kind,
            },
        ));
    }
    // Stable: entries of one rank keep their slot order.
    ranked.sort_by_key(|(r, _)| *r);
    ranked.into_iter().map(|(_, l)| l).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_urls() {
        assert!(has_root(r"C:\x\p.vhd"));
        assert!(has_root(r"\\srv\share\p.vhd"));
        assert!(has_root("/p.vhd"));
        assert!(!has_root("p.vhd"));
        assert!(!has_root(r".\p.vhd"));
        assert_eq!(
            macx_path("file://localhost/Users/a%20b/p.vhd"),
            Some(("/Users/a b/p.vhd".into(), LocatorKind::Absolute))
        );
        assert_eq!(
            macx_path("file://./p.vhd"),
            Some(("./p.vhd".into(), LocatorKind::Relative))
        );
        assert_eq!(macx_path("http://x"), None);
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("a%41%zz%"), "aA%zz%");
    }
}
