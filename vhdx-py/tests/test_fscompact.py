"""Filesystem-aware compaction from Python: ``vhdx.compact(..., free_space=...)`` and
``Disk.trim_free_space()`` on an ext4 file system made by ``mkfs.ext4 -d`` with deleted junk
written by ``debugfs`` (so zero detection alone cannot reclaim it), in a VHDX made by
qemu-img. The oracles: ``e2fsck -fn`` clean and the files byte-identical (``debugfs -R
cat``) on the image as qemu-img exports it afterwards.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import vhdx
from conftest import MIB, missing, run

pytestmark = pytest.mark.oracle

TOOLS = ("mkfs.ext4", "debugfs", "e2fsck", "qemu-img")


def tool(name: str) -> str:
    for d in ("/usr/sbin", "/sbin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    found = shutil.which(name)
    if found is None:
        missing(name)
    return found


def junk(n: int, seed: int) -> bytes:
    """Deterministic bytes that are never zero blocks."""
    out = bytearray()
    x = seed | 1
    while len(out) < n:
        x = (x * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        out += x.to_bytes(8, "little")
    return bytes(out[:n])


FILES = {"a": junk(3 * MIB, 1), "b": junk(123_456, 2)}


@pytest.fixture
def ext4_vhdx(tmp_path: Path) -> Path:
    """A 48 MiB whole-disk ext4 with two files and 30 MiB of deleted junk, as a dynamic
    VHDX (1 MiB blocks)."""
    for t in TOOLS:
        tool(t)
    src = tmp_path / "files"
    src.mkdir()
    for name, data in FILES.items():
        (src / name).write_bytes(data)
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(48 * MIB)
    run(tool("mkfs.ext4"), "-q", "-F", "-b", "4096", "-d", str(src), str(img))
    blob = tmp_path / "junk"
    blob.write_bytes(junk(30 * MIB, 3))
    run(tool("debugfs"), "-w", "-R", f"write {blob} junk", str(img))
    run(tool("debugfs"), "-w", "-R", "rm junk", str(img))
    out = tmp_path / "disk.vhdx"
    run("qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o",
        "subformat=dynamic,block_size=1M", str(img), str(out))
    return out


def check_guest(image: Path, tmp: Path) -> None:
    raw = tmp / "back.raw"
    run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(image), str(raw))
    fsck = subprocess.run([tool("e2fsck"), "-fn", str(raw)], capture_output=True)
    assert fsck.returncode == 0, fsck.stdout.decode()
    for name, data in FILES.items():
        assert run(tool("debugfs"), "-R", f"cat /{name}", str(raw)) == data, name


def test_compact_reads_the_guest_free_space(ext4_vhdx: Path, tmp_path: Path) -> None:
    plain = vhdx.compact(ext4_vhdx, out=tmp_path / "plain.vhdx", free_space=False)
    assert plain["free_space_pass"] is False and plain["volumes"] == []
    dry = vhdx.compact(ext4_vhdx, dry_run=True)
    done = vhdx.compact(ext4_vhdx, out=tmp_path / "fs.vhdx")
    assert done["free_space_pass"] is True
    [vol] = done["volumes"]
    assert vol["volume"] == 0 and vol["file_system"] == "ext4" and vol["skipped"] is None
    assert vol["free_bytes"] > 30 * MIB and vol["blocks_released"] > 25
    assert done["free_space_blocks_released"] == vol["blocks_released"]
    assert dry["file_len_after"] == done["file_len_after"]
    assert done["file_len_after"] + 25 * MIB <= plain["file_len_after"]
    check_guest(tmp_path / "fs.vhdx", tmp_path)


def test_trim_free_space(ext4_vhdx: Path, tmp_path: Path) -> None:
    before = os.stat(ext4_vhdx).st_blocks * 512
    with vhdx.open(ext4_vhdx, "r+") as disk:
        [vol] = disk.trim_free_space()
    assert vol["file_system"] == "ext4" and vol["skipped"] is None
    assert vol["bytes_reclaimed"] > 25 * MIB
    assert os.stat(ext4_vhdx).st_blocks * 512 + 25 * MIB <= before
    check_guest(ext4_vhdx, tmp_path)
    with vhdx.open(ext4_vhdx) as disk, pytest.raises(io.UnsupportedOperation):
        disk.trim_free_space()


def test_unclean_ext4_is_skipped(ext4_vhdx: Path, tmp_path: Path) -> None:
    raw = tmp_path / "r.img"
    run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(ext4_vhdx), str(raw))
    run(tool("debugfs"), "-w", "-R", "feature needs_recovery", str(raw))
    img = tmp_path / "r.vhdx"
    run("qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o",
        "subformat=dynamic,block_size=1M", str(raw), str(img))
    done = vhdx.compact(img)
    [vol] = done["volumes"]
    assert vol["skipped"] == "needs_recovery" and vol["free_bytes"] is None
    assert done["free_space_blocks_released"] == 0
