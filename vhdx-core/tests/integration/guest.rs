//! Guest inspection and `odx-check` against real file systems made by their own tools
//! (mkntfs/ntfscp, mkfs.ext2/3/4, mkfs.vfat, mkfs.exfat, mkswap) in partition tables made by
//! sfdisk and sgdisk, converted to VHDX/VHD by qemu-img (independent of our writer), and a
//! differencing VHDX written through `Disk::open_rw`. Partition offsets and sizes are
//! checked against `sfdisk --json` and `sgdisk -i`; NTFS files get their sparse,
//! compressed, encrypted and reparse attributes from the MFT editor in `ntfs_edit`, and
//! ntfsinfo confirms what ntfs-3g sees. Every odx-check case asserts the exact table of
//! (rule, subject, status).

use crate::common::{have_tools, qemu_img, run, MemDisk};
use crate::ntfs_edit::{self, *};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::guest::{
    self, odx_check_disk, Controller, OdxOptions, OdxReport, VolumeKind, VolumeReader,
};
use vhdx_core::{Disk, ErrorKind, OpenOptions, VirtualDisk};

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A zero-filled raw file of `size` bytes.
fn raw_file(path: &Path, size: u64) {
    fs::File::create(path).unwrap().set_len(size).unwrap();
}

/// An NTFS volume image of `size` bytes holding `files` (name, content) in its root.
fn ntfs_volume(dir: &Path, name: &str, size: u64, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let vol = dir.join(name);
    raw_file(&vol, size);
    run(Command::new("mkntfs").args(["-F", "-Q", "-q", "-L", "odx", s(&vol)]));
    for (fname, content) in files {
        let src = dir.join(format!("src-{fname}"));
        fs::write(&src, content).unwrap();
        run(Command::new("ntfscp").args([s(&vol), s(&src), fname]));
    }
    vol
}

/// Random-looking bytes (deterministic).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Copies the file `vol` into `disk` at byte `offset`.
fn place(disk: &Path, vol: &Path, offset: u64) {
    let bytes = fs::read(vol).unwrap();
    let f = fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.write_all_at(&bytes, offset).unwrap();
}

/// A full (non-sparse) copy of `from`, as a plain copy to a Windows host makes it.
fn full_copy(from: &Path, to: &Path) {
    run(Command::new("cp").args(["--sparse=never", s(from), s(to)]));
}

fn ntfsinfo(vol: &Path, file: &str) -> String {
    String::from_utf8(run(Command::new("ntfsinfo").args(["-F", file, s(vol)]))).unwrap()
}

/// (rule, subject, status) of every finding, the host file system's line left out (its
/// value depends on the machine) after checking it is there, informational.
fn table(r: &OdxReport) -> Vec<(String, String, String)> {
    let host_fs: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.rule.as_str() == "host_filesystem")
        .collect();
    assert_eq!(host_fs.len(), r.host_files.len());
    assert!(host_fs.iter().all(|f| f.status.as_str() == "info"));
    r.findings
        .iter()
        .filter(|f| f.rule.as_str() != "host_filesystem")
        .map(|f| {
            let subject = if r.host_files.contains(&f.subject) {
                "host".to_string()
            } else {
                f.subject.clone()
            };
            (
                f.rule.as_str().to_string(),
                subject,
                f.status.as_str().to_string(),
            )
        })
        .collect()
}

fn row(rule: &str, subject: &str, status: &str) -> (String, String, String) {
    (rule.into(), subject.into(), status.into())
}

/// The rows of a host file that is not sparse, compressed or encrypted.
fn host_ok() -> Vec<(String, String, String)> {
    vec![
        row("host_file_sparse", "host", "pass"),
        row("host_file_compressed", "host", "pass"),
        row("host_file_encrypted", "host", "pass"),
    ]
}

/// The rows of an NTFS volume.
fn ntfs_ok(n: u32) -> Vec<(String, String, String)> {
    let v = format!("volume {n}");
    vec![
        row("guest_volume_bitlocker", &v, "pass"),
        row("guest_volume_not_ntfs", &v, "pass"),
    ]
}

/// The rows of a guest file, with `fail` the rule that fails (if any).
fn file_rows(n: u32, path: &str, fail: Option<&str>) -> Vec<(String, String, String)> {
    let subject = format!("volume {n}: {path}");
    let mut v = vec![row("guest_file_not_found", &subject, "pass")];
    for rule in [
        "guest_file_sparse",
        "guest_file_compressed",
        "guest_file_encrypted",
        "guest_file_resident",
        "guest_file_reparse_point",
    ] {
        let st = if fail == Some(rule) { "fail" } else { "pass" };
        v.push(row(rule, &subject, st));
    }
    v
}

fn scsi() -> Vec<(String, String, String)> {
    vec![row("controller_ide", "controller", "pass")]
}

fn opts(volume: Option<u32>, files: &[&str], controller: Controller) -> OdxOptions {
    OdxOptions {
        volume,
        files: files.iter().map(|f| f.to_string()).collect(),
        controller,
    }
}

fn check(path: &Path, o: &OdxOptions) -> OdxReport {
    let disk = Disk::open(path).unwrap();
    odx_check_disk(&disk, o).unwrap()
}

const BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// The NTFS files of the ODX cases: name, size, edit.
fn odx_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("plain.bin", noise(200 << 10, 1)),
        ("small.txt", b"resident in its MFT record\n".to_vec()),
        ("sparse.bin", noise(96 << 10, 2)),
        ("compressed.bin", noise(96 << 10, 3)),
        ("encrypted.bin", noise(96 << 10, 4)),
        ("dedup.bin", noise(96 << 10, 5)),
        ("symlink.bin", noise(96 << 10, 6)),
    ]
}

/// Makes the NTFS volume of the ODX cases, edits the flagged files and confirms the edits
/// with ntfsinfo.
fn odx_ntfs_volume(dir: &Path, size: u64) -> PathBuf {
    let vol = ntfs_volume(dir, "ntfs.raw", size, &odx_files());
    let mut b = fs::read(&vol).unwrap();
    ntfs_edit::set_flags(&mut b, "sparse.bin", SI_SPARSE, ATTR_SPARSE);
    ntfs_edit::set_flags(&mut b, "compressed.bin", SI_COMPRESSED, ATTR_COMPRESSED);
    ntfs_edit::set_flags(&mut b, "encrypted.bin", SI_ENCRYPTED, ATTR_ENCRYPTED);
    ntfs_edit::add_reparse_point(&mut b, "dedup.bin", 0x8000_0013);
    ntfs_edit::add_reparse_point(&mut b, "symlink.bin", 0xA000_000C);
    fs::write(&vol, &b).unwrap();
    // What ntfs-3g sees.
    let i = ntfsinfo(&vol, "/sparse.bin");
    assert!(i.contains("SPARSE_FILE"), "{i}");
    assert!(i.contains("Attribute flags:\t 0x8000"), "{i}");
    let i = ntfsinfo(&vol, "/compressed.bin");
    assert!(i.contains("COMPRESSED"), "{i}");
    assert!(i.contains("Attribute flags:\t 0x0001"), "{i}");
    let i = ntfsinfo(&vol, "/encrypted.bin");
    assert!(i.contains("ENCRYPTED"), "{i}");
    assert!(i.contains("Attribute flags:\t 0x4000"), "{i}");
    for f in ["/dedup.bin", "/symlink.bin"] {
        let i = ntfsinfo(&vol, f);
        assert!(i.contains("REPARSE_POINT"), "{i}");
        assert!(i.contains("$REPARSE_POINT"), "{i}");
    }
    let i = ntfsinfo(&vol, "/plain.bin");
    assert!(i.contains("ARCHIVE (0x00000020)"), "{i}");
    vol
}

/// Disk A: GPT (sgdisk) with 1: NTFS (the ODX files), 2: ext4. Returns (raw, qemu-img's
/// VHDX, a full copy of that VHDX).
fn disk_a(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let raw = dir.join("a.raw");
    raw_file(&raw, 48 * MIB);
    run(Command::new("sgdisk").args([
        "-n",
        "1:2048:+32M",
        "-t",
        "1:0700",
        "-c",
        "1:data",
        "-n",
        "2:0:+12M",
        "-t",
        "2:8300",
        "-c",
        "2:linux",
        s(&raw),
    ]));
    let ntfs = odx_ntfs_volume(dir, 32 * MIB);
    place(&raw, &ntfs, MIB);
    let ext = dir.join("ext4.raw");
    raw_file(&ext, 12 * MIB);
    run(Command::new("mkfs.ext4").args(["-q", "-F", s(&ext)]));
    place(&raw, &ext, 33 * MIB);
    let vhdx = dir.join("a.vhdx");
    qemu_img(&["convert", "-O", "vhdx", s(&raw), s(&vhdx)]);
    let full = dir.join("a-full.vhdx");
    full_copy(&vhdx, &full);
    (raw, vhdx, full)
}

