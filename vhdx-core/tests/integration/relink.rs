//! Setting the parent (issue #5 item 3): a parent moved to another folder is found again
//! after `set_parent`, by our reader (linkage verified) and by libvhdi (which follows the
//! VHDX absolute locator itself; for VHD it takes the parent given, and the locators and
//! header fields are decoded here from the bytes); an identity mismatch is refused unless
//! ignored; the child's bytes outside its metadata, headers and locators do not change.

use super::common::*;
use super::write::our_check;
use std::path::{Path, PathBuf};
use std::process::Command;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::write::set_parent;
use vhdx_core::{Disk, ErrorKind, Image, OpenOptions};

const MIB: u64 = 1 << 20;

/// A base with data and a child with data of its own over it, in `dir`.
fn chain(dir: &Path, ext: &str) -> (PathBuf, PathBuf) {
    let base = dir.join(format!("base.{ext}"));
    let child = dir.join(format!("child.{ext}"));
    create(&base, &CreateOptions::new().size(16 * MIB)).unwrap();
    let d = Disk::open_rw(&base, &OpenOptions::default()).unwrap();
    d.write_at(&[0x61; 3 * MIB as usize], MIB).unwrap();
    d.close().unwrap();
    create(&child, &CreateOptions::new().parent(&base)).unwrap();
    let d = Disk::open_rw(&child, &OpenOptions::default()).unwrap();
    // 4 KiB aligned: libvhdi reads VHD sector bitmaps 8 sectors at a time (write.rs).
    d.write_at(&[0x62; 8192], 2 * MIB + 4096).unwrap();
    d.write_at(&[0x63; 65536], 15 * MIB).unwrap();
    d.close().unwrap();
    (base, child)
}

/// Moves `base` into a new, deeply nested folder under a long name (so that every stored
/// path grows).
fn move_far(base: &Path, dir: &Path, ext: &str) -> PathBuf {
    let sub = dir
        .join("moved")
        .join("a folder with a rather long name, to make paths grow");
    std::fs::create_dir_all(&sub).unwrap();
    let to = sub.join(format!("{}.{ext}", "the parent disk, renamed ".repeat(8)));
    std::fs::rename(base, &to).unwrap();
    to
}

/// libvhdi's answers: the child's parent file name and parent identifier, and the identifier
/// of `parent`; then the chain's bytes, read with `parent` set as the child's parent.
fn pyvhdi_chain(child: &Path, parent: &Path) -> (String, String, String, Vec<u8>) {
    let script = r#"
import sys, pyvhdi
c = pyvhdi.file(); c.open(sys.argv[1])
p = pyvhdi.file(); p.open(sys.argv[2])
sys.stderr.write("%s\n%s\n%s\n" % (c.get_parent_filename(), c.get_parent_identifier(), p.get_identifier()))
c.set_parent(p)
size = c.get_media_size()
c.seek_offset(0, 0)
sys.stdout.buffer.write(c.read_buffer(size))
"#;
    let out = Command::new(oracle_python())
        .args(["-c", script])
        .arg(child)
        .arg(parent)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    let l: Vec<&str> = err.lines().collect();
    (l[0].into(), l[1].into(), l[2].into(), out.stdout)
}

