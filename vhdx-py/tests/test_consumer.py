"""A real consumer of the file object: ``dissect.ntfs`` (from PyPI) parses an NTFS file system
inside a VHDX and a VHD through :class:`vhdx.Disk` and finds the same files, with the same
contents, as in the raw image the disks were converted from. The NTFS image is made with
``mkntfs -F`` and filled with ``ntfscp`` (ntfs-3g); ``qemu-img convert`` makes the disks."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import BinaryIO

import pytest

import vhdx
from conftest import MIB, missing, run

# Installed by scripts/test.sh; a missing consumer is a failure, never a skip.
from dissect.ntfs import NTFS


def ntfs_image(tmp: Path) -> Path:
    """A 64 MiB raw NTFS volume holding a few files of several sizes (resident, small,
    fragmented across clusters)."""
    sbin = os.pathsep.join([os.environ.get("PATH", ""), "/sbin", "/usr/sbin"])
    mkntfs, ntfscp = shutil.which("mkntfs", path=sbin), shutil.which("ntfscp", path=sbin)
    if mkntfs is None or ntfscp is None:
        missing("mkntfs/ntfscp (apt-get install ntfs-3g)")
    raw = tmp / "fs.raw"
    with open(raw, "wb") as f:
        f.truncate(64 * MIB)
    run(mkntfs, "-q", "-F", "-L", "evidence", str(raw))
    files = {
        "hello.txt": b"hello from inside the guest\n",
        "random.bin": os.urandom(300_000),
        "pattern.dat": bytes(range(256)) * 8192,
    }
    for name, data in files.items():
        src = tmp / name
        src.write_bytes(data)
        run(ntfscp, "-q", str(raw), str(src), name)
    return raw


def listing(fh: BinaryIO) -> dict[str, tuple[int, str]]:
    """Every regular file of the root directory: name → (size, sha256 of the content)."""
    fs = NTFS(fh)
    out: dict[str, tuple[int, str]] = {}
    for name, entry in fs.mft.get("").listdir().items():
        if name.startswith("$") or name == ".":
            continue
        record = entry.dereference()
        if not record.is_file():
            continue
        data = record.open().read()
        out[name] = (len(data), hashlib.sha256(data).hexdigest())
    return out


@pytest.mark.parametrize(
    "fmt,ext,options",
    [
        ("vhdx", "vhdx", "subformat=dynamic,block_size=1M"),
        ("vpc", "vhd", "subformat=dynamic,force_size=on"),
    ],
)
def test_dissect_ntfs_reads_the_guest_file_system(
    tmp_path: Path, fmt: str, ext: str, options: str
) -> None:
    raw = ntfs_image(tmp_path)
    disk_path = tmp_path / f"fs.{ext}"
    run("qemu-img", "convert", "-O", fmt, "-o", options, str(raw), str(disk_path))
    with open(raw, "rb") as f:
        expected = listing(f)
    before = hashlib.sha256(disk_path.read_bytes()).hexdigest()
    assert set(expected) == {"hello.txt", "random.bin", "pattern.dat"}
    with vhdx.open(disk_path) as disk:
        assert listing(disk) == expected
        assert NTFS(disk).volume_name == "evidence"
    # The evidence was only read.
    assert hashlib.sha256(disk_path.read_bytes()).hexdigest() == before