#[test]
fn odx_verdicts_on_gpt_ntfs_and_ext4() {
    if !have_tools(&[
        "mkntfs",
        "ntfscp",
        "ntfsinfo",
        "sgdisk",
        "mkfs.ext4",
        "qemu-img",
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, sparse_vhdx, vhdx) = disk_a(dir.path());

    // 1. A plain file on NTFS over SCSI: eligible, every rule passes.
    let r = check(&vhdx, &opts(Some(1), &["/plain.bin"], Controller::Scsi));
    let want: Vec<_> = [
        host_ok(),
        scsi(),
        ntfs_ok(1),
        file_rows(1, "/plain.bin", None),
    ]
    .concat();
    assert_eq!(table(&r), want);
    assert!(r.eligible);
    assert_eq!(r.volumes, vec![1]);
    assert_eq!(r.host_files, vec![vhdx.display().to_string()]);

    // 2. The same on IDE: only the controller fails.
    let r = check(&vhdx, &opts(Some(1), &["/plain.bin"], Controller::Ide));
    let want: Vec<_> = [
        host_ok(),
        vec![row("controller_ide", "controller", "fail")],
        ntfs_ok(1),
        file_rows(1, "/plain.bin", None),
    ]
    .concat();
    assert_eq!(table(&r), want);
    assert!(!r.eligible);

    // 3. Each flagged file fails exactly its rule; a missing one is not found. Paths are
    // case-insensitive and take backslashes and a drive letter, as on Windows.
    let files = [
        "/sparse.bin",
        "/COMPRESSED.BIN",
        r"\encrypted.bin",
        r"C:\small.txt",
        "/dedup.bin",
        "/symlink.bin",
        "/missing.bin",
    ];
    let r = check(&vhdx, &opts(Some(1), &files, Controller::Scsi));
    let want: Vec<_> = [
        host_ok(),
        scsi(),
        ntfs_ok(1),
        file_rows(1, "/sparse.bin", Some("guest_file_sparse")),
        file_rows(1, "/COMPRESSED.BIN", Some("guest_file_compressed")),
        file_rows(1, r"\encrypted.bin", Some("guest_file_encrypted")),
        file_rows(1, r"C:\small.txt", Some("guest_file_resident")),
        file_rows(1, "/dedup.bin", Some("guest_file_reparse_point")),
        file_rows(1, "/symlink.bin", Some("guest_file_reparse_point")),
        vec![row(
            "guest_file_not_found",
            "volume 1: /missing.bin",
            "fail",
        )],
    ]
    .concat();
    assert_eq!(table(&r), want);
    assert!(!r.eligible);
    let msg = |subject: &str, rule: &str| {
        r.findings
            .iter()
            .find(|f| f.subject == subject && f.rule.as_str() == rule)
            .unwrap()
            .message
            .clone()
    };
    assert!(msg("volume 1: /dedup.bin", "guest_file_reparse_point").contains("deduplicated"));
    assert!(msg("volume 1: /symlink.bin", "guest_file_reparse_point").contains("0xa000000c"));

    // 4. Every volume (the default): the ext4 volume fails.
    let r = check(&vhdx, &opts(None, &[], Controller::Scsi));
    let want: Vec<_> = [
        host_ok(),
        scsi(),
        ntfs_ok(1),
        vec![
            row("guest_volume_bitlocker", "volume 2", "pass"),
            row("guest_volume_not_ntfs", "volume 2", "fail"),
        ],
    ]
    .concat();
    assert_eq!(table(&r), want);
    assert_eq!(r.volumes, vec![1, 2]);

    // 5. Files without --volume go to the only NTFS volume.
    let r = check(&vhdx, &opts(None, &["/plain.bin"], Controller::Scsi));
    assert_eq!(
        table(&r)[8..],
        file_rows(1, "/plain.bin", None)[..],
        "{:?}",
        table(&r)
    );

    // 6. Files on the ext4 volume cannot be examined.
    let r = check(&vhdx, &opts(Some(2), &["/x"], Controller::Scsi));
    let want: Vec<_> = [
        host_ok(),
        scsi(),
        vec![
            row("guest_volume_bitlocker", "volume 2", "pass"),
            row("guest_volume_not_ntfs", "volume 2", "fail"),
            row("guest_file_not_examined", "volume 2: /x", "fail"),
        ],
    ]
    .concat();
    assert_eq!(table(&r), want);

    // 7. qemu-img's VHDX keeps holes: sparse on the host.
    let r = check(
        &sparse_vhdx,
        &opts(Some(1), &["/plain.bin"], Controller::Scsi),
    );
    let mut want: Vec<_> = [
        host_ok(),
        scsi(),
        ntfs_ok(1),
        file_rows(1, "/plain.bin", None),
    ]
    .concat();
    want[0].2 = "fail".into();
    assert_eq!(table(&r), want);

    // 8. A volume the disk does not have is an argument error.
    let disk = Disk::open(&vhdx).unwrap();
    let e = odx_check_disk(&disk, &opts(Some(9), &[], Controller::Scsi)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

/// Disk B: MBR (sfdisk), 1: NTFS, 2: a BitLocker signature volume; as a dynamic VHD.
#[test]
fn odx_bitlocker_volume_on_mbr_vhd() {
    if !have_tools(&["mkntfs", "ntfscp", "sfdisk", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("b.raw");
    raw_file(&raw, 24 * MIB);
    sfdisk(
        &raw,
        "label: dos\nstart=2048, size=16MiB, type=7\nsize=4MiB, type=7\n",
    );
    let ntfs = ntfs_volume(
        d,
        "ntfs.raw",
        16 * MIB,
        &[("plain.bin", noise(64 << 10, 9))],
    );
    place(&raw, &ntfs, MIB);
    place(&raw, &bitlocker_boot_sector(d), 17 * MIB);
    let vhd = d.join("b.vhd");
    qemu_img(&[
        "convert",
        "-O",
        "vpc",
        "-o",
        "subformat=dynamic",
        s(&raw),
        s(&vhd),
    ]);
    let full = d.join("b-full.vhd");
    full_copy(&vhd, &full);
    let r = check(&full, &opts(None, &["/plain.bin"], Controller::Scsi));
    let want: Vec<_> = [
        host_ok(),
        scsi(),
        ntfs_ok(1),
        vec![row("guest_volume_bitlocker", "volume 2", "fail")],
        file_rows(1, "/plain.bin", None),
    ]
    .concat();
    assert_eq!(table(&r), want);
    assert!(!r.eligible);
    // Only volume 1: eligible.
    let r = check(&full, &opts(Some(1), &["/plain.bin"], Controller::Scsi));
    assert!(r.eligible, "{:?}", table(&r));
    // Files on the BitLocker volume cannot be examined.
    let r = check(&full, &opts(Some(2), &["/plain.bin"], Controller::Scsi));
    let want: Vec<_> = [
        host_ok(),
        scsi(),
        vec![
            row("guest_volume_bitlocker", "volume 2", "fail"),
            row("guest_file_not_examined", "volume 2: /plain.bin", "fail"),
        ],
    ]
    .concat();
    assert_eq!(table(&r), want);
}

/// A volume of 1 MiB whose boot sector carries the BitLocker signature (`-FVE-FS-` at
/// offset 3), as every BitLocker volume of Windows 7 and later does.
fn bitlocker_boot_sector(dir: &Path) -> PathBuf {
    let p = dir.join("fve.raw");
    let mut b = vec![0u8; MIB as usize];
    b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    b[3..11].copy_from_slice(b"-FVE-FS-");
    b[11..13].copy_from_slice(&512u16.to_le_bytes());
    b[510] = 0x55;
    b[511] = 0xAA;
    fs::write(&p, &b).unwrap();
    p
}

fn sfdisk(raw: &Path, script: &str) {
    use std::io::Write;
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(raw)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sfdisk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sfdisk --json` partitions: (number from the node name, start, size, type).
fn sfdisk_json(raw: &Path) -> (String, Vec<(u32, u64, u64, String)>) {
    let out = run(Command::new("sfdisk").arg("--json").arg(raw));
    let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let t = &j["partitiontable"];
    let name = s(raw).to_string();
    let parts = t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            let number = node[name.len()..].parse().unwrap();
            (
                number,
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (t["label"].as_str().unwrap().to_string(), parts)
}

/// Disk D: MBR (sfdisk) with every file system the tools here make, logical partitions
/// included; offsets and sizes against `sfdisk --json`, kinds against the tool that made
/// each volume.
#[test]
fn volumes_on_mbr_with_logical_partitions() {
    let tools = [
        "sfdisk",
        "mkntfs",
        "mkfs.ext2",
        "mkfs.ext3",
        "mkfs.ext4",
        "mkfs.vfat",
        "mkswap",
        "mkfs.exfat",
        "qemu-img",
    ];
    if !have_tools(&tools) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("d.raw");
    raw_file(&raw, 64 * MIB);
    sfdisk(
        &raw,
        "label: dos\n\
         start=2048, size=4MiB, type=83\n\
         size=8MiB, type=83\n\
         size=8MiB, type=83\n\
         type=5\n\
         size=2MiB, type=1\n\
         size=8MiB, type=6\n\
         size=4MiB, type=82\n\
         size=8MiB, type=7\n\
         size=1MiB, type=7\n\
         size=8MiB, type=7\n",
    );
    let (label, parts) = sfdisk_json(&raw);
    assert_eq!(label, "dos");
    let make: Vec<(u32, &[&str], VolumeKind)> = vec![
        (1, &["mkfs.ext2", "-q", "-F"], VolumeKind::Ext2),
        (2, &["mkfs.ext3", "-q", "-F"], VolumeKind::Ext3),
        (3, &["mkfs.ext4", "-q", "-F"], VolumeKind::Ext4),
        (5, &["mkfs.vfat", "-F", "12"], VolumeKind::Fat12),
        (6, &["mkfs.vfat", "-F", "16", "-s", "1"], VolumeKind::Fat16),
        (7, &["mkswap", "-q"], VolumeKind::Swap),
        (8, &["mkfs.exfat"], VolumeKind::ExFat),
        (9, &[], VolumeKind::BitLocker),
        (10, &["mkntfs", "-F", "-Q", "-q"], VolumeKind::Ntfs),
    ];
    for (n, cmd, _) in &make {
        let (_, start, size, _) = parts.iter().find(|p| p.0 == *n).unwrap();
        let vol = d.join(format!("p{n}.raw"));
        if cmd.is_empty() {
            fs::copy(bitlocker_boot_sector(d), &vol).unwrap();
        } else {
            raw_file(&vol, size * 512);
            let out = Command::new(cmd[0])
                .args(&cmd[1..])
                .arg(&vol)
                .output()
                .unwrap();
            assert!(out.status.success(), "{cmd:?}: {out:?}");
        }
        place(&raw, &vol, start * 512);
    }
    let vhdx = d.join("d.vhdx");
    qemu_img(&["convert", "-O", "vhdx", s(&raw), s(&vhdx)]);
    for path in [&raw, &vhdx] {
        let disk = Disk::open(path).unwrap();
        let l = guest::inspect(&disk).unwrap();
        assert_eq!(l.table.as_str(), "mbr");
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        // Every partition sfdisk lists except the extended container, in its place.
        let want: Vec<(u32, u64, u64, String)> =
            parts.iter().filter(|p| p.3 != "5").cloned().collect();
        let got: Vec<(u32, u64, u64, String)> = l
            .volumes
            .iter()
            .map(|v| {
                let p = v.partition.as_ref().unwrap();
                (
                    v.number,
                    v.offset / 512,
                    v.length / 512,
                    format!("{:x}", p.mbr_type.unwrap()),
                )
            })
            .collect();
        assert_eq!(got, want);
        let kinds: Vec<(u32, VolumeKind)> = l.volumes.iter().map(|v| (v.number, v.kind)).collect();
        let want: Vec<(u32, VolumeKind)> = make.iter().map(|(n, _, k)| (*n, *k)).collect();
        assert_eq!(kinds, want);
    }
}

/// `sgdisk -i N` fields: (first sector, size in sectors, type GUID, unique GUID, name).
fn sgdisk_info(raw: &Path, n: u32) -> (u64, u64, String, String, String) {
    let out = String::from_utf8(run(Command::new("sgdisk").args([
        "-i",
        &n.to_string(),
        s(raw),
    ])))
    .unwrap();
    let field = |key: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in {out}"))
            .trim()
            .to_string()
    };
    let first = field("First sector:")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let size = field("Partition size:")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ty = field("Partition GUID code:")
        .split(' ')
        .next()
        .unwrap()
        .to_lowercase();
    let uuid = field("Partition unique GUID:").to_lowercase();
    let name = field("Partition name:").trim_matches('\'').to_string();
    (first, size, ty, uuid, name)
}

/// Disk E: GPT (sgdisk) with FAT32, NTFS and an empty partition; against `sgdisk -i`; then
/// the primary header destroyed (the backup is used) and both destroyed (an error).
#[test]
fn volumes_on_gpt_against_sgdisk() {
    if !have_tools(&["sgdisk", "mkfs.vfat", "mkntfs", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("e.raw");
    raw_file(&raw, 48 * MIB);
    run(Command::new("sgdisk").args([
        "-n",
        "1:2048:+34M",
        "-t",
        "1:0700",
        "-c",
        "1:efi and more",
        "-n",
        "2:0:+8M",
        "-t",
        "2:0700",
        "-c",
        "2:Windows",
        "-n",
        "3:0:+2M",
        "-t",
        "3:8300",
        "-c",
        "3:empty",
        s(&raw),
    ]));
    let fat = d.join("fat.raw");
    raw_file(&fat, 34 * MIB);
    run(Command::new("mkfs.vfat").args(["-F", "32", "-s", "1", s(&fat)]));
    place(&raw, &fat, MIB);
    let ntfs = ntfs_volume(d, "n.raw", 8 * MIB, &[]);
    place(&raw, &ntfs, 35 * MIB);
    let vhdx = d.join("e.vhdx");
    qemu_img(&["convert", "-O", "vhdx", s(&raw), s(&vhdx)]);
    let disk = Disk::open(&vhdx).unwrap();
    let l = guest::inspect(&disk).unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(l.table.as_str(), "gpt");
    let kinds: Vec<_> = l.volumes.iter().map(|v| (v.number, v.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (1, VolumeKind::Fat32),
            (2, VolumeKind::Ntfs),
            (3, VolumeKind::Unknown)
        ]
    );
    for v in &l.volumes {
        let p = v.partition.as_ref().unwrap();
        let got = (
            v.offset / 512,
            v.length / 512,
            p.type_guid.unwrap().to_string(),
            p.unique_guid.unwrap().to_string(),
            p.name.clone().unwrap(),
        );
        assert_eq!(got, sgdisk_info(&raw, v.number), "partition {}", v.number);
    }
    assert_eq!(
        l.volumes[0]
            .partition
            .as_ref()
            .unwrap()
            .type_guid
            .unwrap()
            .to_string(),
        BASIC_DATA.to_lowercase()
    );
    assert_eq!(
        l.volumes[2].partition.as_ref().unwrap().type_name,
        Some("Linux filesystem")
    );
    assert_eq!(
        l.volumes[2]
            .partition
            .as_ref()
            .unwrap()
            .type_guid
            .unwrap()
            .to_string(),
        LINUX_FS.to_lowercase()
    );
    let disk_guid = match &l.table {
        guest::PartitionTable::Gpt { disk_guid, .. } => *disk_guid,
        t => panic!("{t:?}"),
    };
    let p = String::from_utf8(run(Command::new("sgdisk").args(["-p", s(&raw)]))).unwrap();
    assert!(
        p.contains(&format!(
            "Disk identifier (GUID): {}",
            disk_guid.to_string().to_uppercase()
        )),
        "{p}"
    );
    drop(disk);

    // The primary header zeroed through our writer: the backup is used, same partitions.
    let w = Disk::open_rw(&vhdx, &OpenOptions::default()).unwrap();
    w.write_at(&[0u8; 512], 512).unwrap();
    w.close().unwrap();
    let disk = Disk::open(&vhdx).unwrap();
    let l2 = guest::inspect(&disk).unwrap();
    assert_eq!(l2.volumes, l.volumes);
    assert!(matches!(
        l2.table,
        guest::PartitionTable::Gpt {
            header: guest::gpt::GptHeaderCopy::Backup,
            ..
        }
    ));
    assert_eq!(l2.warnings.len(), 1, "{:?}", l2.warnings);
    drop(disk);
    // The backup's CRC broken too: a typed error, not a guess.
    let w = Disk::open_rw(&vhdx, &OpenOptions::default()).unwrap();
    let last = w.disk().size() - 512;
    let mut h = [0u8; 512];
    w.disk().read_at(&mut h, last).unwrap();
    h[60] ^= 0xFF;
    w.write_at(&h, last).unwrap();
    w.close().unwrap();
    let disk = Disk::open(&vhdx).unwrap();
    let e = guest::inspect(&disk).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(e.structure_name(), Some("backup GPT header"));
}

/// `fdisk -b 4096 -l` partitions: (number, start, sectors, type GUID, unique GUID, name).
fn fdisk_4k_list(raw: &Path) -> Vec<(u32, u64, u64, String, String, String)> {
    let out = String::from_utf8(run(Command::new("fdisk").args([
        "-b",
        "4096",
        "-l",
        "-o",
        "Device,Start,Sectors,Type-UUID,UUID,Name",
        s(raw),
    ])))
    .unwrap();
    out.lines()
        .skip_while(|l| !l.starts_with("Device"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0][s(raw).len()..].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].to_lowercase(),
                f[4].to_lowercase(),
                f.get(5).unwrap_or(&"").to_string(),
            )
        })
        .collect()
}

/// Disk F: a GPT with 4096-byte logical sectors (made by `fdisk -b 4096`, which sfdisk of
/// util-linux 2.38 cannot do) inside a VHDX created with 4096-byte logical sectors.
#[test]
fn gpt_with_4k_sectors() {
    if !have_tools(&["fdisk", "mkfs.ext4", "mkntfs", "ntfscp"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("f.raw");
    raw_file(&raw, 32 * MIB);
    // New GPT; partition 1 at sector 256, 2048 sectors, Linux filesystem, named root;
    // partition 2 after it, 1024 sectors, Microsoft basic data.
    let script = "g\nn\n1\n256\n+2047\nt\n20\nx\nn\nroot\nr\nn\n2\n\n+1023\nt\n2\n11\nw\n";
    let mut child = Command::new("fdisk")
        .args(["-b", "4096", s(&raw)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let parts = fdisk_4k_list(&raw);
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!((parts[0].1, parts[0].2), (256, 2048));
    let ext = d.join("ext.raw");
    raw_file(&ext, 8 * MIB);
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096", s(&ext)]));
    place(&raw, &ext, parts[0].1 * 4096);
    // Partition 2: NTFS with 4096-byte sectors, holding a file odx-check must find.
    let ntfs = d.join("ntfs4k.raw");
    raw_file(&ntfs, parts[1].2 * 4096);
    run(Command::new("mkntfs").args(["-F", "-Q", "-q", "-s", "4096", s(&ntfs)]));
    let src = d.join("data.bin");
    fs::write(&src, noise(90_000, 4)).unwrap();
    run(Command::new("ntfscp").args([s(&ntfs), s(&src), "data.bin"]));
    place(&raw, &ntfs, parts[1].1 * 4096);
    let vhdx = d.join("f.vhdx");
    create(
        &vhdx,
        &CreateOptions::new()
            .size(32 * MIB)
            .logical_sector_size(4096)
            .physical_sector_size(4096),
    )
    .unwrap();
    let w = Disk::open_rw(&vhdx, &OpenOptions::default()).unwrap();
    w.write_at(&fs::read(&raw).unwrap(), 0).unwrap();
    w.close().unwrap();
    let disk = Disk::open(&vhdx).unwrap();
    assert_eq!(disk.logical_sector_size(), 4096);
    let l = guest::inspect(&disk).unwrap();
    assert_eq!(l.sector_size, 4096);
    let got: Vec<(u32, u64, u64, String, String, String)> = l
        .volumes
        .iter()
        .map(|v| {
            let p = v.partition.as_ref().unwrap();
            (
                v.number,
                v.offset / 4096,
                v.length / 4096,
                p.type_guid.unwrap().to_string(),
                p.unique_guid.unwrap().to_string(),
                p.name.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, parts);
    assert_eq!(l.volumes[0].kind, VolumeKind::Ext4);
    assert_eq!(
        l.volumes[0].partition.as_ref().unwrap().name.as_deref(),
        Some("root")
    );
    assert_eq!(l.volumes[1].kind, VolumeKind::Ntfs);
    let r = odx_check_disk(&disk, &opts(Some(2), &["/data.bin"], Controller::Scsi)).unwrap();
    // The host rows depend on the holes our writer leaves; the guest rows do not.
    let t = table(&r);
    let want: Vec<_> = [scsi(), ntfs_ok(2), file_rows(2, "/data.bin", None)].concat();
    assert_eq!(t[3..], want[..]);
}

/// Disk G: NTFS on the whole disk (no table): volume 0, and odx-check finds its files.
#[test]
fn whole_disk_ntfs_is_volume_zero() {
    if !have_tools(&["mkntfs", "ntfscp", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vol = ntfs_volume(d, "g.raw", 16 * MIB, &[("plain.bin", noise(64 << 10, 7))]);
    let vhdx = d.join("g.vhdx");
    qemu_img(&["convert", "-O", "vhdx", s(&vol), s(&vhdx)]);
    let full = d.join("g-full.vhdx");
    full_copy(&vhdx, &full);
    let disk = Disk::open(&full).unwrap();
    let l = guest::inspect(&disk).unwrap();
    assert_eq!(l.table, guest::PartitionTable::None);
    assert_eq!(l.volumes.len(), 1);
    assert_eq!(
        (l.volumes[0].number, l.volumes[0].kind),
        (0, VolumeKind::Ntfs)
    );
    let r = check(&full, &opts(None, &["/plain.bin"], Controller::Scsi));
    let want: Vec<_> = [
        host_ok(),
        scsi(),
        ntfs_ok(0),
        file_rows(0, "/plain.bin", None),
    ]
    .concat();
    assert_eq!(table(&r), want);
    assert!(r.eligible);
}

/// A differencing VHDX (made by our create, written through `Disk::open_rw`): the guest is
/// read through the chain and every file of the chain is examined on the host.
#[test]
fn odx_through_a_differencing_chain() {
    if !have_tools(&[
        "mkntfs",
        "ntfscp",
        "ntfsinfo",
        "sgdisk",
        "mkfs.ext4",
        "qemu-img",
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, _, parent) = disk_a(d);
    let child = d.join("child.avhdx");
    create(&child, &CreateOptions::new().parent(&parent)).unwrap();
    // Make plain.bin sparse in the child only: read the NTFS volume through the chain,
    // edit its MFT record, write the changed bytes back through the child.
    let w = Disk::open_rw(&child, &OpenOptions::default()).unwrap();
    let mut vol = vec![0u8; (32 * MIB) as usize];
    w.disk().read_at(&mut vol, MIB).unwrap();
    let before = vol.clone();
    ntfs_edit::set_flags(&mut vol, "plain.bin", SI_SPARSE, ATTR_SPARSE);
    let at = ntfs_edit::find_record(&vol, "plain.bin");
    assert_ne!(before[at..at + 1024], vol[at..at + 1024]);
    w.write_at(&vol[at..at + 1024], MIB + at as u64).unwrap();
    w.close().unwrap();
    // The child may keep holes (our writer allocates 1 MiB-aligned blocks by extending the
    // file); check a full copy so the host rows are the same for both files.
    let child_full = d.join("child-full.avhdx");
    full_copy(&child, &child_full);
    fs::remove_file(&child).unwrap();
    fs::rename(&child_full, &child).unwrap();

    let r = check(&child, &opts(Some(1), &["/plain.bin"], Controller::Scsi));
    assert_eq!(
        r.host_files,
        vec![child.display().to_string(), parent.display().to_string()]
    );
    let want: Vec<_> = [
        host_ok(),
        host_ok(),
        scsi(),
        ntfs_ok(1),
        file_rows(1, "/plain.bin", Some("guest_file_sparse")),
    ]
    .concat();
    assert_eq!(table(&r), want);
    // The parent alone is unchanged and eligible.
    let r = check(&parent, &opts(Some(1), &["/plain.bin"], Controller::Scsi));
    assert!(r.eligible, "{:?}", table(&r));
}

/// A corrupt NTFS volume (the boot sector says NTFS, the MFT is gone) is a finding, not an
/// error and not a panic.
#[test]
fn odx_unreadable_ntfs_volume() {
    if !have_tools(&["mkntfs", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vol = ntfs_volume(d, "h.raw", 8 * MIB, &[]);
    let mut b = fs::read(&vol).unwrap();
    b[512..].fill(0xA5);
    b[8 * MIB as usize - 512..].fill(0); // the backup boot sector too
    fs::write(&vol, &b).unwrap();
    let r = check(&vol, &opts(None, &["/x"], Controller::Scsi));
    let t = table(&r);
    assert_eq!(
        t[t.len() - 2],
        row("guest_volume_unreadable", "volume 0", "fail")
    );
    assert_eq!(
        t[t.len() - 1],
        row("guest_file_not_examined", "volume 0: /x", "fail")
    );
}

/// Random damage to the MFT and directory index of a real NTFS volume: looking a file up
/// ends (within seconds) in facts, "not found" or a typed error; a panic of the `ntfs`
/// crate is turned into a corruption error, never passed on.
#[test]
fn damaged_ntfs_lookups_end_cleanly() {
    use vhdx_core::guest::ntfs_file::NtfsVolume;
    if !have_tools(&["mkntfs", "ntfscp"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = vec![
        ("f00.bin", noise(5000, 0)),
        ("f01.bin", noise(5000, 1)),
        ("plain.bin", noise(70_000, 99)),
    ];
    let vol = ntfs_volume(dir.path(), "fz.raw", 8 * MIB, &files);
    let base = fs::read(&vol).unwrap();
    let mft = {
        let cluster = u64::from(u16::from_le_bytes([base[11], base[12]])) * u64::from(base[13]);
        (u64::from_le_bytes(base[0x30..0x38].try_into().unwrap()) * cluster) as usize
    };
    let mut x = 0xD1B5_4A32_D192_ED03u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let cases: Vec<Vec<u8>> = (0..150)
        .map(|_| {
            let mut b = base.clone();
            for _ in 0..1 + next() % 40 {
                // The first 96 MFT records: system files, the root directory, our files.
                let at = mft + (next() as usize) % (96 * 1024);
                b[at] = next() as u8;
            }
            b
        })
        .collect();
    std::thread::spawn(move || {
        let (mut found, mut missing, mut errors) = (0, 0, 0);
        for b in cases {
            let d = MemDisk(b);
            match NtfsVolume::open(VolumeReader::whole(&d)).and_then(|v| v.lookup("/plain.bin")) {
                Ok(guest::ntfs_file::Lookup::File(_)) => found += 1,
                Ok(_) => missing += 1,
                Err(e) => {
                    assert!(
                        matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Io),
                        "{e}"
                    );
                    errors += 1
                }
            }
        }
        tx.send((found, missing, errors)).unwrap();
    });
    let (found, missing, errors) = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("a lookup on a damaged volume did not end");
    eprintln!("damaged NTFS lookups: {found} found, {missing} not found, {errors} errors");
    assert_eq!(found + missing + errors, 150);
}

/// `info` of a differencing disk whose parent is missing: the guest is not read, and the
/// note says how to give the parent; with the parent, the guest is the parent's.
#[test]
fn info_guest_of_a_child_without_its_parent() {
    if !have_tools(&["mkntfs", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vol = ntfs_volume(d, "p.raw", 8 * MIB, &[]);
    let parent = d.join("p.vhdx");
    qemu_img(&["convert", "-O", "vhdx", s(&vol), s(&parent)]);
    let child = d.join("c.avhdx");
    create(&child, &CreateOptions::new().parent(&parent)).unwrap();
    let info = Disk::open(&child).unwrap().info(false).unwrap();
    let g = info.guest.expect("the guest through the chain");
    assert_eq!((g.volumes.len(), g.volumes[0].kind), (1, VolumeKind::Ntfs));
    assert_eq!(info.guest_note, None);
    let moved = d.join("elsewhere.vhdx");
    fs::rename(&parent, &moved).unwrap();
    let opts = OpenOptions {
        require_parent: false,
        ..OpenOptions::default()
    };
    let info = Disk::open_with(&child, &opts).unwrap().info(false).unwrap();
    assert!(info.guest.is_none());
    let note = info.guest_note.unwrap();
    assert!(
        note.contains("is not open") && note.contains("--parent"),
        "{note}"
    );
}

/// A Windows boot disk's layout (sgdisk): 1: EFI system partition (FAT32), 2: Microsoft
/// reserved (no file system), 3: Windows recovery (NTFS), 4: the NTFS data volume. By
/// default the system partitions are reported for information and the disk is eligible;
/// named with `--volume`, the EFI partition is judged and fails.
#[test]
fn odx_boot_disk_system_partitions_are_not_judged() {
    if !have_tools(&["sgdisk", "mkntfs", "ntfscp", "mkfs.vfat", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("boot.raw");
    raw_file(&raw, 96 * MIB);
    run(Command::new("sgdisk").args([
        "-n",
        "1:2048:+34M",
        "-t",
        "1:EF00",
        "-n",
        "2:0:+16M",
        "-t",
        "2:0C01",
        "-n",
        "3:0:+12M",
        "-t",
        "3:2700",
        "-n",
        "4:0:+24M",
        "-t",
        "4:0700",
        s(&raw),
    ]));
    let esp = d.join("esp.raw");
    raw_file(&esp, 34 * MIB);
    run(Command::new("mkfs.vfat").args(["-F", "32", s(&esp)]));
    place(&raw, &esp, MIB);
    let recovery = ntfs_volume(d, "recovery.raw", 12 * MIB, &[]);
    place(&raw, &recovery, 51 * MIB);
    let data = ntfs_volume(
        d,
        "data.raw",
        24 * MIB,
        &[("plain.bin", noise(64 << 10, 9))],
    );
    place(&raw, &data, 63 * MIB);
    let vhdx = d.join("boot.vhdx");
    qemu_img(&["convert", "-O", "vhdx", s(&raw), s(&vhdx)]);
    let full = d.join("boot-full.vhdx");
    full_copy(&vhdx, &full);
    let r = check(&full, &opts(None, &["/plain.bin"], Controller::Scsi));
    let want: Vec<_> = [
        host_ok(),
        scsi(),
        vec![
            row("guest_volume_not_ntfs", "volume 1", "info"),
            row("guest_volume_not_ntfs", "volume 2", "info"),
            row("guest_volume_not_ntfs", "volume 3", "info"),
        ],
        ntfs_ok(4),
        file_rows(4, "/plain.bin", None),
    ]
    .concat();
    assert_eq!(table(&r), want);
    assert!(r.eligible);
    let r = check(&full, &opts(Some(1), &[], Controller::Scsi));
    let want: Vec<_> = [
        host_ok(),
        scsi(),
        vec![
            row("guest_volume_bitlocker", "volume 1", "pass"),
            row("guest_volume_not_ntfs", "volume 1", "fail"),
        ],
    ]
    .concat();
    assert_eq!(table(&r), want);
    assert!(!r.eligible);
}
