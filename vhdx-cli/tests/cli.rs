//! Integration tests of the `vhdx` binary: every test runs the built binary on images made
//! by `qemu-img`/`qemu-io` in a temporary folder (or on the shared real-world images) and
//! compares with qemu-img's own answers.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "cli/fscompact.rs"]
mod fscompact;
#[path = "cli/usability.rs"]
mod usability;

const BIN: &str = env!("CARGO_BIN_EXE_vhdx");
const MIB: u64 = 1 << 20;

fn vhdx(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("cannot run the vhdx binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("killed by a signal")
}

fn run_tool(prog: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn qemu_img(args: &[&str]) -> Vec<u8> {
    run_tool("qemu-img", args)
}

fn qemu_io(file: &Path, cmds: &[&str]) {
    let mut args = vec!["-f".to_string(), "vhdx".to_string()];
    for c in cmds {
        args.push("-c".into());
        args.push((*c).into());
    }
    args.push(file.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_tool("qemu-io", &args);
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A dynamic VHDX of `size` bytes with data at 1 MiB, 9 MiB (crossing a block edge) and an
/// explicit zero range, made by qemu.
fn sample_vhdx(dir: &Path, size: u64) -> PathBuf {
    let p = dir.join("disk.vhdx");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vhdx",
        "-o",
        "subformat=dynamic,block_size=1M",
        s(&p),
        &size.to_string(),
    ]);
    qemu_io(
        &p,
        &[
            "write -P 0x11 1M 64k",
            "write -P 0x22 9437184 2M",
            "write -z 20M 1M",
        ],
    );
    p
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// Offset of the BAT, read from the first region table (VHDX spec 2.2).
fn bat_offset(file: &[u8]) -> u64 {
    const BAT_GUID: [u8; 16] = [
        0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a,
        0x08,
    ];
    let table = &file[0x30000..0x40000];
    assert_eq!(&table[..4], b"regi");
    let count = u32::from_le_bytes(table[8..12].try_into().unwrap()) as usize;
    for i in 0..count {
        let e = &table[16 + i * 32..16 + (i + 1) * 32];
        if e[..16] == BAT_GUID {
            return u64::from_le_bytes(e[16..24].try_into().unwrap());
        }
    }
    panic!("no BAT region");
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// ../shared/testdata/real; a failure under CI when absent, a skip otherwise.
fn shared_real() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/real");
    if p.is_dir() {
        Some(p)
    } else {
        assert!(!in_ci(), "{} is missing under CI", p.display());
        eprintln!("skipping: {} not present", p.display());
        None
    }
}

#[test]
fn info_json_matches_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample_vhdx(dir.path(), 64 * MIB);
    let o = vhdx(&["info", "--json", s(&img)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ours = json(&o);
    let qemu: Value =
        serde_json::from_slice(&qemu_img(&["info", "--output=json", s(&img)])).unwrap();
    assert_eq!(ours["virtual_size"], qemu["virtual-size"]);
    assert_eq!(ours["file_size"], fs::metadata(&img).unwrap().len());
    assert_eq!(ours["format"], "vhdx");
    assert_eq!(ours["disk_type"], "dynamic");
    assert_eq!(ours["block_size"], MIB);
    assert_eq!(ours["vhdx"]["log"]["state"], "clean");
    assert!(ours["block_stats"]["allocated_blocks"].as_u64().unwrap() >= 3);
}

#[test]
fn info_human_names_the_facts() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample_vhdx(dir.path(), 64 * MIB);
    let o = vhdx(&["info", s(&img)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    for want in [
        "format:",
        "VHDX",
        "type:",
        "dynamic",
        "virtual size:",
        "64 MiB (67108864 bytes)",
        "block size:",
        "1 MiB",
        "512 logical",
        "allocated blocks:",
        "log:",
        "clean",
        "creator:",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(o.stderr.is_empty());
}

#[test]
fn check_good_image_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample_vhdx(dir.path(), 64 * MIB);
    let o = vhdx(&["check", s(&img)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = vhdx(&["check", "--json", s(&img)]);
    assert_eq!(code(&o), 0);
    let report = json(&o);
    assert_eq!(report["corrupt"], false);
    for f in report["findings"].as_array().unwrap() {
        assert_ne!(f["severity"], "corrupt", "{f}");
    }
}

#[test]
fn check_corrupt_bat_entry_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample_vhdx(dir.path(), 64 * MIB);
    let mut bytes = fs::read(&img).unwrap();
    let bat = bat_offset(&bytes) as usize;
    // Payload block 1 (holds the data at 1 MiB): FULLY_PRESENT at 1 TiB, far past the end.
    let entry: u64 = (1u64 << 40) | 6;
    bytes[bat + 8..bat + 16].copy_from_slice(&entry.to_le_bytes());
    fs::write(&img, &bytes).unwrap();
    let o = vhdx(&["check", s(&img)]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("BAT"), "{}", stdout(&o));
    let o = vhdx(&["check", "--json", s(&img)]);
    assert_eq!(code(&o), 1);
    let report = json(&o);
    assert_eq!(report["corrupt"], true);
    let f = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["severity"] == "corrupt")
        .expect("a corrupt finding");
    assert_eq!(f["offset"], (bat + 8) as u64, "{f}");
}

#[test]
fn check_damaged_region_tables_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample_vhdx(dir.path(), 64 * MIB);
    let mut bytes = fs::read(&img).unwrap();
    // Flip a byte inside the entries of both region-table copies: the checksums fail.
    bytes[0x30000 + 40] ^= 0xff;
    bytes[0x40000 + 40] ^= 0xff;
    fs::write(&img, &bytes).unwrap();
    let o = vhdx(&["check", s(&img)]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("region table"), "{}", stdout(&o));

    // One damaged copy is tolerated: a warning, exit 0.
    let dir2 = tempfile::tempdir().unwrap();
    let img2 = sample_vhdx(dir2.path(), 64 * MIB);
    let mut bytes = fs::read(&img2).unwrap();
    bytes[0x40000 + 40] ^= 0xff;
    fs::write(&img2, &bytes).unwrap();
    let o = vhdx(&["check", "--json", s(&img2)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(json(&o)["status"], "warnings");
}

#[test]
fn non_disk_input_exits_2_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.txt");
    fs::write(&p, vec![b'x'; 4096]).unwrap();
    for cmd in ["info", "check", "map"] {
        let o = vhdx(&[cmd, s(&p)]);
        assert_eq!(code(&o), 2, "{cmd}");
        let err = stderr(&o);
        assert!(err.starts_with("vhdx: error: "), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("not a VHDX or VHD image"), "{err}");
        assert!(o.stdout.is_empty());
    }
    let o = vhdx(&["check", s(&dir.path().join("missing.vhdx"))]);
    assert_eq!(code(&o), 2);
}

#[test]
fn convert_raw_is_identical_to_qemu_and_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample_vhdx(dir.path(), 256 * MIB);
    let ours = dir.path().join("ours.raw");
    let theirs = dir.path().join("theirs.raw");
    let o = vhdx(&["convert", s(&img), s(&ours), "--format", "raw"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Not a terminal: no progress output.
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    qemu_img(&["convert", "-O", "raw", s(&img), s(&theirs)]);
    assert!(fs::read(&ours).unwrap() == fs::read(&theirs).unwrap());
    let meta = fs::metadata(&ours).unwrap();
    assert_eq!(meta.len(), 256 * MIB);
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 < 16 * MIB,
            "not sparse: {} bytes allocated",
            meta.blocks() * 512
        );
    }
    // The extension alone chooses raw; --json reports the counts.
    let img_out = dir.path().join("out.img");
    let o = vhdx(&["convert", "--json", s(&img), s(&img_out)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let stats = json(&o);
    assert_eq!(stats["size"], 256 * MIB);
    assert_eq!(
        stats["bytes_written"].as_u64().unwrap() + stats["bytes_skipped"].as_u64().unwrap(),
        256 * MIB
    );
    assert!(fs::read(&img_out).unwrap() == fs::read(&theirs).unwrap());
}

/// A sparse raw file of 48 MiB with data at a few places (one crossing a 1 MiB edge, one at
/// the very end) and explicitly written zeros.
fn sparse_raw(dir: &Path) -> PathBuf {
    use std::os::unix::fs::FileExt;
    let p = dir.join("in.raw");
    let f = fs::File::create(&p).unwrap();
    f.set_len(48 * MIB).unwrap();
    f.write_all_at(&[0x5a; 4096], 0).unwrap();
    f.write_all_at(&[0xa5; 200_000], 3 * MIB - 100_000).unwrap();
    f.write_all_at(&vec![0; 4 << 20], 10 * MIB).unwrap();
    f.write_all_at(&[0x11; 512], 48 * MIB - 512).unwrap();
    p
}

/// `vhdx convert in.raw out.vhdx` (and `.vhd`): the format from the extension, QEMU reads
/// the source back, one summary line, and nothing on standard error (not a terminal, so
/// no progress bar).
#[test]
fn convert_raw_to_vhdx_and_vhd_matches_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sparse_raw(dir.path());
    for (name, qfmt) in [("out.vhdx", "vhdx"), ("out.vhd", "vpc")] {
        let out = dir.path().join(name);
        let o = vhdx(&["convert", s(&raw), s(&out)]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert!(o.stderr.is_empty(), "progress or noise: {}", stderr(&o));
        let text = stdout(&o);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.starts_with("wrote ") && text.contains("dynamic"),
            "{text}"
        );
        qemu_img(&["compare", "-f", qfmt, "-F", "raw", s(&out), s(&raw)]);
        // Only the blocks with data were allocated: three of the VHD's 24 blocks of 2 MiB,
        // both of the VHDX's 32 MiB blocks (after 4 MiB of headers, log, BAT, metadata).
        let len = fs::metadata(&out).unwrap().len();
        let most = if qfmt == "vpc" { 7 * MIB } else { 68 * MIB };
        assert!(len <= most, "{name}: {len} bytes");
    }
    qemu_img(&["check", "-f", "vhdx", s(&dir.path().join("out.vhdx"))]);
}

/// An existing OUT is refused with exit 2 and left untouched; `--force` replaces it.
#[test]
fn convert_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sparse_raw(dir.path());
    let out = dir.path().join("out.vhdx");
    fs::write(&out, b"precious").unwrap();
    let o = vhdx(&["convert", s(&raw), s(&out)]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(
        err.starts_with("vhdx: error: ") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(fs::read(&out).unwrap(), b"precious");
    let o = vhdx(&["convert", "--force", s(&raw), s(&out)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    qemu_img(&["compare", "-f", "vhdx", "-F", "raw", s(&out), s(&raw)]);
}

/// `--json` reports the conversion; `--format`, `--block-size` and `--logical-sector-size`
/// shape the output whatever its name.
#[test]
fn convert_json_fields() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sparse_raw(dir.path());
    let out = dir.path().join("disk.out");
    let o = vhdx(&[
        "convert",
        "--json",
        "--format",
        "vhdx",
        "--block-size",
        "1M",
        "--logical-sector-size",
        "4096",
        s(&raw),
        s(&out),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["format"], "vhdx");
    assert_eq!(v["disk_type"], "dynamic");
    assert_eq!(v["block_size"], MIB);
    assert_eq!(v["size"], 48 * MIB);
    let written = v["bytes_written"].as_u64().unwrap();
    assert_eq!(written + v["bytes_skipped"].as_u64().unwrap(), 48 * MIB);
    assert!(written > 0 && written <= MIB, "{v}");
    assert_eq!(v["file_length"], fs::metadata(&out).unwrap().len());
    let info = json(&vhdx(&["info", "--json", s(&out)]));
    assert_eq!(info["logical_sector_size"], 4096);
    assert_eq!(info["block_size"], MIB);
}

/// `--azure` writes a fixed VHD of whole MiB (`--format vhd --type fixed` implied); a size
/// that is not whole is refused (exit 2, naming `--round-up`) unless `--round-up` is given;
/// contradicting options and `--round-up` alone are refused with exit 2.
#[test]
fn convert_azure() {
    let dir = tempfile::tempdir().unwrap();
    // 48 MiB + 1 KiB: not a whole number of MiB.
    let raw = sparse_raw(dir.path());
    fs::OpenOptions::new()
        .write(true)
        .open(&raw)
        .unwrap()
        .set_len(48 * MIB + 1024)
        .unwrap();
    let out = dir.path().join("azure.out");
    let o = vhdx(&["convert", "--azure", s(&raw), s(&out)]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(
        err.starts_with("vhdx: error: ") && err.contains("--round-up"),
        "{err}"
    );
    for extra in [
        &["--format", "vhdx"][..],
        &["--type", "dynamic"][..],
        &["--block-size", "2M"][..],
    ] {
        let mut args = vec!["convert", "--azure", "--round-up", s(&raw), s(&out)];
        args.extend_from_slice(extra);
        let o = vhdx(&args);
        assert_eq!(code(&o), 2, "{extra:?}");
        assert!(stderr(&o).contains("contradicts"), "{}", stderr(&o));
    }
    let o = vhdx(&["convert", "--round-up", s(&raw), s(&out)]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--azure"), "{}", stderr(&o));
    assert!(!out.exists());

    let o = vhdx(&[
        "convert",
        "--azure",
        "--round-up",
        "--json",
        s(&raw),
        s(&out),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["format"], "vhd");
    assert_eq!(v["disk_type"], "fixed");
    assert_eq!(v["size"], 49 * MIB);
    assert_eq!(v["source_size"], 48 * MIB + 1024);
    assert_eq!(v["file_length"], 49 * MIB + 512);
    let info: serde_json::Value =
        serde_json::from_slice(&qemu_img(&["info", "-f", "vpc", "--output=json", s(&out)]))
            .unwrap();
    assert_eq!(info["format"], "vpc");
    assert_eq!(info["virtual-size"].as_u64().unwrap() % MIB, 0);
    qemu_img(&["compare", "-f", "vpc", "-F", "raw", s(&out), s(&raw)]);
    // The human summary says it was rounded up.
    let o = vhdx(&[
        "convert",
        "--azure",
        "--round-up",
        "--force",
        s(&raw),
        s(&out),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("fixed VHD, 49 MiB (rounded up from 48 MiB)"),
        "{}",
        stdout(&o)
    );
}

/// What cannot be converted is refused with exit 2 and leaves no file.
#[test]
fn convert_bad_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sparse_raw(dir.path());
    for (out, extra, says) in [
        ("x.unknown", &[][..], "--format"),
        ("x.raw", &["--block-size", "1M"][..], "raw output"),
        ("x.vhd", &["--logical-sector-size", "4096"][..], "512"),
        (
            "x.vhdx",
            &["--type", "fixed", "--block-size", "3M"][..],
            "block size",
        ),
    ] {
        let target = dir.path().join(out);
        let mut args = vec!["convert", s(&raw), s(&target)];
        args.extend_from_slice(extra);
        let o = vhdx(&args);
        assert_eq!(code(&o), 2, "{out}");
        let err = stderr(&o);
        assert!(
            err.starts_with("vhdx: error: ") && err.contains(says),
            "{out}: {err}"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "{out}: leftovers"
        );
    }
}

#[test]
fn map_json_covers_the_disk_contiguously() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let img = sample_vhdx(dir.path(), size);
    let o = vhdx(&["map", "--json", s(&img)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let entries = json(&o);
    let entries = entries.as_array().unwrap();
    let mut next = 0u64;
    for e in entries {
        assert_eq!(e["start"].as_u64().unwrap(), next, "{e}");
        let len = e["length"].as_u64().unwrap();
        assert!(len > 0);
        next += len;
        for key in ["depth", "present", "zero", "data", "offset"] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
    }
    assert_eq!(next, size);
    // The data written at 1 MiB is mapped as data.
    assert!(entries.iter().any(|e| e["data"] == true
        && e["start"].as_u64().unwrap() <= MIB
        && e["start"].as_u64().unwrap() + e["length"].as_u64().unwrap() > MIB));
    let o = vhdx(&["map", s(&img)]);
    assert_eq!(code(&o), 0);
    let text = stdout(&o);
    assert!(text.starts_with("Offset"), "{text}");
    assert!(text.contains("data") && text.contains(s(&img)), "{text}");
}

#[test]
fn differencing_vhd_with_and_without_its_parent() {
    let Some(real) = shared_real() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The child names its parent "image.vhd" beside it; a copy keeps the shared folder intact.
    fs::copy(real.join("image.vhd"), dir.path().join("image.vhd")).unwrap();
    fs::copy(
        real.join("image-differential.vhd"),
        dir.path().join("child.vhd"),
    )
    .unwrap();
    let child = dir.path().join("child.vhd");
    let o = vhdx(&["info", "--json", s(&child)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let info = json(&o);
    assert_eq!(info["disk_type"], "differencing");
    assert_eq!(info["chain"].as_array().unwrap().len(), 2);

    // Parent missing: info still works and says where it looked.
    fs::remove_file(dir.path().join("image.vhd")).unwrap();
    let o = vhdx(&["info", s(&child)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("not found"), "{text}");
    assert!(text.contains("--parent PATH"), "{text}");
    let o = vhdx(&["info", "--json", s(&child)]);
    let info = json(&o);
    assert_eq!(info["parent"]["status"], "not_found");
    assert!(!info["parent"]["tried"].as_array().unwrap().is_empty());
    // Reading needs the parent: map fails with exit 2 and a hint; --parent fixes it.
    let o = vhdx(&["map", s(&child)]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--parent"), "{}", stderr(&o));
    let o = vhdx(&[
        "map",
        "--json",
        s(&child),
        "--parent",
        s(&real.join("image.vhd")),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn windows_made_differencing_vhd_without_parent() {
    let Some(real) = shared_real() else { return };
    let o = vhdx(&["info", s(&real.join("fat-differential.vhd"))]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("fat-parent.vhd"), "{text}");
    assert!(text.contains("--parent PATH"), "{text}");
    let o = vhdx(&["check", s(&real.join("ext2.vhd"))]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn help_and_version() {
    let o = vhdx(&["--help"]);
    assert_eq!(code(&o), 0);
    for c in [
        "info", "check", "map", "convert", "create", "trim", "compact",
    ] {
        assert!(stdout(&o).contains(c));
    }
    let o = vhdx(&["--version"]);
    assert_eq!(code(&o), 0);
    let o = vhdx(&["frobnicate"]);
    assert_eq!(code(&o), 2);
}

/// `check --repair` replays a QEMU-made dirty log onto the file: afterwards QEMU accepts the
/// image (it refused it before) and reads exactly what we read from the dirty file in memory.
#[test]
fn check_repair_replays_a_dirty_log() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dirty.vhdx");
    let gz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/dirty-log-c.vhdx.gz");
    let raw = run_tool("gzip", &["-dc", s(&gz)]);
    fs::write(&img, raw).unwrap();
    let refused = Command::new("qemu-img")
        .args(["info", s(&img)])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "qemu should refuse a dirty log");

    // Before: a warning, exit 0, file untouched; our export is the in-memory replay.
    let before = fs::read(&img).unwrap();
    let o = vhdx(&["check", "--json", s(&img)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["status"], "warnings");
    assert_eq!(
        fs::read(&img).unwrap(),
        before,
        "check without --repair changed the file"
    );
    let ours = dir.path().join("ours.raw");
    assert_eq!(
        code(&vhdx(&["convert", s(&img), s(&ours), "--format", "raw"])),
        0
    );

    // Repair: reported, then clean.
    let o = vhdx(&["check", "--repair", "--json", s(&img)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    assert!(
        v["repairs"][0]
            .as_str()
            .unwrap()
            .contains("replayed 1 log entry"),
        "{v}"
    );
    qemu_img(&["check", "-f", "vhdx", s(&img)]);
    let theirs = dir.path().join("theirs.raw");
    qemu_img(&["convert", "-f", "vhdx", "-O", "raw", s(&img), s(&theirs)]);
    // qemu-img compare skips the holes of both sparse 2 GiB files through SEEK_DATA.
    qemu_img(&["compare", "-f", "raw", "-F", "raw", s(&ours), s(&theirs)]);

    // A second repair has nothing to do.
    let o = vhdx(&["check", "--repair", "--json", s(&img)]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["repairs"].as_array().unwrap().len(), 0, "{v}");
}

/// `vhdx create` makes every type: qemu-img agrees on format and size (and finds the VHDX
/// clean), `--json` reports what was made, and an existing file is refused with exit 2.
#[test]
fn create_makes_disks_qemu_accepts() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra, qfmt, ty, size) in [
        ("d.vhdx", vec![], "vhdx", "dynamic", 100 * MIB),
        (
            "f.vhdx",
            vec!["--type", "fixed", "--block-size", "1M"],
            "vhdx",
            "fixed",
            100 * MIB,
        ),
        (
            "d.img",
            vec!["--format", "vhd"],
            "vpc",
            "dynamic",
            100 * MIB,
        ),
        ("f.vhd", vec!["--type", "fixed"], "vpc", "fixed", 100 * MIB),
    ] {
        let p = dir.path().join(name);
        let mut args = vec!["create", s(&p), "--size", "100M", "--json"];
        args.extend(extra);
        let o = vhdx(&args);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["disk_type"], ty, "{name}");
        assert_eq!(v["virtual_size"].as_u64(), Some(size), "{name}");
        let qi: Value =
            serde_json::from_slice(&qemu_img(&["info", "-f", qfmt, "--output=json", s(&p)]))
                .unwrap();
        assert_eq!(qi["virtual-size"].as_u64(), Some(size), "{name}");
        if qfmt == "vhdx" {
            qemu_img(&["check", "-f", "vhdx", s(&p)]);
        }
    }
    let o = vhdx(&["create", s(&dir.path().join("d.vhdx")), "--size", "1G"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = vhdx(&["create", s(&dir.path().join("x.vhdx")), "--size", "1000"]);
    assert_eq!(code(&o), 2);
    assert!(!dir.path().join("x.vhdx").exists());
}

/// `vhdx create --parent` makes a differencing disk that reads as its parent, with the
/// parent's size; the human form names the type.
#[test]
fn create_differencing_reads_as_parent() {
    let dir = tempfile::tempdir().unwrap();
    let parent = sample_vhdx(dir.path(), 24 * MIB);
    let child = dir.path().join("child.avhdx");
    let o = vhdx(&["create", s(&child), "--parent", s(&parent)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("differencing"), "{}", stdout(&o));
    let a = dir.path().join("parent.raw");
    let b = dir.path().join("child.raw");
    let o = vhdx(&["convert", s(&parent), s(&a)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = vhdx(&["convert", s(&child), s(&b)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert_eq!(fs::metadata(&b).unwrap().len(), 24 * MIB);
}

/// Issue #4 item 4: `info` on a differencing disk says how many of its bytes are read from
/// the parent, per chain level, and that only a merge gives them back. Oracle: `qemu-img
/// map` of the qemu-made parent (a fresh child holds nothing itself).
#[test]
fn info_reports_the_bytes_read_from_parent_files() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("base.vhd");
    let size = 20 * MIB;
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vpc",
        "-o",
        "subformat=dynamic,force_size=on",
        s(&parent),
        &size.to_string(),
    ]);
    run_tool(
        "qemu-io",
        &[
            "-f",
            "vpc",
            "-c",
            "write -P 0x11 1M 64k",
            "-c",
            "write -P 0x22 9437184 3M",
            s(&parent),
        ],
    );
    let map: Value = serde_json::from_slice(&qemu_img(&[
        "map",
        "--output=json",
        "-f",
        "vpc",
        s(&parent),
    ]))
    .unwrap();
    let in_parent: u64 = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    assert!(in_parent > 0);
    let child = dir.path().join("child.vhd");
    let o = vhdx(&["create", s(&child), "--parent", s(&parent)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let o = vhdx(&["info", "--json", s(&child)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let info = json(&o);
    assert_eq!(info["chain_usage_note"], Value::Null);
    let u = &info["chain_usage"];
    let levels = u["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    for (depth, (l, name)) in levels.iter().zip(["child.vhd", "base.vhd"]).enumerate() {
        assert_eq!(l["depth"], depth);
        assert!(l["path"].as_str().unwrap().ends_with(name), "{l}");
        assert_eq!(l["zero_bytes"], 0);
    }
    assert_eq!(levels[0]["data_bytes"], 0);
    assert_eq!(levels[1]["data_bytes"], in_parent);
    assert_eq!(u["parent_data_bytes"], in_parent);
    assert_eq!(u["zero_bytes"], 0);
    assert_eq!(u["unallocated_bytes"], size - in_parent);
    let note = u["note"].as_str().unwrap();
    assert!(note.contains(&format!("({in_parent} bytes)")), "{note}");
    assert!(note.contains("only merging the chain can"), "{note}");

    let o = vhdx(&["info", s(&child)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    let human = vhdx_core::bytes::human_size;
    for want in [
        "chain usage".to_string(),
        "0: child.vhd: 0 B data".to_string(),
        format!("1: base.vhd: {} data", human(in_parent)),
        format!("in no file (reads as zeros): {}", human(size - in_parent)),
        note.to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }

    // Without its parent the usage cannot be known; the text says how to name the parent.
    fs::remove_file(&parent).unwrap();
    let o = vhdx(&["info", s(&child)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("chain usage: not computed"), "{text}");
}

/// A 32 MiB dynamic disk made by qemu (`fmt`: `vhdx` with 1 MiB blocks and no ZERO block
/// state, so written zeros allocate blocks; or `vpc`, 2 MiB blocks): 8 MiB of data, 8 MiB of
/// written zeros, a hole, 4 MiB of data.
fn qemu_dynamic(dir: &Path, name: &str, fmt: &str) -> PathBuf {
    let p = dir.join(name);
    let opts = if fmt == "vhdx" {
        "block_size=1M,block_state_zero=off"
    } else {
        "subformat=dynamic,force_size=on"
    };
    qemu_img(&["create", "-q", "-f", fmt, "-o", opts, s(&p), "32M"]);
    run_tool(
        "qemu-io",
        &[
            "-f",
            fmt,
            "-c",
            "write -P 1 0 8M",
            "-c",
            "write -z 8M 8M",
            "-c",
            "write -P 2 20M 4M",
            s(&p),
        ],
    );
    p
}

/// `qemu-img convert -O raw` of `img` into `out`.
fn qemu_raw(img: &Path, fmt: &str, out: &Path) {
    qemu_img(&["convert", "-f", fmt, "-O", "raw", s(img), s(out)]);
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

/// Issue #4 items 1, 2: `vhdx compact --dry-run --json` reports the three modes and changes
/// nothing; `vhdx compact` (full) then gives back the written-zero blocks and the holes.
/// Oracles: `qemu-img compare` with a raw export taken before, `qemu-img check` (VHDX), and
/// the length of `qemu-img convert` of the same content into a fresh dynamic image.
#[test]
fn compact_in_place_keeps_the_content_and_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, fmt, block, qemu_opts) in [
        ("d.vhdx", "vhdx", MIB, "block_size=1M"),
        ("d.vhd", "vpc", 2 * MIB, "subformat=dynamic,force_size=on"),
    ] {
        let img = qemu_dynamic(dir.path(), name, fmt);
        let before_raw = dir.path().join(format!("{name}.raw"));
        qemu_raw(&img, fmt, &before_raw);
        let reference = dir.path().join(format!("ref-{name}"));
        qemu_img(&[
            "convert",
            "-f",
            fmt,
            "-O",
            fmt,
            "-o",
            qemu_opts,
            s(&img),
            s(&reference),
        ]);
        let bytes = fs::read(&img).unwrap();
        let len_before = bytes.len() as u64;

        let o = vhdx(&["compact", "--dry-run", "--json", s(&img)]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert!(
            fs::read(&img).unwrap() == bytes,
            "{name}: the dry run changed the file"
        );
        let dry = json(&o);
        let dry = dry.as_array().unwrap();
        let modes: Vec<&str> = dry.iter().map(|r| r["mode"].as_str().unwrap()).collect();
        assert_eq!(modes, ["quick", "full", "retrim"], "{name}");
        for r in dry {
            assert_eq!(r["dry_run"], true, "{r}");
            assert_eq!(r["path"], s(&img), "{r}");
            assert_eq!(r["output"], Value::Null, "{r}");
            assert_eq!(r["file_len_before"], len_before, "{r}");
        }
        let full = &dry[1];
        // The 8 MiB of written zeros.
        assert_eq!(full["zero_blocks_released"], 8 * MIB / block, "{full}");
        assert!(
            full["file_len_after"].as_u64() < dry[0]["file_len_after"].as_u64(),
            "{name}: full should reclaim more than quick: {dry:?}"
        );

        let o = vhdx(&["compact", s(&img)]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert!(o.stderr.is_empty(), "{name}: {}", stderr(&o));
        let text = stdout(&o);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(": full: ") && text.contains("reclaimed"),
            "{text}"
        );

        qemu_img(&["compare", "-f", fmt, "-F", "raw", s(&img), s(&before_raw)]);
        if fmt == "vhdx" {
            qemu_img(&["check", "-f", "vhdx", s(&img)]);
        }
        let len_after = file_len(&img);
        assert_eq!(Some(len_after), full["file_len_after"].as_u64(), "{name}");
        assert!(
            len_after < len_before,
            "{name}: {len_before} -> {len_after}"
        );
        assert!(
            len_after <= file_len(&reference),
            "{name}: {len_after} bytes, qemu-img convert makes {}",
            file_len(&reference)
        );
        let o = vhdx(&["check", s(&img)]);
        assert_eq!(code(&o), 0, "{name}: {}{}", stdout(&o), stderr(&o));
    }
}

/// `-o OUT` writes a compacted copy and leaves the input byte-identical; an existing OUT
/// needs `--force`; `-o` takes one FILE; `--force` needs `-o`.
#[test]
fn compact_copy_leaves_the_input_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let img = qemu_dynamic(dir.path(), "in.vhdx", "vhdx");
    let raw = dir.path().join("in.raw");
    qemu_raw(&img, "vhdx", &raw);
    let bytes = fs::read(&img).unwrap();
    let out = dir.path().join("out.vhdx");
    let o = vhdx(&[
        "compact",
        s(&img),
        "-o",
        s(&out),
        "--mode",
        "quick",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(fs::read(&img).unwrap() == bytes, "the input changed");
    let v = json(&o);
    let r = &v.as_array().unwrap()[0];
    assert_eq!(r["output"], s(&out), "{r}");
    assert_eq!(r["mode"], "quick", "{r}");
    assert_eq!(r["zero_blocks_released"], 0, "{r}");
    assert_eq!(r["file_len_before"], bytes.len() as u64, "{r}");
    assert_eq!(r["file_len_after"], file_len(&out), "{r}");
    qemu_img(&["compare", "-f", "vhdx", "-F", "raw", s(&out), s(&raw)]);
    qemu_img(&["check", "-f", "vhdx", s(&out)]);

    let o = vhdx(&["compact", s(&img), "-o", s(&out)]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let o = vhdx(&["compact", s(&img), "-o", s(&out), "--force"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("{} → {}", s(&img), s(&out))),
        "{}",
        stdout(&o)
    );
    assert!(fs::read(&img).unwrap() == bytes, "the input changed");
    qemu_img(&["compare", "-f", "vhdx", "-F", "raw", s(&out), s(&raw)]);
    assert!(file_len(&out) < bytes.len() as u64);

    let o = vhdx(&["compact", s(&img), "-o", s(&img), "--force"]);
    assert_eq!(code(&o), 2);
    assert!(fs::read(&img).unwrap() == bytes, "the input changed");
    let o = vhdx(&[
        "compact",
        s(&img),
        s(&out),
        "-o",
        s(&dir.path().join("x.vhdx")),
    ]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("one FILE"), "{}", stderr(&o));
    let o = vhdx(&["compact", s(&img), "--force"]);
    assert_eq!(code(&o), 2);
    assert!(fs::read(&img).unwrap() == bytes, "the input changed");
}

/// `vhdx trim` of whole blocks (and an unaligned piece) makes them read as zeros in QEMU,
/// changes nothing else, frees host space, and leaves a clean image.
#[test]
fn trim_reads_as_zeros_in_qemu() {
    let dir = tempfile::tempdir().unwrap();
    for (name, fmt) in [("t.vhdx", "vhdx"), ("t.vhd", "vpc")] {
        let img = qemu_dynamic(dir.path(), name, fmt);
        let before = dir.path().join(format!("{name}.before.raw"));
        qemu_raw(&img, fmt, &before);
        let mut want = fs::read(&before).unwrap();
        let o = vhdx(&["trim", "--json", s(&img), "2M", "4M"]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        let r = json(&o);
        assert_eq!(r["offset"], 2 * MIB);
        assert_eq!(r["length"], 4 * MIB);
        // Whole host pages only: VHD blocks (bitmap sector + data) start off page edges.
        assert!(
            r["host_bytes_after"].as_u64().unwrap() + 4 * MIB - 64 * 1024
                <= r["host_bytes_before"].as_u64().unwrap(),
            "{name}: no space given back: {r}"
        );
        want[2 * MIB as usize..6 * MIB as usize].fill(0);
        let o = vhdx(&["trim", s(&img), "21000000", "1000"]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert!(stdout(&o).starts_with("trimmed "), "{}", stdout(&o));
        want[21_000_000..21_001_000].fill(0);

        let after = dir.path().join(format!("{name}.after.raw"));
        qemu_raw(&img, fmt, &after);
        assert!(
            fs::read(&after).unwrap() == want,
            "{name}: wrong content after trim"
        );
        if fmt == "vhdx" {
            qemu_img(&["check", "-f", "vhdx", s(&img)]);
        }
        // Past the end: refused, exit 2.
        let o = vhdx(&["trim", s(&img), "31M", "2M"]);
        assert_eq!(code(&o), 2);
        assert!(
            stderr(&o).contains("outside the virtual disk"),
            "{}",
            stderr(&o)
        );
    }
}

/// A fixed disk has nothing to give back: a note, exit 0, the file unchanged.
#[test]
fn compact_fixed_disk_is_a_note_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("f.vhdx");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vhdx",
        "-o",
        "subformat=fixed,block_size=1M",
        s(&img),
        "8M",
    ]);
    let len = file_len(&img);
    let o = vhdx(&["compact", s(&img)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("nothing to do"), "{}", stdout(&o));
    let o = vhdx(&["compact", "--json", s(&img)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert!(v[0]["note"].as_str().unwrap().contains("fixed"), "{v}");
    assert_eq!(v[0]["bytes_reclaimed"], 0);
    assert_eq!(file_len(&img), len);
}

/// A qemu-io process holding an image open (killed when dropped).
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Holds `img` open in qemu-io and waits until its locks show in /proc/locks.
fn hold(img: &Path) -> Holder {
    use std::os::unix::fs::MetadataExt;
    let child = Command::new("qemu-io")
        .args(["-f", "vhdx", "-c", "sleep 30000", s(img)])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("cannot run qemu-io");
    let holder = Holder(child);
    let ino = format!(":{} ", fs::metadata(img).unwrap().ino());
    for _ in 0..200 {
        if fs::read_to_string("/proc/locks").unwrap().contains(&ino) {
            return holder;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("qemu-io never locked {}", img.display());
}

/// A disk in use is refused with exit 2 and "in use", naming the file; in a batch the other
/// files are still compacted.
#[test]
fn compact_and_trim_refuse_a_disk_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let busy = qemu_dynamic(dir.path(), "busy.vhdx", "vhdx");
    let free = qemu_dynamic(dir.path(), "free.vhdx", "vhdx");
    let free_len = file_len(&free);
    let busy_bytes = fs::read(&busy).unwrap();
    let _holder = hold(&busy);
    for args in [
        vec!["compact", s(&busy)],
        vec!["compact", "--dry-run", s(&busy)],
        vec!["trim", s(&busy), "0", "1M"],
    ] {
        let o = vhdx(&args);
        assert_eq!(code(&o), 2, "{args:?}");
        let err = stderr(&o);
        assert!(err.starts_with("vhdx: error: "), "{err}");
        assert!(err.contains("in use") && err.contains(s(&busy)), "{err}");
    }
    let o = vhdx(&["compact", "--json", s(&busy), s(&free)]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("in use") && err.contains(s(&busy)), "{err}");
    let v = json(&o);
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["path"], s(&free));
    assert!(file_len(&free) < free_len);
    assert!(
        fs::read(&busy).unwrap() == busy_bytes,
        "the busy disk changed"
    );
}

/// A differencing disk's chain is opened as in the other commands: without its parent
/// compaction is refused (exit 2, naming `--parent`); with `--parent` it runs and says that
/// the parent's bytes are not this disk's to give back. The parent file never changes.
#[test]
fn compact_differencing_takes_parent_options() {
    let dir = tempfile::tempdir().unwrap();
    let parent = sample_vhdx(dir.path(), 24 * MIB);
    let child = dir.path().join("child.avhdx");
    let o = vhdx(&["create", s(&child), "--parent", s(&parent)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let moved = dir.path().join("elsewhere.vhdx");
    fs::rename(&parent, &moved).unwrap();
    let parent_bytes = fs::read(&moved).unwrap();
    let o = vhdx(&["compact", s(&child)]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--parent"), "{}", stderr(&o));
    let o = vhdx(&["compact", "--json", s(&child), "--parent", s(&moved)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert!(v[0]["parent_data_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v[0]["note"].as_str().unwrap().contains("merging"), "{v}");
    let o = vhdx(&[
        "compact",
        s(&child),
        "--parent",
        s(&moved),
        "--parents",
        "strict",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("nothing to do"), "{}", stdout(&o));
    assert!(
        fs::read(&moved).unwrap() == parent_bytes,
        "the parent changed"
    );
}

/// The spec-built chain `name` of `testdata/chain` (decompressed into `dir`) and the content
/// `testdata/build_images.py` says its file `top` reads, as a raw file in `dir`.
fn spec_chain(name: &str, top: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/chain")
        .join(name);
    for e in fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if let Some(stem) = p.file_name().unwrap().to_str().unwrap().strip_suffix(".gz") {
            fs::write(dir.join(stem), run_tool("gzip", &["-dc", s(&p)])).unwrap();
        }
    }
    let want = dir.join("want.raw");
    let builder = src.join("../../build_images.py");
    run_tool("python3", &[s(&builder), "expect", name, top, s(&want)]);
    want
}

/// Issue #5 item 1: `vhdx merge --into --delete` writes the chain into the base, which then
/// reads what the independent builder says the grandchild read (`qemu-img compare`, `qemu-img
/// check`); the merged disks are removed; another child of the base is named in a warning
/// and in `invalidated`; the JSON reports the new DataWriteGuid.
#[test]
fn merge_into_the_base_reads_as_the_chain_and_names_the_other_children() {
    let dir = tempfile::tempdir().unwrap();
    let want = spec_chain("vhdx512", "grandchild.vhdx", dir.path());
    let p = |f: &str| dir.path().join(f);
    let o = vhdx(&[
        "create",
        s(&p("other.avhdx")),
        "--parent",
        s(&p("base.vhdx")),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = vhdx(&["merge", s(&p("base.vhdx"))]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("not a differencing disk"),
        "{}",
        stderr(&o)
    );
    let o = vhdx(&[
        "merge",
        s(&p("grandchild.vhdx")),
        "--into",
        s(&p("base.vhdx")),
        "--delete",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    let names = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    let chain = vec![
        p("grandchild.vhdx").display().to_string(),
        p("child.vhdx").display().to_string(),
    ];
    assert_eq!(names("merged"), chain);
    assert_eq!(names("deleted"), chain);
    assert!(!p("grandchild.vhdx").exists() && !p("child.vhdx").exists());
    assert_eq!(v["linkage_id_name"], "DataWriteGuid");
    assert_ne!(v["linkage_id_after"], v["linkage_id_before"]);
    assert_eq!(v["invalidated"][0]["path"], s(&p("other.avhdx")), "{v}");
    assert_eq!(v["invalidated"][0]["parent"], s(&p("base.vhdx")), "{v}");
    assert!(
        stderr(&o).contains("warning") && stderr(&o).contains("other.avhdx"),
        "{}",
        stderr(&o)
    );
    qemu_img(&[
        "compare",
        "-f",
        "vhdx",
        "-F",
        "raw",
        s(&p("base.vhdx")),
        s(&want),
    ]);
    qemu_img(&["check", "-f", "vhdx", s(&p("base.vhdx"))]);
    let info: Value =
        serde_json::from_str(&stdout(&vhdx(&["info", "--json", s(&p("base.vhdx"))]))).unwrap();
    assert_eq!(
        info["vhdx"]["data_write_guid"].as_str(),
        v["linkage_id_after"].as_str(),
        "{info}"
    );
    // The other child no longer matches its parent.
    let o = vhdx(&["check", s(&p("other.avhdx"))]);
    assert!(stdout(&o).contains("linkage") || stderr(&o).contains("linkage"));
}

/// The default target is the parent; the human form says what was merged and the new id.
#[test]
fn merge_into_the_parent_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let want = spec_chain("vhd", "grandchild.vhd", dir.path());
    let p = |f: &str| dir.path().join(f);
    let o = vhdx(&["merge", s(&p("grandchild.vhd"))]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!(
            "merged {} into {} (1 disk)",
            s(&p("grandchild.vhd")),
            s(&p("child.vhd"))
        )),
        "{out}"
    );
    assert!(out.contains("UniqueId"), "{out}");
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    assert!(p("grandchild.vhd").exists());
    let got = p("got.raw");
    let o = vhdx(&["convert", s(&p("child.vhd")), s(&got)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(fs::read(&got).unwrap() == fs::read(&want).unwrap());
}

/// Issue #5 item 2: `vhdx flatten` writes a standalone disk of the chain's format (or
/// `--format`'s) that QEMU reads as the builder's content; an OUT whose extension names
/// another format, or that exists, is refused (exit 2).
#[test]
fn flatten_writes_a_standalone_disk() {
    let dir = tempfile::tempdir().unwrap();
    let want = spec_chain("vhd", "grandchild.vhd", dir.path());
    let p = |f: &str| dir.path().join(f);
    let top = p("grandchild.vhd");
    for (out, extra, fmt, ty) in [
        ("flat.vhd", vec!["--type", "fixed"], "vpc", "fixed"),
        ("flat.vhdx", vec!["--format", "vhdx"], "vhdx", "dynamic"),
    ] {
        let dest = p(out);
        let mut args = vec!["flatten", s(&top), s(&dest), "--json"];
        args.extend(extra);
        let o = vhdx(&args);
        assert_eq!(code(&o), 0, "{out}: {}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["disk_type"], ty, "{v}");
        let i: Value =
            serde_json::from_str(&stdout(&vhdx(&["info", "--json", s(&p(out))]))).unwrap();
        assert_eq!(i["disk_type"], ty, "{i}");
        assert!(i["parent"].is_null(), "{i}");
        qemu_img(&["compare", "-f", fmt, "-F", "raw", s(&p(out)), s(&want)]);
    }
    qemu_img(&["check", "-f", "vhdx", s(&p("flat.vhdx"))]);
    let o = vhdx(&["flatten", s(&top), s(&p("x.vhdx"))]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--format"), "{}", stderr(&o));
    let o = vhdx(&["flatten", s(&top), s(&p("flat.vhd"))]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let o = vhdx(&["flatten", s(&top), s(&p("flat.vhd")), "--force"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).starts_with("wrote"), "{}", stdout(&o));
}

/// Issue #5 item 3: `vhdx info` on a child whose parent moved shows the fix command;
/// `vhdx set-parent` applies it (the chain opens again, linkage verified); a stranger is
/// refused (exit 2, naming the override) and accepted with `--ignore-id-mismatch`.
#[test]
fn set_parent_repairs_a_moved_parent() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    for ext in ["vhdx", "vhd"] {
        let (base, child) = (p(&format!("base.{ext}")), p(&format!("child.{ext}")));
        let o = vhdx(&["create", s(&base), "--size", "8M"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let o = vhdx(&["create", s(&child), "--parent", s(&base)]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        fs::create_dir_all(p("moved")).unwrap();
        let moved = p(&format!("moved/base.{ext}"));
        fs::rename(&base, &moved).unwrap();
        let o = vhdx(&["info", s(&child)]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let fix = format!("vhdx set-parent {} PARENT", s(&child));
        assert!(stdout(&o).contains(&fix), "{}", stdout(&o));
        let o = vhdx(&["set-parent", s(&child), s(&moved), "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["relative_path"], format!(".\\moved\\base.{ext}"), "{v}");
        assert_eq!(v["id_mismatch_ignored"], false, "{v}");
        let i = json(&vhdx(&["info", s(&child), "--json"]));
        assert_eq!(i["parent"]["status"], "ok", "{i}");
        let stranger = p(&format!("stranger.{ext}"));
        assert_eq!(code(&vhdx(&["create", s(&stranger), "--size", "8M"])), 0);
        let o = vhdx(&["set-parent", s(&child), s(&stranger)]);
        assert_eq!(code(&o), 2);
        assert!(
            stderr(&o).contains("--ignore-id-mismatch"),
            "{}",
            stderr(&o)
        );
        let o = vhdx(&[
            "set-parent",
            s(&child),
            s(&stranger),
            "--ignore-id-mismatch",
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert!(stdout(&o).contains("recorded anew"), "{}", stdout(&o));
        let i = json(&vhdx(&["info", s(&child), "--json"]));
        assert_eq!(i["parent"]["status"], "ok", "{i}");
    }
}

/// Issue #5 item 5: `vhdx resize` grows a qemu-made VHDX (qemu-img info and check agree,
/// qemu-img compare finds the old content), refuses a shrink past the data (exit 2, naming
/// where it ends) and shrinks back with `--to-minimum`; SIZE and `--to-minimum` exclude
/// each other.
#[test]
fn resize_grows_and_shrinks_to_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample_vhdx(dir.path(), 64 * MIB);
    let orig = dir.path().join("orig.vhdx");
    fs::copy(&img, &orig).unwrap();
    let o = vhdx(&["resize", s(&img), "3G", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["size_after"], 3u64 << 30, "{v}");
    let q: Value = serde_json::from_slice(&qemu_img(&["info", "--output=json", s(&img)])).unwrap();
    assert_eq!(q["virtual-size"], 3u64 << 30);
    qemu_img(&["check", "-f", "vhdx", s(&img)]);
    qemu_img(&["compare", "-f", "vhdx", "-F", "vhdx", s(&orig), s(&img)]);
    let o = vhdx(&["resize", s(&img), "4M"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("holds data up to offset"),
        "{}",
        stderr(&o)
    );
    let o = vhdx(&["resize", s(&img), "--to-minimum"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).starts_with("resized"), "{}", stdout(&o));
    let o = vhdx(&["info", s(&img), "--json"]);
    let size = json(&o)["virtual_size"].as_u64().unwrap();
    assert!(size < 64 * MIB && size % MIB == 0, "{size}");
    qemu_img(&["check", "-f", "vhdx", s(&img)]);
    qemu_img(&["compare", "-f", "vhdx", "-F", "vhdx", s(&img), s(&orig)]);
    assert_eq!(code(&vhdx(&["resize", s(&img)])), 2);
    assert_eq!(code(&vhdx(&["resize", s(&img), "1G", "--to-minimum"])), 2);
}

/// Whether every tool is installed; under CI a missing one fails the test.
fn have_tools(tools: &[&str]) -> bool {
    for t in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                !in_ci(),
                "{t} is missing under CI (scripts/test.sh installs it)"
            );
            eprintln!("skipping: {t} not installed");
            return false;
        }
    }
    true
}

/// A GPT disk (sgdisk) with 1: NTFS holding plain.bin (mkntfs, ntfscp) and 2: ext4, as a
/// VHDX converted by qemu-img and then copied without holes. Returns (raw, vhdx).
fn guest_disk(dir: &Path) -> (PathBuf, PathBuf) {
    let raw = dir.join("g.raw");
    fs::File::create(&raw).unwrap().set_len(40 * MIB).unwrap();
    run_tool(
        "sgdisk",
        &[
            "-n",
            "1:2048:+24M",
            "-t",
            "1:0700",
            "-c",
            "1:data",
            "-n",
            "2:0:+12M",
            "-t",
            "2:8300",
            s(&raw),
        ],
    );
    let ntfs = dir.join("ntfs.raw");
    fs::File::create(&ntfs).unwrap().set_len(24 * MIB).unwrap();
    run_tool("mkntfs", &["-F", "-Q", "-q", s(&ntfs)]);
    let plain = dir.join("plain.bin");
    fs::write(&plain, vec![0x5au8; 300 << 10]).unwrap();
    run_tool("ntfscp", &[s(&ntfs), s(&plain), "plain.bin"]);
    let ext = dir.join("ext.raw");
    fs::File::create(&ext).unwrap().set_len(12 * MIB).unwrap();
    run_tool("mkfs.ext4", &["-q", "-F", s(&ext)]);
    let mut disk = fs::read(&raw).unwrap();
    let at = MIB as usize;
    disk[at..at + 24 * MIB as usize].copy_from_slice(&fs::read(&ntfs).unwrap());
    let at = 25 * MIB as usize;
    disk[at..at + 12 * MIB as usize].copy_from_slice(&fs::read(&ext).unwrap());
    fs::write(&raw, &disk).unwrap();
    let sparse = dir.join("g-sparse.vhdx");
    qemu_img(&["convert", "-O", "vhdx", s(&raw), s(&sparse)]);
    let vhdx_path = dir.join("g.vhdx");
    run_tool("cp", &["--sparse=never", s(&sparse), s(&vhdx_path)]);
    (raw, vhdx_path)
}

#[test]
fn info_lists_partitions_and_volumes() {
    if !have_tools(&["sgdisk", "mkntfs", "ntfscp", "mkfs.ext4", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (raw, img) = guest_disk(dir.path());
    let o = vhdx(&["info", s(&img), "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j = json(&o);
    let g = &j["guest"];
    assert_eq!(g["table"]["type"], "gpt");
    assert_eq!(j["guest_note"], Value::Null);
    let vols = g["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 2);
    for (v, kind) in vols.iter().zip(["ntfs", "ext4"]) {
        let n = v["number"].as_u64().unwrap();
        let sg = String::from_utf8(run_tool("sgdisk", &["-i", &n.to_string(), s(&raw)])).unwrap();
        let first: u64 = sg
            .lines()
            .find_map(|l| l.strip_prefix("First sector: "))
            .and_then(|l| l.split(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        let sectors: u64 = sg
            .lines()
            .find_map(|l| l.strip_prefix("Partition size: "))
            .and_then(|l| l.split(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(v["offset"].as_u64().unwrap(), first * 512);
        assert_eq!(v["length"].as_u64().unwrap(), sectors * 512);
        assert_eq!(v["kind"], kind);
    }
    let o = vhdx(&["info", s(&img)]);
    let out = stdout(&o);
    assert!(out.contains("partition table: GPT (disk GUID "), "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| *l != "volumes:")
        .skip(2)
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..2], ["1", "1048576"], "{out}");
    assert!(
        rows[0].contains(&"ntfs") && rows[0].contains(&"data"),
        "{out}"
    );
    assert_eq!(rows[1][..2], ["2", "26214400"], "{out}");
    assert!(rows[1].contains(&"ext4"), "{out}");
}

#[test]
fn odx_check_verdicts_and_exit_codes() {
    if !have_tools(&["sgdisk", "mkntfs", "ntfscp", "mkfs.ext4", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, img) = guest_disk(dir.path());
    // Volume 1 and its file over SCSI: eligible, exit 0.
    let o = vhdx(&[
        "odx-check",
        s(&img),
        "--volume",
        "1",
        "--file",
        "/plain.bin",
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(": eligible for ODX"), "{}", stdout(&o));
    // On IDE: exit 1, and the human table names the failing rule.
    let o = vhdx(&[
        "odx-check",
        s(&img),
        "--volume",
        "1",
        "--file",
        "/plain.bin",
        "--controller",
        "ide",
    ]);
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(
        out.contains("NOT eligible for ODX (1 check failed)"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().take(2).eq(["FAIL", "controller_ide"])),
        "{out}"
    );
    // Every volume: the ext4 volume fails; the JSON holds every finding.
    let o = vhdx(&["odx-check", s(&img), "--json"]);
    assert_eq!(code(&o), 1);
    let j = json(&o);
    assert_eq!(j["eligible"], false);
    let rows: Vec<(String, String, String)> = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["subject"].as_str().unwrap().to_string(),
                f["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let host = s(&img).to_string();
    let r = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        rows,
        vec![
            r("host_filesystem", &host, "info"),
            r("host_file_sparse", &host, "pass"),
            r("host_file_compressed", &host, "pass"),
            r("host_file_encrypted", &host, "pass"),
            r("controller_ide", "controller", "pass"),
            r("guest_volume_bitlocker", "volume 1", "pass"),
            r("guest_volume_not_ntfs", "volume 1", "pass"),
            r("guest_volume_bitlocker", "volume 2", "pass"),
            r("guest_volume_not_ntfs", "volume 2", "fail"),
        ]
    );
    // No such volume, or not a disk: exit 2 with one error line.
    let o = vhdx(&["odx-check", s(&img), "--volume", "9"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).starts_with("vhdx: error: the disk has no volume 9"),
        "{}",
        stderr(&o)
    );
    let junk = dir.path().join("junk.vhdx");
    fs::write(&junk, vec![7u8; 4096]).unwrap();
    assert_eq!(code(&vhdx(&["odx-check", s(&junk)])), 2);
    // A differencing child (made by vhdx create) is read through its chain, given with
    // --parent; every file of the chain is examined on the host.
    let child = dir.path().join("child.avhdx");
    let o = vhdx(&["create", s(&child), "--parent", s(&img)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = vhdx(&[
        "odx-check",
        s(&child),
        "--parent",
        s(&img),
        "--volume",
        "1",
        "--file",
        "/PLAIN.BIN",
        "--json",
    ]);
    let j = json(&o);
    assert_eq!(
        j["host_files"],
        serde_json::json!([s(&child), s(&img)]),
        "{j}"
    );
    // Every guest rule passes through the chain. (A new differencing VHDX is mostly space
    // its writer never wrote, so the host may report it sparse: that rule is left out.)
    let findings = j["findings"].as_array().unwrap();
    let sparse_rows = findings
        .iter()
        .filter(|f| f["rule"] == "host_file_sparse")
        .count();
    assert_eq!(sparse_rows, 2, "{j}");
    let failed: Vec<&str> = findings
        .iter()
        .filter(|f| f["status"] == "fail" && f["rule"] != "host_file_sparse")
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert!(failed.is_empty(), "{j}");
    assert_eq!(
        findings
            .iter()
            .filter(|f| f["subject"] == "volume 1: /PLAIN.BIN")
            .count(),
        6,
        "{j}"
    );
}