/// A host path from a stored Windows path (`\\?\` prefix and backslashes), as libvhdi's
/// VHDX parent file name holds it.
fn host_path(stored: &str) -> PathBuf {
    PathBuf::from(stored.trim_start_matches(r"\\?\").replace('\\', "/"))
}

/// Whether the file bytes of `a` and `b` agree outside `skip` ranges (and up to the shorter).
fn same_outside(a: &[u8], b: &[u8], skip: &[(u64, u64)], what: &str) {
    let n = a.len().min(b.len());
    for i in 0..n {
        if a[i] != b[i]
            && !skip
                .iter()
                .any(|&(o, l)| (i as u64) >= o && (i as u64) < o + l)
        {
            panic!("{what}: byte {i:#x} changed");
        }
    }
}

#[test]
fn vhdx_parent_moved_and_found_again() {
    let dir = tempfile::tempdir().unwrap();
    let (base, child) = chain(dir.path(), "vhdx");
    let want = our_read_all(&child);
    let before = std::fs::read(&child).unwrap();
    let guid = |p: &Path| {
        let i = Disk::open_with(p, &lenient()).unwrap().info(false).unwrap();
        i.vhdx.unwrap().data_write_guid
    };
    let data_guid = guid(&child);
    let moved = move_far(&base, dir.path(), "vhdx");
    assert_eq!(
        Disk::open(&child).unwrap_err().kind(),
        ErrorKind::ParentNotFound
    );
    let st = set_parent(&child, &moved, false).unwrap();
    assert!(!st.id_mismatch_ignored);
    assert!(st.relative_path.starts_with(r".\moved\a folder"), "{st:?}");
    // Ours: the chain opens through the locators, linkage verified.
    let d = Disk::open(&child).unwrap();
    assert_eq!(d.parent_info().unwrap().status, "ok");
    assert_same(&read_all(&d, MIB as usize), &want, "ours");
    drop(d);
    our_check(&child);
    assert_eq!(guid(&child), data_guid, "the child's data identity stays");
    // libvhdi follows the stored absolute path to the moved parent.
    let (name, linkage, parent_id, theirs) = pyvhdi_chain(&child, &moved);
    assert_eq!(
        std::fs::canonicalize(host_path(&name)).unwrap(),
        std::fs::canonicalize(&moved).unwrap()
    );
    assert_eq!(linkage, parent_id);
    assert_same(&theirs, &want, "libvhdi");
    // Only the headers, the log and the metadata region changed.
    let after = std::fs::read(&child).unwrap();
    assert_eq!(after.len(), before.len());
    let meta = match Disk::open(&child).unwrap().image() {
        Image::Vhdx(v) => v.regions().metadata,
        _ => unreachable!(),
    };
    let skip = [(0x10000, 0x20000), (MIB, MIB), (meta.offset, meta.length)];
    same_outside(&before, &after, &skip, "vhdx child");
}

/// Open options that tolerate a missing parent (to read a child's own facts).
fn lenient() -> OpenOptions {
    OpenOptions {
        require_parent: false,
        verify_linkage: false,
        ..OpenOptions::default()
    }
}

/// The parent locator cannot grow in place when another item follows it: it moves to free
/// space of the metadata region.
#[test]
fn vhdx_locator_moves_when_it_cannot_grow_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (base, child) = chain(dir.path(), "vhdx");
    let want = our_read_all(&child);
    let meta = match Disk::open(&child).unwrap().image() {
        Image::Vhdx(v) => v.regions().metadata.offset as usize,
        _ => unreachable!(),
    };
    // Move the last-but-one item (the physical sector size, 4 bytes) right after the
    // locator, the last item, by rewriting its table entry.
    let mut f = std::fs::read(&child).unwrap();
    let entry = |i: usize| meta + 32 + 32 * i;
    let field = |f: &[u8], at: usize| u32::from_le_bytes(f[at..at + 4].try_into().unwrap());
    let (loc_off, loc_len) = (field(&f, entry(5) + 16), field(&f, entry(5) + 20));
    let (phys_off, phys_len) = (field(&f, entry(4) + 16), field(&f, entry(4) + 20));
    assert_eq!(
        (phys_len, f[entry(4)]),
        (4, 0xC7),
        "our create's item order"
    );
    let new_phys = (loc_off + loc_len).next_multiple_of(8);
    let src = meta + phys_off as usize;
    let value: Vec<u8> = f[src..src + 4].to_vec();
    f[src..src + 4].fill(0);
    f[meta + new_phys as usize..meta + new_phys as usize + 4].copy_from_slice(&value);
    f[entry(4) + 16..entry(4) + 20].copy_from_slice(&new_phys.to_le_bytes());
    std::fs::write(&child, &f).unwrap();
    assert_same(&our_read_all(&child), &want, "reordered");
    let moved = move_far(&base, dir.path(), "vhdx");
    set_parent(&child, &moved, false).unwrap();
    let f = std::fs::read(&child).unwrap();
    let new_loc = field(&f, entry(5) + 16);
    assert!(
        new_loc > new_phys,
        "the locator moved after the other item: {new_loc}"
    );
    assert_eq!(field(&f, entry(4) + 16), new_phys);
    assert_same(&our_read_all(&child), &want, "ours");
    our_check(&child);
    let (_, _, _, theirs) = pyvhdi_chain(&child, &moved);
    assert_same(&theirs, &want, "libvhdi");
}

#[test]
fn vhdx_identity_mismatch_is_refused_unless_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (base, child) = chain(dir.path(), "vhdx");
    let want = our_read_all(&child);
    // A copy of the parent whose data identity changed (same bytes written over its data).
    let copy = dir.path().join("copy.vhdx");
    std::fs::copy(&base, &copy).unwrap();
    let d = Disk::open_rw(&copy, &OpenOptions::default()).unwrap();
    d.write_at(&[0x61; 4096], MIB).unwrap();
    d.close().unwrap();
    let err = set_parent(&child, &copy, false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LinkageMismatch, "{err}");
    assert!(err.to_string().contains("--ignore-id-mismatch"), "{err}");
    // Refused: nothing changed, the child still opens over its parent.
    assert_eq!(
        Disk::open(&child).unwrap().parent_info().unwrap().status,
        "ok"
    );
    let st = set_parent(&child, &copy, true).unwrap();
    assert!(st.id_mismatch_ignored);
    let d = Disk::open(&child).unwrap();
    let p = d.parent_info().unwrap();
    assert_eq!(p.status, "ok", "the new identity was recorded");
    assert_eq!(
        std::fs::canonicalize(p.resolved_path.as_ref().unwrap()).unwrap(),
        std::fs::canonicalize(&copy).unwrap()
    );
    assert_same(&read_all(&d, MIB as usize), &want, "ours over the copy");
    let (_, linkage, parent_id, theirs) = pyvhdi_chain(&child, &copy);
    assert_eq!(linkage, parent_id);
    assert_same(&theirs, &want, "libvhdi over the copy");
}

