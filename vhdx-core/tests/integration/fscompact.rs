//! Filesystem-aware compaction and free-space trimming (issue #6 items 3 and 5) against file
//! systems made by their own tools: mkfs.ext2/ext4 and debugfs (e2fsprogs), mkntfs, ntfscp
//! and ntfscat (ntfs-3g), sfdisk and sgdisk; images turned into VHDX/VHD by qemu-img.
//!
//! The oracles: our free map equals `dumpe2fs`'s free block list (every group, every
//! layout); after compaction `e2fsck -fn` and `ntfsfix -n` are clean on the image as
//! qemu-img (or libvhdi, for differencing disks) reads it back, every file reads back
//! byte-identical, and the file shrinks to about the live data. Volumes that are not clean
//! are skipped with their reason and keep every byte.
//!
//! Tests that need a tool fail under CI when it is missing and skip elsewhere.

use super::common::{self, qemu_img, run, MemDisk, Rng};
use std::path::{Path, PathBuf};
use std::process::Command;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::guest::freespace::{trim_free_space, FreeMap, FreeSpace, SkipKind};
use vhdx_core::guest::{self, VolumeKind};
use vhdx_core::write::compact::compact_copy;
use vhdx_core::{
    CompactMode, CompactOptions, CompactStats, Disk, Format, OpenOptions, VirtualDisk,
};

const MIB: u64 = 1 << 20;

/// Deterministic pseudo-random bytes.
fn junk(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Raw-image disk for our reader.
fn open_raw(path: &Path) -> Disk {
    let opts = OpenOptions {
        format: Some(Format::Raw),
        ..OpenOptions::default()
    };
    Disk::open_with(path, &opts).unwrap()
}

/// `mkfs.TYPE -q -F [args] IMG` on a new raw image of `size` bytes.
fn mkfs_ext(img: &Path, size: u64, kind: &str, args: &[&str]) {
    let f = std::fs::File::create(img).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    run(common::sbin_command(&format!("mkfs.{kind}"))
        .args(["-q", "-F"])
        .args(args)
        .arg(img));
}

/// `debugfs -w -R REQUEST IMG`.
fn debugfs_w(img: &Path, request: &str) {
    let out = run(common::sbin_command("debugfs")
        .args(["-w", "-R", request])
        .arg(img));
    let _ = out;
}

/// Writes `data` as `/name` into the ext image with debugfs.
fn ext_put(img: &Path, name: &str, data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    std::fs::write(&src, data).unwrap();
    debugfs_w(img, &format!("write {} {name}", src.display()));
}

/// `/name` of the ext image as `debugfs -R cat` reads it.
fn ext_cat(img: &Path, name: &str) -> Vec<u8> {
    run(common::sbin_command("debugfs")
        .args(["-R", &format!("cat /{name}")])
        .arg(img))
}

/// `e2fsck -fn IMG` passes (exit 0, nothing to fix).
fn e2fsck_clean(img: &Path) {
    let out = common::sbin_command("e2fsck")
        .args(["-fn"])
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn {}: {}\n{}",
        img.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The free blocks `dumpe2fs` lists (its `Free blocks:` line of every group), merged, as
/// `(first block, count)`, and the block size. With bigalloc dumpe2fs ends a range at the
/// first block of its last cluster; the count here covers that whole cluster.
fn dumpe2fs_free(img: &Path) -> (Vec<(u64, u64)>, u64) {
    let out = run(common::sbin_command("dumpe2fs").arg(img));
    let text = String::from_utf8_lossy(&out);
    let mut bs = 0;
    let mut ratio = 1;
    let mut v: Vec<(u64, u64)> = Vec::new();
    for line in text.lines() {
        if let Some(b) = line.strip_prefix("Block size:") {
            bs = b.trim().parse().unwrap();
        }
        if let Some(c) = line.strip_prefix("Cluster size:") {
            ratio = c.trim().parse::<u64>().unwrap() / bs;
        }
        let Some(list) = line.strip_prefix("  Free blocks: ") else {
            continue;
        };
        for part in list.split(", ").filter(|p| !p.trim().is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse::<u64>().unwrap(),
                    b.trim().parse::<u64>().unwrap(),
                ),
                None => {
                    let a = part.trim().parse::<u64>().unwrap();
                    (a, a)
                }
            };
            let n = b - a + ratio;
            match v.last_mut() {
                Some(l) if l.0 + l.1 == a => l.1 += n,
                _ => v.push((a, n)),
            }
        }
    }
    assert!(bs > 0, "no block size in dumpe2fs output");
    (v, bs)
}

/// Our free ranges of the single volume of `disk`, or the skip.
fn our_free(disk: &dyn VirtualDisk) -> FreeSpace {
    let layout = guest::inspect(disk).unwrap();
    assert_eq!(layout.volumes.len(), 1, "{layout:?}");
    vhdx_core::guest::freespace::free_ranges(disk, &layout.volumes[0]).unwrap()
}

/// Asserts our map of the ext image at `img` (a whole-disk file system) is exactly what
/// dumpe2fs lists.
fn assert_ext_map_exact(img: &Path) {
    let (want, bs) = dumpe2fs_free(img);
    let got = match our_free(&open_raw(img)) {
        FreeSpace::Free(r) => r,
        FreeSpace::Skipped(s) => panic!("{}: skipped: {s:?}", img.display()),
    };
    let got: Vec<(u64, u64)> = got.iter().map(|&(o, l)| (o / bs, l / bs)).collect();
    assert_eq!(
        got,
        want,
        "{}: free blocks differ from dumpe2fs",
        img.display()
    );
}

