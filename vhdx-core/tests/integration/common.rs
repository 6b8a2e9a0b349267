//! Shared helpers: locating oracles (qemu-img, the oracle Python with pyvhdi), the shared
//! real-image folder, scratch directories, and whole-disk reads.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use vhdx_core::{Disk, VirtualDisk};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The project's testdata folder.
pub fn testdata() -> PathBuf {
    workspace().join("testdata")
}

/// Whether we run under CI (tests that need outside files must fail there, not skip).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Whether every one of `tools` is installed (on `PATH`, or in /sbin or /usr/sbin where
/// Debian puts mkfs and partitioning tools); under CI a missing tool fails the test instead
/// (scripts/test.sh installs them).
pub fn have_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("PATH=$PATH:/sbin:/usr/sbin command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !in_ci(),
        "{missing:?} missing under CI (scripts/test.sh installs them)"
    );
    eprintln!("skipping: {missing:?} not installed");
    false
}

/// A command for `tool`, found in /usr/sbin or /sbin first (where Debian puts mkfs,
/// debugfs and the partitioning tools, often not on a user's `PATH`), else on `PATH`.
pub fn sbin_command(tool: &str) -> Command {
    for dir in ["/usr/sbin", "/sbin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return Command::new(p);
        }
    }
    Command::new(tool)
}

/// ../shared/testdata/real, if present. Under CI its absence is a failure.
pub fn shared_real() -> Option<PathBuf> {
    let p = workspace().join("../shared/testdata/real");
    if p.is_dir() {
        Some(p)
    } else if in_ci() {
        panic!("{} is missing under CI", p.display());
    } else {
        eprintln!("skipping: {} not present", p.display());
        None
    }
}

/// Runs a command, panicking with its output when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `qemu-img` with the given arguments.
pub fn qemu_img(args: &[&str]) -> Vec<u8> {
    run(Command::new("qemu-img").args(args))
}

/// `qemu-io` with the given arguments.
pub fn qemu_io(args: &[&str]) -> Vec<u8> {
    run(Command::new("qemu-io").args(args))
}