/// The VHD locators, name and identity, decoded straight from the bytes (big-endian header,
/// UTF-16LE locator data, UTF-16BE name).
struct VhdLink {
    parent_unique_id: [u8; 16],
    unicode_name: String,
    locators: Vec<(String, String, u64, u64)>,
}

fn vhd_link(child: &Path) -> VhdLink {
    let f = std::fs::read(child).unwrap();
    let footer = &f[f.len() - 512..];
    let hdr = u64::from_be_bytes(footer[16..24].try_into().unwrap()) as usize;
    let h = &f[hdr..hdr + 1024];
    let utf16 = |b: &[u8], be: bool| {
        let u: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| {
                if be {
                    u16::from_be_bytes([c[0], c[1]])
                } else {
                    u16::from_le_bytes([c[0], c[1]])
                }
            })
            .take_while(|&c| c != 0)
            .collect();
        String::from_utf16(&u).unwrap()
    };
    let mut locators = Vec::new();
    for i in 0..8 {
        let e = &h[576 + 24 * i..600 + 24 * i];
        if e[..4] == [0; 4] {
            continue;
        }
        let len = u32::from_be_bytes(e[8..12].try_into().unwrap()) as usize;
        let off = u64::from_be_bytes(e[16..24].try_into().unwrap());
        let space = u32::from_be_bytes(e[4..8].try_into().unwrap()) as u64;
        let data = &f[off as usize..off as usize + len];
        locators.push((
            String::from_utf8_lossy(&e[..4]).into_owned(),
            utf16(data, false),
            off,
            space,
        ));
    }
    VhdLink {
        parent_unique_id: h[40..56].try_into().unwrap(),
        unicode_name: utf16(&h[64..576], true),
        locators,
    }
}

fn footer_unique_id(p: &Path) -> [u8; 16] {
    let f = std::fs::read(p).unwrap();
    f[f.len() - 512 + 68..f.len() - 512 + 84]
        .try_into()
        .unwrap()
}

