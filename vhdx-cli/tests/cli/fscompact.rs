//! Issue #6: `vhdx compact --mode full` reads the guest's free space (and `--no-free-space`
//! does not), `vhdx trim --free-space`, on an ext4 made by `mkfs.ext4 -d` with junk written
//! and deleted by `debugfs`, as a VHDX made by qemu-img. The guest is checked afterwards
//! with `e2fsck -fn` and `debugfs -R cat` on qemu-img's raw export.

use super::*;

/// A tool from /usr/sbin or /sbin when it lives there (mkfs.ext4, debugfs, e2fsck), else
/// from the PATH; `None` (a failure under CI) when missing.
fn sbin(tool: &str) -> Option<PathBuf> {
    for d in ["/usr/sbin", "/sbin", "/usr/bin"] {
        let p = Path::new(d).join(tool);
        if p.exists() {
            return Some(p);
        }
    }
    assert!(!in_ci(), "{tool} is missing under CI");
    eprintln!("skipping: {tool} not installed");
    None
}

fn junk(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The 40 MiB ext4 guest (one 2 MiB file, 24 MiB of deleted junk) as a VHDX with 1 MiB
/// blocks, and the file's content.
fn ext4_guest(dir: &Path) -> Option<(PathBuf, Vec<u8>)> {
    let (mkfs, debugfs) = (sbin("mkfs.ext4")?, sbin("debugfs")?);
    let files = dir.join("files");
    fs::create_dir_all(&files).unwrap();
    let data = junk(2 << 20, 5);
    fs::write(files.join("keep"), &data).unwrap();
    let img = dir.join("fs.img");
    fs::File::create(&img).unwrap().set_len(40 * MIB).unwrap();
    run_tool(
        s(&mkfs),
        &["-q", "-F", "-b", "4096", "-d", s(&files), s(&img)],
    );
    fs::write(dir.join("junk"), junk(24 << 20, 9)).unwrap();
    let put = format!("write {} junk", dir.join("junk").display());
    run_tool(s(&debugfs), &["-w", "-R", &put, s(&img)]);
    run_tool(s(&debugfs), &["-w", "-R", "rm junk", s(&img)]);
    let vhdx = dir.join("disk.vhdx");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vhdx",
        "-o",
        "subformat=dynamic,block_size=1M",
        s(&img),
        s(&vhdx),
    ]);
    Some((vhdx, data))
}

/// e2fsck -fn is clean and /keep reads back as `data` on qemu-img's export of `image`.
fn guest_ok(image: &Path, data: &[u8]) {
    let raw = image.with_extension("raw");
    qemu_img(&["convert", "-f", "vhdx", "-O", "raw", s(image), s(&raw)]);
    let fsck = Command::new(sbin("e2fsck").unwrap())
        .args(["-fn", s(&raw)])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let cat = run_tool(s(&sbin("debugfs").unwrap()), &["-R", "cat /keep", s(&raw)]);
    assert!(cat == data, "/keep differs");
}

#[test]
fn compact_full_reclaims_the_guest_free_space_and_reports_each_volume() {
    let dir = tempfile::tempdir().unwrap();
    let Some((img, data)) = ext4_guest(dir.path()) else {
        return;
    };
    let zero_only = dir.path().join("zero-only.vhdx");
    let o = vhdx(&[
        "compact",
        "--mode",
        "full",
        "--no-free-space",
        "-o",
        s(&zero_only),
        "--json",
        s(&img),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let z = &json(&o)[0];
    assert_eq!(z["free_space_pass"], false);
    assert_eq!(z["volumes"], Value::Array(Vec::new()));

    let o = vhdx(&["compact", "--mode", "full", "--dry-run", s(&img)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("blocks of free space to release"), "{text}");
    assert!(text.contains("whole disk (ext4, 40 MiB at 0 B):"), "{text}");
    assert!(text.contains("would be reclaimed"), "{text}");

    let o = vhdx(&["compact", "--json", s(&img)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = &json(&o)[0];
    assert_eq!(r["free_space_pass"], true);
    let v = &r["volumes"][0];
    assert_eq!(v["volume"], 0);
    assert_eq!(v["file_system"], "ext4");
    assert_eq!(v["skipped"], Value::Null);
    assert!(v["free_bytes"].as_u64().unwrap() > 24 * MIB, "{v}");
    assert!(v["blocks_released"].as_u64().unwrap() >= 20, "{v}");
    assert_eq!(r["free_space_blocks_released"], v["blocks_released"]);
    let after = r["file_len_after"].as_u64().unwrap();
    assert!(
        after + 20 * MIB <= z["file_len_after"].as_u64().unwrap(),
        "{r}\n{z}"
    );
    guest_ok(&img, &data);
}

#[test]
fn trim_free_space_reports_each_volume_and_skips_unclean_ones() {
    let dir = tempfile::tempdir().unwrap();
    let Some((img, data)) = ext4_guest(dir.path()) else {
        return;
    };
    // OFFSET and LENGTH, or --free-space: not both, not neither.
    assert_eq!(code(&vhdx(&["trim", s(&img)])), 2);
    assert_eq!(
        code(&vhdx(&["trim", s(&img), "0", "1M", "--free-space"])),
        2
    );
    let o = vhdx(&["trim", s(&img), "--free-space", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    let trimmed = r["bytes_trimmed"].as_u64().unwrap();
    assert!(trimmed > 20 * MIB, "{r}");
    assert_eq!(r["volumes"][0]["bytes_reclaimed"].as_u64(), Some(trimmed));
    assert!(
        r["host_bytes_after"].as_u64().unwrap() + 20 * MIB
            <= r["host_bytes_before"].as_u64().unwrap(),
        "{r}"
    );
    guest_ok(&img, &data);
    // A journal to replay: skipped, said so, nothing trimmed.
    let raw = img.with_extension("raw");
    run_tool(
        s(&sbin("debugfs").unwrap()),
        &["-w", "-R", "feature needs_recovery", s(&raw)],
    );
    let dirty = dir.path().join("dirty.vhdx");
    qemu_img(&["convert", "-f", "raw", "-O", "vhdx", s(&raw), s(&dirty)]);
    let o = vhdx(&["trim", s(&dirty), "--free-space"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("0 B now reads as zeros"), "{text}");
    assert!(text.contains("skipped (needs_recovery)"), "{text}");
}