/// The Python interpreter that has the oracles (pyvhdi, dissect.hypervisor): the
/// `VHDX_ORACLE_PYTHON` variable, else the project's .venv, else `python3`.
pub fn oracle_python() -> PathBuf {
    if let Some(p) = std::env::var_os("VHDX_ORACLE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace().join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// The whole virtual disk as libvhdi (pyvhdi) reads it. `parent` is given to libvhdi for
/// differencing images (it resolves deeper parents itself through `set_parent`).
pub fn pyvhdi_read_all(path: &Path, parents: &[&Path]) -> Vec<u8> {
    let parents: Vec<PathBuf> = parents.iter().map(|p| p.to_path_buf()).collect();
    pyvhdi_windows(path, &parents, &[])
}

/// libvhdi's view of `windows` (offset, length) of `path` opened over `parents` (nearest
/// first), concatenated; no windows: the whole disk, read in 1 MiB pieces.
pub fn pyvhdi_windows(path: &Path, parents: &[PathBuf], windows: &[(u64, u64)]) -> Vec<u8> {
    let script = r#"
import sys, pyvhdi
paths = sys.argv[1:]
files = []
for p in paths:
    f = pyvhdi.file()
    f.open(p)
    files.append(f)
for child, parent in zip(files, files[1:]):
    child.set_parent(parent)
top = files[0]
windows = [tuple(map(int, line.split())) for line in sys.stdin if line.strip()]
if not windows:
    size = top.get_media_size()
    windows = [(o, min(1 << 20, size - o)) for o in range(0, size, 1 << 20)]
out = sys.stdout.buffer
for off, n in windows:
    top.seek_offset(off, 0)
    data = top.read_buffer(n)
    assert len(data) == n, (off, len(data), n)
    out.write(data)
"#;
    let mut cmd = Command::new(oracle_python());
    cmd.arg("-c").arg(script).arg(path).args(parents);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("oracle python");
    let input: String = windows.iter().map(|(o, n)| format!("{o} {n}\n")).collect();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pyvhdi failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The whole virtual disk as `qemu-img convert -O raw` gives it.
pub fn qemu_raw(path: &Path, format: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.raw");
    qemu_img(&[
        "convert",
        "-f",
        format,
        "-O",
        "raw",
        path.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    std::fs::read(out).unwrap()
}

/// The virtual size `qemu-img info --output=json` reports.
pub fn qemu_virtual_size(path: &Path, format: &str) -> u64 {
    let out = qemu_img(&[
        "info",
        "-f",
        format,
        "--output=json",
        path.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v["virtual-size"].as_u64().unwrap()
}

/// Creates an image with `qemu-img create -f FMT -o OPTS` and fills it through `qemu-io`
/// with 40 pseudo-random pattern writes, zero writes and sub-4 KiB writes at random
/// sector-aligned offsets (deterministic from `seed`).
pub fn make_qemu_image(
    dir: &Path,
    name: &str,
    fmt: &str,
    opts: &str,
    size: &str,
    seed: u64,
) -> PathBuf {
    let p = dir.join(name);
    qemu_create(&p, fmt, opts, size);
    let total = qemu_virtual_size(&p, fmt);
    let mut rng = Rng(seed);
    let mut cmds = Vec::new();
    for i in 0..40 {
        let len = (1 + rng.below(64)) * 4096;
        let off = rng.below((total - len) / 512) * 512;
        cmds.push(match i % 3 {
            0 => format!("write -P {} {off} {len}", 1 + rng.below(250)),
            1 => format!("write -z {off} {len}"),
            _ => format!(
                "write -P {} {off} {}",
                1 + rng.below(250),
                512 * (1 + rng.below(16))
            ),
        });
    }
    let mut args = vec!["-f", fmt];
    for c in &cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(p.to_str().unwrap());
    qemu_io(&args);
    p
}

/// Reads the whole disk with our reader, in pieces of `piece` bytes.
pub fn read_all(disk: &dyn VirtualDisk, piece: usize) -> Vec<u8> {
    let size = disk.size();
    let mut out = vec![0u8; size as usize];
    let mut off = 0usize;
    while off < out.len() {
        let n = piece.min(out.len() - off);
        disk.read_at(&mut out[off..off + n], off as u64).unwrap();
        off += n;
    }
    out
}

/// Opens `path` and reads it whole.
pub fn our_read_all(path: &Path) -> Vec<u8> {
    let d = Disk::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    read_all(&d, 1 << 20)
}

/// A small deterministic pseudo-random generator (xorshift), so tests need no RNG crate.
pub struct Rng(pub u64);

impl Rng {
    /// Next value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Asserts two byte images are equal, reporting the first difference instead of dumping them.
pub fn assert_same(ours: &[u8], theirs: &[u8], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: sizes differ");
    if let Some(i) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i:#x} (sector {}): ours {:#04x}, theirs {:#04x}",
            i / 512,
            ours[i],
            theirs[i]
        );
    }
}

/// A copy of `image` in `dir` whose log QEMU has replayed (`qemu-img check -r all`).
pub fn qemu_replayed_copy(image: &Path, dir: &Path) -> PathBuf {
    let copy = dir.join("qemu-replayed.vhdx");
    std::fs::copy(image, &copy).unwrap();
    qemu_img(&[
        "check",
        "-q",
        "-r",
        "all",
        "-f",
        "vhdx",
        copy.to_str().unwrap(),
    ]);
    copy
}

/// The standard output of a child process, read line by line.
pub type ChildOut = std::io::BufReader<std::process::ChildStdout>;

/// Runs this test binary again as a child process that runs the ignored test `test` with
/// the variable `var` set to `value`, and returns once the child printed "GO" (the moment
/// the operation under test starts), with the rest of its output. The caller kills or
/// waits for the child.
#[allow(clippy::zombie_processes)]
pub fn start_test_child(
    test: &str,
    var: &str,
    value: &std::ffi::OsStr,
) -> (std::process::Child, ChildOut) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--ignored", "-q", "--nocapture"])
        .env(var, value)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 || line.trim() == "GO" {
            return (child, out);
        }
    }
}

/// The rest of a child's output, as lines.
pub fn rest_lines(out: ChildOut) -> Vec<String> {
    std::io::BufRead::lines(out).map_while(|l| l.ok()).collect()
}

/// `qemu-img create -q -f FMT -o OPTS PATH SIZE`.
pub fn qemu_create(path: &Path, fmt: &str, opts: &str, size: &str) {
    qemu_img(&[
        "create",
        "-q",
        "-f",
        fmt,
        "-o",
        opts,
        path.to_str().unwrap(),
        size,
    ]);
}

/// Raw bytes as a virtual disk (512-byte sectors).
pub struct MemDisk(pub Vec<u8>);

impl VirtualDisk for MemDisk {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn logical_sector_size(&self) -> u32 {
        512
    }
    fn physical_sector_size(&self) -> u32 {
        512
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> vhdx_core::Result<()> {
        vhdx_core::disk::check_range(self.size(), offset, buf.len() as u64)?;
        let o = offset as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
    fn block_status(&self, offset: u64, length: u64) -> vhdx_core::Result<vhdx_core::Extent> {
        Ok(vhdx_core::Extent {
            offset,
            length: length.min(self.size() - offset),
            status: vhdx_core::Status::Data {
                depth: 0,
                file_offset: Some(offset),
            },
        })
    }
}