#[test]
fn vhd_parent_moved_and_found_again() {
    let dir = tempfile::tempdir().unwrap();
    let (base, child) = chain(dir.path(), "vhd");
    let want = our_read_all(&child);
    let before = std::fs::read(&child).unwrap();
    let old = vhd_link(&child);
    let moved = move_far(&base, dir.path(), "vhd");
    assert_eq!(
        Disk::open(&child).unwrap_err().kind(),
        ErrorKind::ParentNotFound
    );
    set_parent(&child, &moved, false).unwrap();
    let link = vhd_link(&child);
    assert_eq!(link.parent_unique_id, footer_unique_id(&moved));
    assert_eq!(
        link.unicode_name,
        moved.file_name().unwrap().to_str().unwrap()
    );
    let canon = std::fs::canonicalize(&moved).unwrap();
    let codes: Vec<&str> = link.locators.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(codes, ["W2ru", "W2ku"]);
    for (code, path, _, _) in &link.locators {
        let host = if code == "W2ru" {
            dir.path().join(host_path(path))
        } else {
            host_path(path)
        };
        assert_eq!(
            std::fs::canonicalize(&host).unwrap(),
            canon,
            "{code}: {path}"
        );
    }
    assert_same(&our_read_all(&child), &want, "ours");
    our_check(&child);
    let (_, linkage, parent_id, theirs) = pyvhdi_chain(&child, &moved);
    assert_eq!(linkage, parent_id);
    assert_same(&theirs, &want, "libvhdi");
    // Outside the dynamic header, the old locator data and the old footer, nothing changed.
    let after = std::fs::read(&child).unwrap();
    let mut skip = vec![(512, 1024), (before.len() as u64 - 512, 512)];
    skip.extend(old.locators.iter().map(|l| (l.2, l.3)));
    same_outside(&before, &after, &skip, "vhd child");
    // A disk that is not the parent: refused, then accepted and recorded.
    let stranger = dir.path().join("stranger.vhd");
    create(&stranger, &CreateOptions::new().size(16 * MIB)).unwrap();
    let err = set_parent(&child, &stranger, false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LinkageMismatch);
    assert_eq!(vhd_link(&child).parent_unique_id, footer_unique_id(&moved));
    set_parent(&child, &stranger, true).unwrap();
    assert_eq!(
        vhd_link(&child).parent_unique_id,
        footer_unique_id(&stranger)
    );
    assert_eq!(
        Disk::open(&child).unwrap().parent_info().unwrap().status,
        "ok"
    );
}

/// A differencing VHD made by Windows (the shared real image), relinked to a stand-in for
/// its missing parent: our reader and libvhdi read the chain.
#[test]
fn windows_made_vhd_child_relinked() {
    let Some(real) = shared_real() else { return };
    let dir = tempfile::tempdir().unwrap();
    let child = dir.path().join("fat-differential.vhd");
    std::fs::copy(real.join("fat-differential.vhd"), &child).unwrap();
    let mut perm = std::fs::metadata(&child).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&child, perm).unwrap();
    let stand_in = dir.path().join("stand-in parent.vhd");
    create(&stand_in, &CreateOptions::new().size(4 * MIB)).unwrap();
    // What the chain must read: the child over the stand-in, named explicitly.
    let explicit = OpenOptions {
        parents: vec![stand_in.clone()],
        verify_linkage: false,
        ..OpenOptions::default()
    };
    let mine = read_all(&Disk::open_with(&child, &explicit).unwrap(), MIB as usize);
    assert!(mine.iter().any(|&b| b != 0));
    assert_eq!(
        set_parent(&child, &stand_in, false).unwrap_err().kind(),
        ErrorKind::LinkageMismatch
    );
    set_parent(&child, &stand_in, true).unwrap();
    let d = Disk::open(&child).unwrap();
    assert_eq!(d.chain().len(), 2);
    assert_eq!(d.parent_info().unwrap().status, "ok");
    assert_same(&read_all(&d, MIB as usize), &mine, "ours");
    let (_, linkage, parent_id, theirs) = pyvhdi_chain(&child, &stand_in);
    assert_eq!(linkage, parent_id);
    assert_same(&theirs, &mine, "libvhdi");
}
