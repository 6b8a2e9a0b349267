//! Creating disks (issue #3 item 1): every type and format, checked against qemu-img,
//! qemu-io and libvhdi (pyvhdi) as independent oracles, plus our own reader.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use vhdx_core::create::{create, CreateOptions};
use vhdx_core::{Disk, DiskType, ErrorKind, Format};

const MIB: u64 = 1 << 20;

fn qemu_info(path: &Path, fmt: &str) -> serde_json::Value {
    let out = qemu_img(&["info", "-f", fmt, "--output=json", path.to_str().unwrap()]);
    serde_json::from_slice(&out).unwrap()
}

fn qemu_check_clean(path: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", "-f", "vhdx", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img check {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pyvhdi_media_size(path: &Path) -> u64 {
    let out = run(Command::new(oracle_python())
        .arg("-c")
        .arg(
            "import sys, pyvhdi\nf = pyvhdi.file()\nf.open(sys.argv[1])\nprint(f.get_media_size())",
        )
        .arg(path));
    String::from_utf8(out).unwrap().trim().parse().unwrap()
}

/// Creates, then checks everything a non-differencing disk must satisfy.
fn check_plain(
    dir: &Path,
    name: &str,
    opts: CreateOptions,
    fmt: Format,
    ty: DiskType,
    size: u64,
    block: Option<u32>,
) -> PathBuf {
    let p = dir.join(name);
    create(&p, &opts).unwrap_or_else(|e| panic!("create {name}: {e}"));
    let qfmt = if fmt == Format::Vhdx { "vhdx" } else { "vpc" };
    let qi = qemu_info(&p, qfmt);
    assert_eq!(qi["format"], qfmt, "{name}");
    assert_eq!(qi["virtual-size"].as_u64(), Some(size), "{name}: qemu size");
    if fmt == Format::Vhdx {
        qemu_check_clean(&p);
    }
    let d = Disk::open(&p).unwrap();
    let info = d.info(false).unwrap();
    assert_eq!(info.format, fmt, "{name}");
    assert_eq!(info.disk_type, ty, "{name}");
    assert_eq!(info.virtual_size, size, "{name}");
    if let Some(b) = block {
        assert_eq!(info.block_size, Some(b), "{name}");
    }
    assert!(info.warnings.is_empty(), "{name}: {:?}", info.warnings);
    let report = d.check();
    assert!(report.findings.is_empty(), "{name}: {report:?}");
    let ours = read_all(&d, 1 << 20);
    assert!(ours.iter().all(|&b| b == 0), "{name}: not all zeros");
    assert_eq!(pyvhdi_media_size(&p), size, "{name}: pyvhdi size");
    let theirs = pyvhdi_read_all(&p, &[]);
    assert_same(&ours, &theirs, name);
    drop(d);
    // qemu-io writes into it; the result must stay consistent.
    qemu_io(&[
        "-f",
        qfmt,
        "-c",
        "write -P 0x5a 1M 64k",
        "-c",
        "write -P 0x33 3584 1024",
        p.to_str().unwrap(),
    ]);
    if fmt == Format::Vhdx {
        qemu_check_clean(&p);
    }
    assert_same(&our_read_all(&p), &qemu_raw(&p, qfmt), name);
    p
}

#[test]
fn vhdx_dynamic_and_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 100 * MIB + 3 * 512;
    check_plain(
        d,
        "dyn.vhdx",
        CreateOptions::new().size(size),
        Format::Vhdx,
        DiskType::Dynamic,
        size,
        Some(32 << 20),
    );
    check_plain(
        d,
        "dyn1m.vhdx",
        CreateOptions::new().size(size).block_size(1 << 20),
        Format::Vhdx,
        DiskType::Dynamic,
        size,
        Some(1 << 20),
    );
    let f = check_plain(
        d,
        "fixed.vhdx",
        CreateOptions::new()
            .size(40 * MIB)
            .disk_type(DiskType::Fixed)
            .block_size(8 << 20)
            .physical_sector_size(512),
        Format::Vhdx,
        DiskType::Fixed,
        40 * MIB,
        Some(8 << 20),
    );
    let info = Disk::open(&f).unwrap().info(false).unwrap();
    assert_eq!(info.physical_sector_size, 512);
    assert!(info.vhdx.as_ref().unwrap().leave_block_allocated);
    // Fixed: 1 MiB header + 1 MiB log + 1 MiB BAT + 1 MiB metadata + 5 blocks.
    assert_eq!(info.file_size, 4 * MIB + 40 * MIB);
    // Default fixed with a partial last block, and the --format override of an odd name.
    check_plain(
        d,
        "fixed.img",
        CreateOptions::new()
            .size(33 * MIB)
            .format(Format::Vhdx)
            .disk_type(DiskType::Fixed),
        Format::Vhdx,
        DiskType::Fixed,
        33 * MIB,
        Some(32 << 20),
    );
}

