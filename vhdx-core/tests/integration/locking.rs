//! Write locks against QEMU: an in-place log replay is refused while qemu-io has the image
//! open (read-write, and also read-only, since QEMU forbids other writers then), and QEMU is
//! refused while we hold the image for writing.

use super::common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vhdx_core::storage::FileStorage;
use vhdx_core::ErrorKind;

/// Starts qemu-io keeping `path` open for 30 s and waits until its locks are visible.
pub fn qemu_holding(path: &Path, read_only: bool) -> Child {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "vhdx"]);
    if read_only {
        cmd.arg("-r");
    }
    let mut child = cmd
        .args(["-c", "sleep 30000"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-io");
    let ino = std::fs::metadata(path).unwrap().ino();
    let needle = format!(":{ino} ");
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        if locks.lines().any(|l| l.contains(&needle)) {
            return child;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("qemu-io took no lock on {}", path.display());
}

#[test]
fn in_place_replay_and_qemu_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_qemu_image(dir.path(), "l.vhdx", "vhdx", "block_size=1M", "16M", 3);
    for read_only in [false, true] {
        let mut q = qemu_holding(&p, read_only);
        let e = vhdx_core::vhdx::replay_log_in_place(&p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InUse, "read_only={read_only}: {e}");
        assert_eq!(e.path(), Some(p.as_path()));
        q.kill().unwrap();
        q.wait().unwrap();
    }
    // Nobody holds it now.
    assert_eq!(
        vhdx_core::vhdx::replay_log_in_place(&p).unwrap().state,
        "clean"
    );

    // While we hold it for writing, QEMU cannot open it, not even read-only.
    let held = FileStorage::open_rw_exclusive(&p).unwrap();
    for ro in [&[][..], &["-r"][..]] {
        let out = Command::new("qemu-io")
            .args(["-f", "vhdx"])
            .args(ro)
            .args(["-c", "read 0 512"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() || err.contains("lock"),
            "qemu-io {ro:?} opened a locked image"
        );
        assert!(err.contains("lock"), "{err}");
    }
    drop(held);
    qemu_io(&["-f", "vhdx", "-c", "read 0 512", p.to_str().unwrap()]);
}