#[test]
fn ext_free_map_equals_dumpe2fs() {
    if !common::have_tools(&["mkfs.ext4", "mkfs.ext2", "debugfs", "dumpe2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, u64, &[&str])] = &[
        ("ext4", 64 * MIB, &[]),
        ("ext4", 48 * MIB, &["-b", "4096"]),
        ("ext4", 40 * MIB, &["-b", "4096", "-O", "^flex_bg"]),
        (
            "ext4",
            40 * MIB,
            &["-b", "1024", "-O", "^metadata_csum,uninit_bg"],
        ),
        ("ext4", 40 * MIB, &["-b", "2048", "-O", "^64bit"]),
        (
            "ext4",
            64 * MIB,
            &["-b", "1024", "-O", "meta_bg,^resize_inode"],
        ),
        (
            "ext4",
            64 * MIB,
            &["-b", "4096", "-O", "bigalloc", "-C", "16384"],
        ),
        ("ext4", 64 * MIB, &["-b", "4096", "-O", "sparse_super2"]),
        ("ext4", 64 * MIB, &["-b", "65536"]),
        ("ext2", 40 * MIB, &[]),
        (
            "ext3",
            40 * MIB,
            &["-b", "4096", "-O", "^sparse_super,^resize_inode"],
        ),
    ];
    for (i, &(kind, size, args)) in cases.iter().enumerate() {
        let img = dir.path().join(format!("{i}.img"));
        mkfs_ext(&img, size, kind, args);
        assert_ext_map_exact(&img);
        // Files, some deleted: bitmaps written in several groups.
        for f in 0..6u64 {
            ext_put(
                &img,
                &format!("f{f}"),
                &junk((300 + 700 * f as usize) * 1024, f + 1),
            );
        }
        for f in [1, 4] {
            debugfs_w(&img, &format!("rm f{f}"));
        }
        assert_ext_map_exact(&img);
        e2fsck_clean(&img);
    }
}

// ---------------------------------------------------------------------------------------
// Guests: a file system image made by its tools, placed into a (partitioned) raw disk.

/// A file with deterministic content: name and length, content from `junk(len, seed)`.
#[derive(Clone)]
struct GuestFile {
    name: String,
    len: usize,
    seed: u64,
}

impl GuestFile {
    fn new(name: &str, len: usize, seed: u64) -> GuestFile {
        GuestFile {
            name: name.into(),
            len,
            seed,
        }
    }
    fn bytes(&self) -> Vec<u8> {
        junk(self.len, self.seed)
    }
}

/// Which file system a guest volume holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fs {
    Ext,
    Ntfs,
}

/// A raw guest disk with one file system volume at `offset` holding `files`.
struct Guest {
    raw: PathBuf,
    offset: u64,
    fs_len: u64,
    fs: Fs,
    files: Vec<GuestFile>,
}

/// An ext file system image at `img`: `mkfs.ext4 -d` with the live files, then `junk`
/// bytes of junk files written with debugfs and removed again (their bytes stay in the free
/// blocks). `args` go to mkfs.
fn ext_image(
    img: &Path,
    size: u64,
    kind: &str,
    args: &[&str],
    live: &[GuestFile],
    junk_bytes: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    for f in live {
        std::fs::write(dir.path().join(&f.name), f.bytes()).unwrap();
    }
    let mut a: Vec<&str> = args.to_vec();
    let d = dir.path().to_str().unwrap().to_string();
    a.extend(["-d", &d]);
    mkfs_ext(img, size, kind, &a);
    add_ext_junk(img, junk_bytes, 7);
}

/// Writes `total` bytes of junk files into the ext image and removes them.
fn add_ext_junk(img: &Path, total: usize, seed: u64) {
    let piece = 64 << 20;
    let mut left = total;
    let mut n = 0;
    while left > 0 {
        let len = left.min(piece);
        ext_put(img, &format!("junk{n}"), &junk(len, seed * 1000 + n as u64));
        left -= len;
        n += 1;
    }
    for i in 0..n {
        debugfs_w(img, &format!("rm junk{i}"));
    }
}

/// An NTFS image at `img` (`mkntfs -F -Q`) with the live files (ntfscp) and `junk_bytes` of
/// junk written and then truncated to nothing (ntfstruncate frees its clusters; the bytes
/// stay).
fn ntfs_image(img: &Path, size: u64, live: &[GuestFile], junk_bytes: usize) {
    let f = std::fs::File::create(img).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    run(common::sbin_command("mkntfs")
        .args(["-F", "-q", "-Q"])
        .arg(img));
    let dir = tempfile::tempdir().unwrap();
    let put = |name: &str, data: &[u8]| {
        let src = dir.path().join("f");
        std::fs::write(&src, data).unwrap();
        run(common::sbin_command("ntfscp").arg(img).arg(&src).arg(name));
    };
    put("junk", &junk(junk_bytes, 99));
    for f in live {
        put(&f.name, &f.bytes());
    }
    let ls = String::from_utf8(run(common::sbin_command("ntfsls").arg("-i").arg(img))).unwrap();
    let inode = ls
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            let n = w.next()?;
            (w.next()? == "junk").then(|| n.to_string())
        })
        .expect("junk's inode");
    run(common::sbin_command("ntfstruncate")
        .arg(img)
        .args([inode.as_str(), "0x80", "0"]));
}

/// A raw disk of `size` bytes at `raw` holding the image `fs_img` at `offset`: a whole-disk
/// file system when `table` is `None`, else one partition made by sgdisk (`gpt`) or sfdisk
/// (`mbr`, type `type_id`) from `offset` over the image's length, filled with dd.
fn place(raw: &Path, size: u64, table: Option<(&str, &str)>, offset: u64, fs_img: &Path) {
    let len = std::fs::metadata(fs_img).unwrap().len();
    let f = std::fs::File::create(raw).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    match table {
        None => assert_eq!(offset, 0),
        Some(("gpt", code)) => {
            run(common::sbin_command("sgdisk")
                .arg(format!(
                    "-n1:{}:{}",
                    offset / 512,
                    offset / 512 + len / 512 - 1
                ))
                .arg(format!("-t1:{code}"))
                .arg(raw));
        }
        Some((_, id)) => {
            let script = format!(
                "label: dos\nstart={}, size={}, type={id}\n",
                offset / 512,
                len / 512
            );
            let mut c = common::sbin_command("sfdisk");
            c.arg("-q").arg(raw).stdin(std::process::Stdio::piped());
            let mut child = c.spawn().unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success());
        }
    }
    dd_into(raw, offset, fs_img);
}

/// Copies `src` into `dst` at byte `offset` with dd (keeping the rest of `dst`).
fn dd_into(dst: &Path, offset: u64, src: &Path) {
    run(Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!("of={}", dst.display()))
        .args([
            "bs=1M",
            "conv=notrunc,sparse",
            "status=none",
            "oflag=seek_bytes",
        ])
        .arg(format!("seek={offset}")));
}

/// `len` bytes of `src` from `offset` into a new file `dst`.
fn dd_out(src: &Path, offset: u64, len: u64, dst: &Path) {
    run(Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!("of={}", dst.display()))
        .args(["bs=1M", "status=none", "iflag=skip_bytes,count_bytes"])
        .arg(format!("skip={offset}"))
        .arg(format!("count={len}")));
}

/// `qemu-img convert` of a raw disk to a dynamic VHDX (1 MiB blocks, as WSL2 makes them,
/// unless `block` says otherwise) or VHD.
fn to_image(raw: &Path, out: &Path, format: &str, block: &str) {
    let (fmt, opts) = match format {
        "vhdx" => ("vhdx", format!("subformat=dynamic,block_size={block}")),
        _ => ("vpc", "subformat=dynamic,force_size=on".to_string()),
    };
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        fmt,
        "-o",
        &opts,
        raw.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
}