#[test]
fn vhd_dynamic_and_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 100 MiB is not a CHS product: qemu must still report it exactly (creator `win `).
    let size = 100 * MIB;
    let p = check_plain(
        d,
        "dyn.vhd",
        CreateOptions::new().size(size),
        Format::Vhd,
        DiskType::Dynamic,
        size,
        Some(2 << 20),
    );
    let info = Disk::open(&p).unwrap().info(false).unwrap();
    let vhd = info.vhd.unwrap();
    assert_eq!(vhd.creator_application, "win ");
    assert_eq!(vhd.max_table_entries, Some(50));
    check_plain(
        d,
        "dyn512k.vhd",
        CreateOptions::new().size(size + 512).block_size(512 << 10),
        Format::Vhd,
        DiskType::Dynamic,
        size + 512,
        Some(512 << 10),
    );
    let f = check_plain(
        d,
        "fixed.vhd",
        CreateOptions::new()
            .size(size + 7 * 512)
            .disk_type(DiskType::Fixed),
        Format::Vhd,
        DiskType::Fixed,
        size + 7 * 512,
        None,
    );
    assert_eq!(std::fs::metadata(&f).unwrap().len(), size + 8 * 512);
}

#[test]
fn vhdx_differencing_over_qemu_parent() {
    let dir = tempfile::tempdir().unwrap();
    let parent = make_qemu_image(dir.path(), "base.vhdx", "vhdx", "block_size=1M", "48M", 7);
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let child = sub.join("child.avhdx");
    create(&child, &CreateOptions::new().parent(&parent)).unwrap();
    let d = Disk::open(&child).unwrap();
    let info = d.info(false).unwrap();
    assert_eq!(info.disk_type, DiskType::Differencing);
    assert_eq!(info.block_size, Some(2 << 20));
    assert_eq!(info.virtual_size, 48 * MIB);
    let pinfo = info.parent.as_ref().unwrap();
    assert_eq!(pinfo.status, "ok", "{pinfo:?}");
    let rel = pinfo
        .locators
        .iter()
        .find(|l| l.key == "relative_path")
        .unwrap();
    assert_eq!(rel.value, r"..\base.vhdx");
    let abs = pinfo
        .locators
        .iter()
        .find(|l| l.key == "absolute_win32_path")
        .unwrap();
    assert!(abs.value.starts_with(r"\\?\"), "{abs:?}");
    assert!(!abs.value.contains('/'), "{abs:?}");
    let report = d.check();
    assert!(report.findings.is_empty(), "{report:?}");
    let want = qemu_raw(&parent, "vhdx");
    assert_same(&read_all(&d, 1 << 20), &want, "child over parent");
    assert_same(
        &pyvhdi_read_all(&child, &[&parent]),
        &want,
        "pyvhdi child over parent",
    );
    assert_eq!(pyvhdi_media_size(&child), 48 * MIB);
    // The absolute path alone also resolves: move the child away from the relative path.
    let moved = dir.path().join("moved.vhdx");
    std::fs::rename(&child, &moved).unwrap();
    let d = Disk::open(&moved).unwrap();
    assert_same(&read_all(&d, 1 << 20), &want, "moved child");
}

#[test]
fn vhd_differencing_over_qemu_parent() {
    let dir = tempfile::tempdir().unwrap();
    let parent = make_qemu_image(
        dir.path(),
        "base.vhd",
        "vpc",
        "subformat=dynamic",
        "40M",
        11,
    );
    let child = dir.path().join("child.avhd");
    create(&child, &CreateOptions::new().parent(&parent)).unwrap();
    let d = Disk::open(&child).unwrap();
    let info = d.info(false).unwrap();
    assert_eq!(info.disk_type, DiskType::Differencing);
    let psize = qemu_virtual_size(&parent, "vpc");
    assert_eq!(info.virtual_size, psize);
    let pinfo = info.parent.as_ref().unwrap();
    assert_eq!(pinfo.status, "ok", "{pinfo:?}");
    let keys: Vec<&str> = pinfo.locators.iter().map(|l| l.key.as_str()).collect();
    assert!(keys.contains(&"W2ru") && keys.contains(&"W2ku"), "{keys:?}");
    let report = d.check();
    assert!(report.findings.is_empty(), "{report:?}");
    let want = qemu_raw(&parent, "vpc");
    assert_same(&read_all(&d, 1 << 20), &want, "child over parent");
    assert_same(
        &pyvhdi_read_all(&child, &[&parent]),
        &want,
        "pyvhdi child over parent",
    );
    assert_eq!(pyvhdi_media_size(&child), psize);
}

#[test]
fn vhdx_4k_sectors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("4k.vhdx");
    let size = 64 * MIB + 4096;
    create(
        &p,
        &CreateOptions::new()
            .size(size)
            .logical_sector_size(4096)
            .physical_sector_size(4096),
    )
    .unwrap();
    let info = Disk::open(&p).unwrap().info(false).unwrap();
    assert_eq!(info.logical_sector_size, 4096);
    assert_eq!(info.physical_sector_size, 4096);
    assert_eq!(info.virtual_size, size);
    assert_eq!(pyvhdi_media_size(&p), size);
    let zeros = vec![0u8; size as usize];
    assert_same(&our_read_all(&p), &zeros, "4k dynamic");
    assert_same(&pyvhdi_read_all(&p, &[]), &zeros, "pyvhdi 4k dynamic");
    // A differencing child over it inherits the sector sizes; 512 is refused.
    let c = dir.path().join("4k-child.vhdx");
    let err = create(
        &c,
        &CreateOptions::new().parent(&p).logical_sector_size(512),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(!c.exists());
    create(&c, &CreateOptions::new().parent(&p)).unwrap();
    let info = Disk::open(&c).unwrap().info(false).unwrap();
    assert_eq!(info.logical_sector_size, 4096);
    assert_eq!(info.parent.unwrap().status, "ok");
    assert_same(&our_read_all(&c), &zeros, "4k child");
    assert_same(&pyvhdi_read_all(&c, &[&p]), &zeros, "pyvhdi 4k child");
    // Fixed 4K as well.
    let f = dir.path().join("4k-fixed.vhdx");
    create(
        &f,
        &CreateOptions::new()
            .size(8 * MIB)
            .logical_sector_size(4096)
            .disk_type(DiskType::Fixed)
            .block_size(1 << 20),
    )
    .unwrap();
    assert_same(
        &pyvhdi_read_all(&f, &[]),
        &vec![0u8; 8 << 20],
        "pyvhdi 4k fixed",
    );
}

fn assert_refused(dir: &Path, name: &str, opts: CreateOptions) {
    let p = dir.join(name);
    let existed = p.exists();
    let err = create(&p, &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}: {err}");
    assert_eq!(p.exists(), existed, "{name}");
}

#[test]
fn bad_arguments_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = || CreateOptions::new().size(16 * MIB);
    assert_refused(d, "a.vhdx", CreateOptions::new());
    assert_refused(d, "a.vhdx", CreateOptions::new().size(1000));
    assert_refused(d, "a.vhdx", CreateOptions::new().size(0));
    assert_refused(d, "a.vhdx", CreateOptions::new().size((64 << 40) + 4096));
    assert_refused(d, "a.vhdx", ok().block_size(3 << 20));
    assert_refused(d, "a.vhdx", ok().block_size(512 << 20));
    assert_refused(d, "a.vhdx", ok().block_size(512 << 10));
    assert_refused(d, "a.vhdx", ok().logical_sector_size(1024));
    assert_refused(d, "a.vhdx", ok().physical_sector_size(2048));
    assert_refused(d, "a.vhdx", ok().log_size(1000));
    assert_refused(d, "a.vhdx", ok().logical_sector_size(4096).size(4096 + 512));
    assert_refused(d, "a.vhd", ok().logical_sector_size(4096));
    assert_refused(d, "a.vhd", CreateOptions::new().size(2041 << 30));
    assert_refused(
        d,
        "a.vhd",
        ok().disk_type(DiskType::Fixed).block_size(1 << 20),
    );
    assert_refused(d, "a.img", ok());
    assert_refused(d, "a.vhdx", ok().disk_type(DiskType::Differencing));
    // An existing target is never overwritten.
    std::fs::write(d.join("exists.vhdx"), b"keep").unwrap();
    assert_refused(d, "exists.vhdx", ok());
    assert_eq!(std::fs::read(d.join("exists.vhdx")).unwrap(), b"keep");
    // Parent problems: wrong format, fixed child; a missing parent is ParentNotFound.
    create(&d.join("p.vhd"), &ok()).unwrap();
    create(&d.join("p.vhdx"), &ok()).unwrap();
    assert_refused(d, "c.vhdx", CreateOptions::new().parent(d.join("p.vhd")));
    assert_refused(d, "c.vhd", CreateOptions::new().parent(d.join("p.vhdx")));
    assert_refused(
        d,
        "c.vhdx",
        CreateOptions::new()
            .parent(d.join("p.vhdx"))
            .disk_type(DiskType::Fixed),
    );
    let err = create(
        &d.join("c.vhdx"),
        &CreateOptions::new().parent(d.join("missing.vhdx")),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ParentNotFound);
    // Nothing but what we made: no temporary files left.
    let mut names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["exists.vhdx", "p.vhd", "p.vhdx"]);
}