/// The virtual disk of `image` as qemu-img reads it, as a raw file in `dir`.
fn qemu_back(image: &Path, format: &str, dir: &Path) -> PathBuf {
    let out = dir.join("back.raw");
    let _ = std::fs::remove_file(&out);
    let fmt = if format == "vhdx" { "vhdx" } else { "vpc" };
    qemu_img(&[
        "convert",
        "-f",
        fmt,
        "-O",
        "raw",
        image.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    out
}

/// The virtual disk of a differencing `image` over `parents` as libvhdi reads it, as a raw
/// file in `dir`.
fn libvhdi_back(image: &Path, parents: &[&Path], dir: &Path) -> PathBuf {
    let out = dir.join("back.raw");
    std::fs::write(&out, common::pyvhdi_read_all(image, parents)).unwrap();
    out
}

/// Checks the guest read back from `back` (a raw file): the file system is clean for its
/// own checker, every file reads back byte-identical, and every byte outside the free
/// ranges of `free` (our map of the original) is what the original disk held.
fn verify(guest: &Guest, back: &Path, free: &[(u64, u64)]) {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("part.img");
    dd_out(back, guest.offset, guest.fs_len, &part);
    match guest.fs {
        Fs::Ext => {
            e2fsck_clean(&part);
            for f in &guest.files {
                assert!(ext_cat(&part, &f.name) == f.bytes(), "{} differs", f.name);
            }
        }
        Fs::Ntfs => {
            let out = common::sbin_command("ntfsfix")
                .arg("-n")
                .arg(&part)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ntfsfix -n: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            for f in &guest.files {
                let got = run(common::sbin_command("ntfscat").arg(&part).arg(&f.name));
                assert!(got == f.bytes(), "{} differs", f.name);
            }
        }
    }
    same_outside(&guest.raw, back, free);
}

/// Asserts `a` and `b` (raw files of one size) hold the same bytes everywhere outside the
/// sorted ranges `free`, comparing 1 MiB at a time.
fn same_outside(a: &Path, b: &Path, free: &[(u64, u64)]) {
    use std::os::unix::fs::FileExt;
    let (fa, fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let len = fa.metadata().unwrap().len();
    assert_eq!(len, fb.metadata().unwrap().len());
    let (mut x, mut y) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut k = 0;
    let mut off = 0;
    while off < len {
        let n = (len - off).min(MIB) as usize;
        fa.read_exact_at(&mut x[..n], off).unwrap();
        fb.read_exact_at(&mut y[..n], off).unwrap();
        if x[..n] != y[..n] {
            for i in 0..n {
                let at = off + i as u64;
                while k < free.len() && free[k].0 + free[k].1 <= at {
                    k += 1;
                }
                let is_free = k < free.len() && free[k].0 <= at;
                assert!(
                    is_free || x[i] == y[i],
                    "byte {at:#x} changed and is not free"
                );
            }
        }
        off += n as u64;
    }
}

/// Our map of the original raw disk: the free ranges and the volume reports.
fn map_of(raw: &Path) -> FreeMap {
    FreeMap::read(&open_raw(raw)).unwrap()
}

fn full(free_space: bool) -> CompactOptions {
    CompactOptions {
        mode: CompactMode::Full,
        free_space,
    }
}

/// Compacts `image` into `out` (full mode).
fn compact_to(image: &Path, out: &Path, free_space: bool, opts: &OpenOptions) -> CompactStats {
    compact_copy(image, out, full(free_space), true, opts, None).unwrap()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[test]
fn ext_compaction_reclaims_deleted_files_exactly() {
    if !common::have_tools(&[
        "mkfs.ext4",
        "mkfs.ext2",
        "debugfs",
        "e2fsck",
        "sgdisk",
        "qemu-img",
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let live = vec![
        GuestFile::new("a", 3 << 20, 1),
        GuestFile::new("b", 1 << 20, 2),
        GuestFile::new("c", 12345, 3),
    ];
    // (mkfs, args, partitioned): 56 MiB file systems with 36 MiB of deleted junk.
    let cases: &[(&str, &[&str], bool)] = &[
        ("ext4", &["-b", "4096"], true),
        ("ext4", &["-b", "4096", "-O", "^flex_bg"], false),
        ("ext4", &["-b", "4096", "-O", "^64bit"], false),
        ("ext4", &["-b", "1024"], false),
        ("ext2", &["-b", "4096"], true),
    ];
    for (i, &(kind, args, parted)) in cases.iter().enumerate() {
        let fs = dir.path().join(format!("fs{i}.img"));
        ext_image(&fs, 56 * MIB, kind, args, &live, 36 << 20);
        let raw = dir.path().join(format!("disk{i}.raw"));
        let offset = if parted { MIB } else { 0 };
        let table = parted.then_some(("gpt", "8300"));
        place(&raw, 56 * MIB + 2 * offset, table, offset, &fs);
        let guest = Guest {
            raw: raw.clone(),
            offset,
            fs_len: 56 * MIB,
            fs: Fs::Ext,
            files: live.clone(),
        };
        let map = map_of(&raw);
        assert_eq!(map.volumes.len(), 1);
        assert_eq!(map.volumes[0].skipped, None, "{:?}", map.volumes[0]);
        for format in ["vhdx", "vhd"] {
            let what = format!("case {i} ({kind} {args:?}) {format}");
            let img = dir.path().join(format!("d{i}.{format}"));
            to_image(&raw, &img, format, "1M");
            let plain = compact_to(
                &img,
                &dir.path().join("plain"),
                false,
                &OpenOptions::default(),
            );
            let out = dir.path().join(format!("out{i}.{format}"));
            let s = compact_to(&img, &out, true, &OpenOptions::default());
            assert!(s.free_space_pass && !plain.free_space_pass);
            assert_eq!(s.volumes.len(), 1, "{what}");
            let v = &s.volumes[0];
            assert!(
                v.blocks_released > 0 && v.skipped.is_none(),
                "{what}: {v:?}"
            );
            assert_eq!(v.free_bytes, map.volumes[0].free_bytes);
            assert_eq!(s.free_space_blocks_released, v.blocks_released);
            // The junk is gone: the file holds the live files, the file system's metadata
            // and journal, and block slack.
            assert!(
                s.file_len_after + 30 * MIB <= plain.file_len_after,
                "{what}: {} vs zero-only {}",
                s.file_len_after,
                plain.file_len_after
            );
            assert!(s.file_len_after <= 24 * MIB, "{what}: {}", s.file_len_after);
            // A dry run foresees the same.
            let dry =
                vhdx_core::write::compact::compact_dry_run(&Disk::open(&img).unwrap(), full(true))
                    .unwrap();
            assert_eq!(dry.file_len_after, s.file_len_after, "{what}");
            assert_eq!(dry.volumes, s.volumes, "{what}");
            let back = qemu_back(&out, format, dir.path());
            verify(&guest, &back, map.ranges());
            eprintln!(
                "{what}: {} -> {} (zero-only {})",
                file_len(&img),
                s.file_len_after,
                plain.file_len_after
            );
        }
    }
}

/// Marks an NTFS image dirty: sets VOLUME_IS_DIRTY in `$Volume`'s `$VOLUME_INFORMATION`
/// (file record 3), found through the boot sector, as chkdsk-pending Windows leaves it.
fn set_ntfs_dirty(img: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut boot = [0u8; 512];
    f.read_exact_at(&mut boot, 0).unwrap();
    let bps = u64::from(u16::from_le_bytes([boot[11], boot[12]]));
    let cluster = bps * u64::from(boot[13]);
    let mft = u64::from_le_bytes(boot[48..56].try_into().unwrap()) * cluster;
    let rec = mft + 3 * 1024;
    let mut r = vec![0u8; 1024];
    f.read_exact_at(&mut r, rec).unwrap();
    assert_eq!(&r[..4], b"FILE");
    let mut at = usize::from(u16::from_le_bytes([r[20], r[21]]));
    loop {
        let ty = u32::from_le_bytes(r[at..at + 4].try_into().unwrap());
        assert_ne!(ty, 0xFFFF_FFFF, "no $VOLUME_INFORMATION");
        let len = u32::from_le_bytes(r[at + 4..at + 8].try_into().unwrap()) as usize;
        if ty == 0x70 {
            let value = at + usize::from(u16::from_le_bytes([r[at + 20], r[at + 21]]));
            let flags = value + 10;
            assert!(flags % 512 < 510, "the flags straddle a sector end");
            r[flags] |= 1;
            f.write_all_at(&r[flags..flags + 1], rec + flags as u64)
                .unwrap();
            return;
        }
        at += len;
    }
}

#[test]
fn ntfs_compaction_reclaims_freed_clusters_and_skips_bitlocker_and_dirty() {
    if !common::have_tools(&[
        "mkntfs",
        "ntfscp",
        "ntfsls",
        "ntfstruncate",
        "ntfscat",
        "ntfsfix",
        "sfdisk",
        "qemu-img",
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let live = vec![
        GuestFile::new("live1", 2 << 20, 11),
        GuestFile::new("live2", 700_000, 12),
    ];
    let fs = dir.path().join("ntfs.img");
    ntfs_image(&fs, 48 * MIB, &live, 30 << 20);
    let raw = dir.path().join("disk.raw");
    // MBR: NTFS in partition 1, a BitLocker signature volume full of junk in partition 2.
    place(&raw, 80 * MIB, Some(("mbr", "7")), MIB, &fs);
    let bl = dir.path().join("bl.img");
    let mut b = junk(24 << 20, 5);
    b[3..11].copy_from_slice(b"-FVE-FS-");
    std::fs::write(&bl, &b).unwrap();
    {
        // A second partition after the first.
        let script = format!(
            "label: dos\nstart=2048, size={}, type=7\nstart={}, size={}, type=7\n",
            48 * MIB / 512,
            50 * MIB / 512,
            24 * MIB / 512
        );
        let mut c = common::sbin_command("sfdisk");
        c.arg("-q").arg(&raw).stdin(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    dd_into(&raw, 50 * MIB, &bl);
    let guest = Guest {
        raw: raw.clone(),
        offset: MIB,
        fs_len: 48 * MIB,
        fs: Fs::Ntfs,
        files: live.clone(),
    };
    let map = map_of(&raw);
    let kinds: Vec<_> = map
        .volumes
        .iter()
        .map(|v| (v.file_system, v.skipped))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (VolumeKind::Ntfs, None),
            (VolumeKind::BitLocker, Some(SkipKind::Encrypted))
        ]
    );
    // Our count of free bytes is ntfs-3g's.
    let info =
        String::from_utf8(run(common::sbin_command("ntfscluster").arg("-i").arg(&fs))).unwrap();
    let theirs: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("bytes of free space"))
        .and_then(|v| v.trim_start_matches([' ', ':']).trim().parse().ok())
        .unwrap();
    assert_eq!(map.volumes[0].free_bytes, Some(theirs));
    // Exactly ntfs-3g's $Bitmap (`ntfscat`), cluster by cluster, within the volume's
    // whole clusters.
    let bitmap = run(common::sbin_command("ntfscat").arg(&fs).arg("$Bitmap"));
    let cluster = 4096;
    // mkntfs leaves the last sector of the partition (the backup boot sector) out.
    let clusters = (48 * MIB - 512) / cluster;
    let mut want: Vec<(u64, u64)> = Vec::new();
    for c in 0..clusters {
        if bitmap[(c / 8) as usize] >> (c % 8) & 1 == 0 {
            let at = MIB + c * cluster;
            match want.last_mut() {
                Some(l) if l.0 + l.1 == at => l.1 += cluster,
                _ => want.push((at, cluster)),
            }
        }
    }
    assert_eq!(map.ranges(), &want[..]);
    for format in ["vhdx", "vhd"] {
        let img = dir.path().join(format!("d.{format}"));
        to_image(&raw, &img, format, "1M");
        let plain = compact_to(
            &img,
            &dir.path().join("plain"),
            false,
            &OpenOptions::default(),
        );
        let out = dir.path().join(format!("out.{format}"));
        let s = compact_to(&img, &out, true, &OpenOptions::default());
        assert_eq!(s.volumes[1].skipped, Some(SkipKind::Encrypted));
        assert_eq!(s.volumes[1].blocks_released, 0);
        assert!(s.volumes[0].blocks_released > 0, "{:?}", s.volumes[0]);
        assert!(
            s.file_len_after + 25 * MIB <= plain.file_len_after,
            "{format}: {} vs zero-only {}",
            s.file_len_after,
            plain.file_len_after
        );
        let back = qemu_back(&out, format, dir.path());
        verify(&guest, &back, map.ranges());
        eprintln!(
            "ntfs {format}: {} -> {} (zero-only {})",
            file_len(&img),
            s.file_len_after,
            plain.file_len_after
        );
    }
    // Dirty: skipped, and the compacted copy reads exactly as the original.
    set_ntfs_dirty(&fs);
    dd_into(&raw, MIB, &fs);
    let map = map_of(&raw);
    assert_eq!(
        map.volumes[0].skipped,
        Some(SkipKind::Dirty),
        "{:?}",
        map.volumes[0]
    );
    let img = dir.path().join("dirty.vhdx");
    to_image(&raw, &img, "vhdx", "1M");
    let out = dir.path().join("dirty-out.vhdx");
    let s = compact_to(&img, &out, true, &OpenOptions::default());
    assert_eq!(s.free_space_blocks_released, 0);
    same_outside(&raw, &qemu_back(&out, "vhdx", dir.path()), &[]);
}

#[test]
fn ext4_needing_recovery_is_skipped_and_kept_whole() {
    if !common::have_tools(&["mkfs.ext4", "debugfs", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("fs.img");
    ext_image(
        &fs,
        40 * MIB,
        "ext4",
        &["-b", "4096"],
        &[GuestFile::new("a", 1 << 20, 1)],
        24 << 20,
    );
    debugfs_w(&fs, "feature needs_recovery");
    let map = map_of(&fs);
    assert_eq!(
        map.volumes[0].skipped,
        Some(SkipKind::NeedsRecovery),
        "{:?}",
        map.volumes[0]
    );
    assert!(map.is_empty());
    for format in ["vhdx", "vhd"] {
        let img = dir.path().join(format!("d.{format}"));
        to_image(&fs, &img, format, "1M");
        let out = dir.path().join(format!("out.{format}"));
        let s = compact_to(&img, &out, true, &OpenOptions::default());
        assert_eq!(s.free_space_blocks_released, 0);
        assert_eq!(s.volumes[0].skipped, Some(SkipKind::NeedsRecovery));
        assert!(s.volumes[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("needs_recovery"));
        same_outside(&fs, &qemu_back(&out, format, dir.path()), &[]);
    }
}

/// A differencing child at `child` over `parent` holding the bytes of the raw disk `now`
/// where they differ from `base` (the raw disk `parent` holds), written with our writer in
/// 64 KiB pieces.
fn diff_child(parent: &Path, child: &Path, base: &Path, now: &Path) {
    use std::os::unix::fs::FileExt;
    create(child, &CreateOptions::new().parent(parent)).unwrap();
    let d = Disk::open_rw(child, &OpenOptions::default()).unwrap();
    let (a, b) = (
        std::fs::File::open(base).unwrap(),
        std::fs::File::open(now).unwrap(),
    );
    let len = a.metadata().unwrap().len();
    let piece = 64 << 10;
    let (mut x, mut y) = (vec![0u8; piece], vec![0u8; piece]);
    let mut off = 0;
    while off < len {
        let n = (len - off).min(piece as u64) as usize;
        a.read_exact_at(&mut x[..n], off).unwrap();
        b.read_exact_at(&mut y[..n], off).unwrap();
        if x[..n] != y[..n] {
            d.write_at(&y[..n], off).unwrap();
        }
        off += n as u64;
    }
    d.close().unwrap();
}

/// The 1 GiB guest of the size bound: GPT, one ext4 partition over the rest of the disk,
/// `live` MiB of files in `base.raw`; `now.raw` adds `more` MiB of files and 600 MiB of
/// junk written and deleted.
fn big_guest(dir: &Path, live: &[GuestFile], more: &[GuestFile]) -> (Guest, PathBuf) {
    let fs_len = 1022 * MIB;
    let fs = dir.join("fs.img");
    ext_image(&fs, fs_len, "ext4", &[], live, 0);
    let base = dir.join("base.raw");
    place(&base, 1024 * MIB, Some(("gpt", "8300")), MIB, &fs);
    for f in more {
        ext_put(&fs, &f.name, &f.bytes());
    }
    add_ext_junk(&fs, 600 << 20, 3);
    let now = dir.join("now.raw");
    place(&now, 1024 * MIB, Some(("gpt", "8300")), MIB, &fs);
    let mut files = live.to_vec();
    files.extend_from_slice(more);
    let guest = Guest {
        raw: now,
        offset: MIB,
        fs_len,
        fs: Fs::Ext,
        files,
    };
    (guest, base)
}

fn files(prefix: &str, n: usize, each: usize, seed: u64) -> Vec<GuestFile> {
    (0..n)
        .map(|i| GuestFile::new(&format!("{prefix}{i}"), each, seed + i as u64))
        .collect()
}

/// Issue #6's bound: a 1 GiB ext4 disk with 200 MiB of live files and 600 MiB of deleted
/// junk compacts to at most 260 MiB, as a dynamic VHDX (1 MiB blocks, as WSL2 makes them)
/// and a dynamic VHD (2 MiB blocks).
#[test]
fn one_gib_ext4_with_deleted_junk_ends_under_260_mib_dynamic() {
    if !common::have_tools(&["mkfs.ext4", "debugfs", "e2fsck", "sgdisk", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (guest, _) = big_guest(dir.path(), &files("live", 4, 50 << 20, 100), &[]);
    let map = map_of(&guest.raw);
    for format in ["vhdx", "vhd"] {
        let img = dir.path().join(format!("d.{format}"));
        to_image(&guest.raw, &img, format, "1M");
        let before = file_len(&img);
        let plain = compact_to(
            &img,
            &dir.path().join("plain"),
            false,
            &OpenOptions::default(),
        );
        let out = dir.path().join(format!("out.{format}"));
        let s = compact_to(&img, &out, true, &OpenOptions::default());
        eprintln!(
            "1 GiB ext4 {format}: {} MiB -> {} MiB (zero-only full: {} MiB), {:.2} s",
            before >> 20,
            s.file_len_after >> 20,
            plain.file_len_after >> 20,
            s.seconds
        );
        assert!(
            s.file_len_after <= 260 * MIB,
            "{format}: {}",
            s.file_len_after
        );
        assert!(
            plain.file_len_after >= 780 * MIB,
            "{format}: the junk is not zeros"
        );
        verify(&guest, &qemu_back(&out, format, dir.path()), map.ranges());
    }
}

/// The same guest as a differencing disk: the parent holds the disk with 100 MiB of files,
/// the child the next 100 MiB of files and the 600 MiB of junk written and deleted (as the
/// guest wrote them). Compacting the child gives back the junk's blocks; the chain reads
/// back (libvhdi) with the file system clean and every file identical.
#[test]
fn one_gib_ext4_with_deleted_junk_ends_under_260_mib_differencing() {
    if !common::have_tools(&["mkfs.ext4", "debugfs", "e2fsck", "sgdisk", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (guest, base) = big_guest(
        dir.path(),
        &files("old", 2, 50 << 20, 200),
        &files("new", 2, 50 << 20, 300),
    );
    let map = map_of(&guest.raw);
    for format in ["vhdx", "vhd"] {
        let parent = dir.path().join(format!("base.{format}"));
        to_image(&base, &parent, format, "1M");
        let child = dir.path().join(format!("child.{format}"));
        diff_child(&parent, &child, &base, &guest.raw);
        let before = file_len(&child);
        let plain = compact_to(
            &child,
            &dir.path().join(format!("plain.{format}")),
            false,
            &OpenOptions::default(),
        );
        let out = dir.path().join(format!("out.{format}"));
        let s = compact_to(&child, &out, true, &OpenOptions::default());
        eprintln!(
            "1 GiB ext4 differencing {format}: child {} MiB -> {} MiB (zero-only full: {} MiB), parent {} MiB",
            before >> 20,
            s.file_len_after >> 20,
            plain.file_len_after >> 20,
            file_len(&parent) >> 20
        );
        assert!(s.free_space_blocks_released > 0);
        assert!(
            s.file_len_after + file_len(&parent) <= 260 * MIB,
            "{format}: {}",
            s.file_len_after
        );
        assert!(
            plain.file_len_after >= 600 * MIB,
            "{format}: the junk is not zeros"
        );
        let back = libvhdi_back(&out, &[&parent], dir.path());
        verify(&guest, &back, map.ranges());
    }
}

/// `trim_free_space` (vhdx trim --free-space): the free ranges this file stores read as
/// zeros afterwards, their host space is punched out, the used bytes stay; a differencing
/// child never grows (ranges its parent holds are left alone).
#[test]
fn trimming_free_space_gives_back_host_space() {
    if !common::have_tools(&["mkfs.ext4", "debugfs", "e2fsck", "sgdisk", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let live = files("f", 3, 2 << 20, 40);
    let fs = dir.path().join("fs.img");
    ext_image(&fs, 60 * MIB, "ext4", &["-b", "4096"], &live, 0);
    let base = dir.path().join("base.raw");
    place(&base, 62 * MIB, Some(("gpt", "8300")), MIB, &fs);
    add_ext_junk(&fs, 30 << 20, 9);
    let raw = dir.path().join("now.raw");
    place(&raw, 62 * MIB, Some(("gpt", "8300")), MIB, &fs);
    let guest = Guest {
        raw: raw.clone(),
        offset: MIB,
        fs_len: 60 * MIB,
        fs: Fs::Ext,
        files: live,
    };
    let map = map_of(&raw);
    let free_total: u64 = map.ranges().iter().map(|r| r.1).sum();
    // Dynamic VHDX.
    let img = dir.path().join("d.vhdx");
    to_image(&raw, &img, "vhdx", "1M");
    let host = |p: &Path| vhdx_core::write::compact::host_bytes(p).unwrap();
    let before = host(&img);
    let d = Disk::open_rw(&img, &OpenOptions::default()).unwrap();
    let vols = trim_free_space(&d, None).unwrap();
    d.close().unwrap();
    assert_eq!(vols.len(), 1);
    assert!(vols[0].bytes_reclaimed > 25 * MIB && vols[0].bytes_reclaimed <= free_total);
    assert!(
        host(&img) + 25 * MIB <= before,
        "{} -> {}",
        before,
        host(&img)
    );
    let back = qemu_back(&img, "vhdx", dir.path());
    verify(&guest, &back, map.ranges());
    let back_bytes = std::fs::read(&back).unwrap();
    for &(o, l) in map.ranges() {
        assert!(
            back_bytes[o as usize..(o + l) as usize]
                .iter()
                .all(|&b| b == 0),
            "{o:#x}"
        );
    }
    // Differencing VHDX: the child only holds what changed since the parent.
    let parent = dir.path().join("p.vhdx");
    to_image(&base, &parent, "vhdx", "1M");
    let child = dir.path().join("c.vhdx");
    diff_child(&parent, &child, &base, &raw);
    let len = file_len(&child);
    let d = Disk::open_rw(&child, &OpenOptions::default()).unwrap();
    let vols = trim_free_space(&d, None).unwrap();
    d.close().unwrap();
    assert!(vols[0].bytes_reclaimed > 25 * MIB, "{:?}", vols[0]);
    assert_eq!(file_len(&child), len, "trimming never grows the child");
    let back = libvhdi_back(&child, &[&parent], dir.path());
    verify(&guest, &back, map.ranges());
}

/// The block number `dumpe2fs` gives for group 0's block bitmap.
fn group0_bitmap(img: &Path) -> u64 {
    let out = String::from_utf8(run(common::sbin_command("dumpe2fs").arg(img))).unwrap();
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Block bitmap at "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("group 0's block bitmap")
}

/// XORs `mask` into the byte at `at` of the file.
fn flip(img: &Path, at: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, at).unwrap();
}

/// Maps that cannot be trusted are skipped with the right reason, never half-read: each
/// case starts from a fresh mkfs and changes one thing (with debugfs where it keeps the
/// checksums right, else by flipping bytes).
#[test]
fn untrustworthy_ext_maps_are_skipped_with_their_reason() {
    if !common::have_tools(&["mkfs.ext4", "mkfs.ext2", "debugfs", "dumpe2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    type Change = fn(&Path);
    let cases: &[(&str, &[&str], Change, SkipKind, &str)] = &[
        (
            "ext4",
            &[],
            |p| debugfs_w(p, "ssv state 3"),
            SkipKind::NotClean,
            "errors",
        ),
        (
            "ext4",
            &[],
            |p| debugfs_w(p, "ssv state 0"),
            SkipKind::NotClean,
            "cleanly",
        ),
        (
            "ext4",
            &[],
            |p| debugfs_w(p, "ssv last_orphan 12"),
            SkipKind::NotClean,
            "orphan",
        ),
        (
            "ext4",
            &[],
            |p| debugfs_w(p, "ssv error_count 1"),
            SkipKind::NotClean,
            "errors",
        ),
        (
            "ext4",
            &[],
            |p| debugfs_w(p, "feature needs_recovery"),
            SkipKind::NeedsRecovery,
            "needs_recovery",
        ),
        // An incompat bit nobody knows (with the superblock checksum made right again).
        (
            "ext4",
            &[],
            |p| debugfs_w(p, "ssv feature_incompat 0x800002c2"),
            SkipKind::UnsupportedFeature,
            "incompat",
        ),
        // The superblock checksum no longer matches (a byte of the volume name).
        (
            "ext4",
            &[],
            |p| flip(p, 1024 + 0x78, 0x20),
            SkipKind::Inconsistent,
            "superblock checksum",
        ),
        // A bit of group 0's block bitmap: its metadata_csum checksum no longer matches.
        (
            "ext4",
            &[],
            |p| flip(p, group0_bitmap(p) * 4096 + 600, 0x01),
            SkipKind::Inconsistent,
            "bitmap checksum",
        ),
        // Without checksums, a used block flipped to free: the group's count disagrees.
        (
            "ext2",
            &[],
            |p| flip(p, group0_bitmap(p) * 4096, 0x01),
            SkipKind::Inconsistent,
            "free clusters",
        ),
        // A group descriptor byte (uninit_bg's CRC-16).
        (
            "ext4",
            &["-O", "^metadata_csum,uninit_bg"],
            |p| flip(p, 4096 + 32 + 0x0C, 0x01),
            SkipKind::Inconsistent,
            "descriptor checksum",
        ),
    ];
    for (i, &(kind, args, change, want, text)) in cases.iter().enumerate() {
        let img = dir.path().join(format!("{i}.img"));
        let mut a = vec!["-b", "4096"];
        a.extend_from_slice(args);
        mkfs_ext(&img, 32 * MIB, kind, &a);
        change(&img);
        match our_free(&open_raw(&img)) {
            FreeSpace::Skipped(s) => {
                assert_eq!(s.kind, want, "case {i}: {s:?}");
                assert!(s.reason.contains(text), "case {i}: {s:?}");
            }
            FreeSpace::Free(_) => panic!("case {i}: the map was used"),
        }
    }
    // A file system larger than its partition (the table cut it short).
    let fs = dir.path().join("big.img");
    mkfs_ext(&fs, 32 * MIB, "ext4", &["-b", "4096"]);
    let raw = dir.path().join("cut.raw");
    place(&raw, 34 * MIB, Some(("gpt", "8300")), MIB, &fs);
    run(common::sbin_command("sgdisk")
        .args(["-d1", "-n1:2048:+16M"])
        .arg(&raw));
    let map = map_of(&raw);
    assert_eq!(
        map.volumes[0].skipped,
        Some(SkipKind::Inconsistent),
        "{:?}",
        map.volumes[0]
    );
    assert!(map.volumes[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("larger than its volume"));
}

/// An ext2 file system made elsewhere (dfvfs's `ext2.vhd`, qemu 5.3 on Windows): our map,
/// read through our VHD reader, equals dumpe2fs's on libvhdi's export of the disk.
#[test]
fn real_ext2_vhd_map_equals_dumpe2fs() {
    let Some(real) = common::shared_real() else {
        return;
    };
    if !common::have_tools(&["dumpe2fs"]) {
        return;
    }
    let vhd = real.join("ext2.vhd");
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("ext2.raw");
    std::fs::write(&raw, common::pyvhdi_read_all(&vhd, &[])).unwrap();
    let (want, bs) = dumpe2fs_free(&raw);
    let got = match our_free(&Disk::open(&vhd).unwrap()) {
        FreeSpace::Free(r) => r,
        FreeSpace::Skipped(s) => panic!("skipped: {s:?}"),
    };
    let got: Vec<(u64, u64)> = got.iter().map(|&(o, l)| (o / bs, l / bs)).collect();
    assert_eq!(got, want);
}

/// The child process of the crash test below: compacts (full, free space read) the image
/// named by the variable.
#[test]
#[ignore = "run by the filesystem-aware compaction crash test as a child process"]
fn fs_compact_child() {
    let Ok(path) = std::env::var("VHDX_FSCOMPACT_CHILD") else {
        return;
    };
    let d = Disk::open_rw(&path, &OpenOptions::default()).unwrap();
    println!("GO");
    let t = std::time::Instant::now();
    d.compact(CompactMode::Full, None).unwrap();
    d.close().unwrap();
    println!("DONE {}", t.elapsed().as_micros());
}

/// Asserts `got` (a whole disk) equals `want` outside the sorted `free` ranges.
fn same_outside_bytes(got: &[u8], want: &[u8], free: &[(u64, u64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let mut pos = 0usize;
    for &(o, l) in free.iter().chain([(want.len() as u64, 0)].iter()) {
        let o = o as usize;
        if let Some(i) = (pos..o).find(|&i| got[i] != want[i]) {
            panic!("{what}: used byte {i:#x} changed");
        }
        pos = o + l as usize;
    }
}

/// Filesystem-aware compaction killed at random moments: the used bytes never change (our
/// read, and QEMU's after it replays a dirty log), and running it again reaches the size of
/// an uninterrupted run with the file system clean.
#[test]
fn killed_fs_compactions_keep_every_used_byte() {
    if !common::have_tools(&["mkfs.ext4", "debugfs", "e2fsck", "sgdisk", "qemu-img"]) {
        return;
    }
    let kills: usize = std::env::var("VHDX_FSCOMPACT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let live = files("f", 4, 3 << 20, 60);
    let fs = dir.path().join("fs.img");
    ext_image(&fs, 96 * MIB, "ext4", &["-b", "4096"], &live, 60 << 20);
    let raw = dir.path().join("disk.raw");
    place(&raw, 98 * MIB, Some(("gpt", "8300")), MIB, &fs);
    let guest = Guest {
        raw: raw.clone(),
        offset: MIB,
        fs_len: 96 * MIB,
        fs: Fs::Ext,
        files: live,
    };
    let want = std::fs::read(&raw).unwrap();
    let free = map_of(&raw).ranges().to_vec();
    let template = dir.path().join("t.vhdx");
    to_image(&raw, &template, "vhdx", "1M");
    let child = |p: &Path| {
        common::start_test_child(
            "fscompact::fs_compact_child",
            "VHDX_FSCOMPACT_CHILD",
            p.as_os_str(),
        )
    };
    let (optimum, span) = {
        let p = dir.path().join("timed.vhdx");
        std::fs::copy(&template, &p).unwrap();
        let (mut c, out) = child(&p);
        assert!(c.wait().unwrap().success());
        let done = common::rest_lines(out)
            .iter()
            .find_map(|l| l.strip_prefix("DONE ").map(|v| v.parse::<u64>().unwrap()))
            .unwrap();
        (file_len(&p), done.max(1000))
    };
    let mut rng = Rng(123);
    let mut interrupted = 0;
    for n in 0..kills {
        let what = format!("kill {n}");
        let p = dir.path().join("k.vhdx");
        std::fs::copy(&template, &p).unwrap();
        let (mut c, out) = child(&p);
        std::thread::sleep(std::time::Duration::from_micros(rng.below(span + 1)));
        let _ = c.kill();
        c.wait().unwrap();
        if !common::rest_lines(out)
            .iter()
            .any(|l| l.starts_with("DONE"))
        {
            interrupted += 1;
        }
        let ours = common::read_all(&Disk::open(&p).unwrap(), 4 << 20);
        same_outside_bytes(&ours, &want, &free, &what);
        if n % 6 == 0 {
            let copy = common::qemu_replayed_copy(&p, dir.path());
            let theirs = common::qemu_raw(&copy, "vhdx");
            same_outside_bytes(&theirs, &want, &free, &format!("{what}: qemu"));
        }
        let d = Disk::open_rw(&p, &OpenOptions::default()).unwrap();
        d.compact(CompactMode::Full, None).unwrap();
        d.close().unwrap();
        drop(d);
        assert_eq!(file_len(&p), optimum, "{what}: second compaction");
        if n % 10 == 0 {
            verify(&guest, &qemu_back(&p, "vhdx", dir.path()), &free);
        }
    }
    eprintln!("filesystem-aware compaction: {kills} kills, {interrupted} mid-way, 0 failures");
    assert!(
        interrupted * 4 >= kills,
        "too few kills landed mid-compaction: {interrupted}"
    );
}

/// Hostile file systems: random damage to the metadata of fresh images (superblock, group
/// descriptors, bitmaps; NTFS boot sector, MFT, $Bitmap) never panics or errors; a
/// metadata_csum ext4 either keeps exactly its map (the damage hit nothing the map depends
/// on) or is skipped.
#[test]
fn damaged_file_systems_are_skipped_or_mapped_exactly() {
    if !common::have_tools(&["mkfs.ext4", "mkntfs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ext = dir.path().join("ext4.img");
    mkfs_ext(&ext, 24 * MIB, "ext4", &["-b", "1024"]);
    let ntfs = dir.path().join("ntfs.img");
    std::fs::File::create(&ntfs)
        .unwrap()
        .set_len(24 * MIB)
        .unwrap();
    run(common::sbin_command("mkntfs")
        .args(["-F", "-q", "-Q"])
        .arg(&ntfs));
    let mut rng = Rng(2024);
    for (img, is_ext) in [(&ext, true), (&ntfs, false)] {
        let pristine = std::fs::read(img).unwrap();
        let original = our_free(&MemDisk(pristine.clone()));
        // ext: the superblock, the descriptor block, group 0's block bitmap and some inode
        // table; NTFS: the boot sector, the MFT's first records and $Bitmap's clusters.
        let regions: Vec<(u64, u64)> = if is_ext {
            let bitmap = group0_bitmap(img) * 1024;
            vec![
                (1024, 1024),
                (2048, 1024),
                (bitmap, 1024),
                (200 << 10, 100 << 10),
            ]
        } else {
            let cluster = 4096u64;
            let mft = u64::from_le_bytes(pristine[48..56].try_into().unwrap()) * cluster;
            let mut r = vec![(0, 512), (mft, 16 * 1024)];
            if let FreeSpace::Free(f) = &original {
                r.push((f[0].0.saturating_sub(64 << 10), 64 << 10));
            }
            r
        };
        let (mut skipped, mut mapped) = (0, 0);
        for n in 0..300 {
            let mut bytes = pristine.clone();
            for _ in 0..1 + rng.below(4) {
                let (o, l) = regions[rng.below(regions.len() as u64) as usize];
                let at = (o + rng.below(l)) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            let disk = MemDisk(bytes);
            let layout = guest::inspect(&disk).unwrap();
            for v in &layout.volumes {
                let got = vhdx_core::guest::freespace::free_ranges(&disk, v).unwrap();
                match got {
                    FreeSpace::Free(_) => mapped += 1,
                    FreeSpace::Skipped(_) => skipped += 1,
                }
                if is_ext && v.kind == VolumeKind::Ext4 {
                    if let FreeSpace::Free(_) = got {
                        assert_eq!(got, original, "damage {n}");
                    }
                }
            }
        }
        eprintln!("{}: {mapped} mapped, {skipped} skipped", img.display());
        // (NTFS has no checksums on $Bitmap: a flipped bit there is believed, as Windows
        // believes it; what is asked of it here is to never fail or panic.)
        if is_ext {
            assert!(
                skipped > 50 && mapped > 0,
                "{mapped} mapped, {skipped} skipped"
            );
        }
    }
}

/// Mounts `img` at `dir` (ext: `mount -o loop`; NTFS: the ntfs-3g FUSE driver), runs `f`
/// on the mounted tree and unmounts. `false` when this machine does not allow the mount
/// (no privilege, no loop device or FUSE): that is not a missing tool, so even under CI
/// the caller skips.
fn with_mounted(img: &Path, fs: Fs, dir: &Path, f: impl FnOnce(&Path)) -> bool {
    let ok = match fs {
        Fs::Ext => Command::new("mount")
            .args(["-o", "loop"])
            .arg(img)
            .arg(dir)
            .output(),
        Fs::Ntfs => common::sbin_command("ntfs-3g").arg(img).arg(dir).output(),
    }
    .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: cannot mount {} here", img.display());
        return false;
    }
    f(dir);
    run(Command::new("umount").arg(dir));
    true
}

/// File systems written by their own drivers (the Linux kernel's ext4, ntfs-3g), files
/// deleted with `rm` after junk filled the free space: the maps are exact (ext: dumpe2fs;
/// NTFS: ntfs-3g's $Bitmap), compaction gives the junk back, and the checkers and the files
/// agree afterwards. Skipped where this machine cannot mount.
#[test]
fn file_systems_written_by_their_drivers_compact_exactly() {
    if !common::have_tools(&[
        "mkfs.ext4",
        "dumpe2fs",
        "debugfs",
        "e2fsck",
        "mkntfs",
        "ntfs-3g",
        "ntfscat",
        "ntfsfix",
        "qemu-img",
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let live = vec![
        GuestFile::new("one", 5 << 20, 71),
        GuestFile::new("two", 333_333, 72),
    ];
    let fill = |root: &Path| {
        std::fs::write(root.join("junk"), junk(30 << 20, 73)).unwrap();
        for f in &live {
            std::fs::write(root.join(&f.name), f.bytes()).unwrap();
        }
        std::fs::create_dir(root.join("many")).unwrap();
        for i in 0..300 {
            std::fs::write(root.join("many").join(format!("f{i}")), format!("{i}\n")).unwrap();
        }
        run(&mut Command::new("sync"));
        std::fs::remove_file(root.join("junk")).unwrap();
    };
    for fs in [Fs::Ext, Fs::Ntfs] {
        let img = dir.path().join(format!("{fs:?}.img"));
        match fs {
            Fs::Ext => mkfs_ext(&img, 64 * MIB, "ext4", &[]),
            Fs::Ntfs => {
                std::fs::File::create(&img)
                    .unwrap()
                    .set_len(64 * MIB)
                    .unwrap();
                run(common::sbin_command("mkntfs")
                    .args(["-F", "-q", "-Q"])
                    .arg(&img));
            }
        }
        if !with_mounted(&img, fs, &mnt, fill) {
            continue;
        }
        let guest = Guest {
            raw: img.clone(),
            offset: 0,
            fs_len: 64 * MIB,
            fs,
            files: live.clone(),
        };
        let map = map_of(&img);
        assert_eq!(map.volumes[0].skipped, None, "{:?}", map.volumes[0]);
        if fs == Fs::Ext {
            assert_ext_map_exact(&img);
        } else {
            let bitmap = run(common::sbin_command("ntfscat").arg(&img).arg("$Bitmap"));
            let used = |c: u64| bitmap[(c / 8) as usize] >> (c % 8) & 1 == 1;
            let clusters = (64 * MIB - 512) / 4096;
            let free: u64 = (0..clusters).filter(|&c| !used(c)).count() as u64 * 4096;
            assert_eq!(map.volumes[0].free_bytes, Some(free));
        }
        let vhdx = dir.path().join(format!("{fs:?}.vhdx"));
        to_image(&img, &vhdx, "vhdx", "1M");
        let out = dir.path().join(format!("{fs:?}-out.vhdx"));
        let s = compact_to(&vhdx, &out, true, &OpenOptions::default());
        eprintln!(
            "{fs:?} written by its driver: {} -> {}",
            file_len(&vhdx),
            s.file_len_after
        );
        assert!(s.free_space_blocks_released >= 25, "{fs:?}: {s:?}");
        verify(&guest, &qemu_back(&out, "vhdx", dir.path()), map.ranges());
    }
}
