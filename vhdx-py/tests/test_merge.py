"""``vhdx.merge`` and ``vhdx.flatten``, checked by independent readers.

Chains sit over a qemu-made base (VHDX with 1 MiB blocks, or VHD); their differencing levels
are written through ``vhdx.open(..., "r+")``. Before a merge, libvhdi (pyvhdi) reads the
original chain; afterwards the ancestor must read the same in libvhdi, in ``qemu-img
compare`` against that content and in our reader, with a clean ``qemu-img check`` (VHDX).
The chains avoid libvhdi's known departures (testdata/README.md): each differencing VHDX
level first gets a sector bitmap (one partial write), no whole block is zeroed or trimmed
in a differencing VHDX (libvhdi would read the parent through its ZERO state), and the
differencing VHD levels are written in 4 KiB units.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import vhdx
from conftest import MIB, missing, run
from test_compact import Progress, need_qemu

pytestmark = pytest.mark.oracle

#: qemu's driver name of each extension.
QEMU = {"vhdx": "vhdx", "vhd": "vpc"}


def pyvhdi_chain(paths: list[Path]) -> bytes:
    """The whole virtual disk of ``paths[0]`` as libvhdi reads it, with its parents
    ``paths[1:]`` (nearest first)."""
    try:
        import pyvhdi  # type: ignore[import-not-found]  # no stubs
    except ImportError:
        missing("pyvhdi (pip install libvhdi-python)")
    files = []
    for p in paths:
        f = pyvhdi.file()
        f.open(str(p))
        files.append(f)
    try:
        for child, parent in zip(files, files[1:]):
            child.set_parent(parent)
        n = files[0].get_media_size()
        files[0].seek_offset(0, 0)
        data: bytes = files[0].read_buffer(n)
        return data
    finally:
        for f in files:
            f.close()


def chain(tmp: Path, ext: str, levels: int) -> list[Path]:
    """A qemu-made 24 MiB base with data and ``levels`` differencing disks over it, each
    written in a few places (see the module docstring). Returns the disks, base first."""
    need_qemu()
    fmt = QEMU[ext]
    base = tmp / f"base.{ext}"
    opts = "block_size=1M" if ext == "vhdx" else "subformat=dynamic,force_size=on"
    run("qemu-img", "create", "-q", "-f", fmt, "-o", opts, str(base), "24M")
    run("qemu-io", "-f", fmt, "-c", "write -P 0x11 0 6M", "-c", "write -P 0x22 12M 3M", str(base))
    disks = [base]
    for level in range(1, levels + 1):
        child = tmp / f"c{level}.a{ext}"
        with vhdx.create(child, parent=disks[-1]) as d:
            d.write_at(level * MIB + 8192, bytes([0x30 + level]) * 4096)
            d.write_at(level * 3 * MIB, bytes([0x40 + level]) * (MIB + 8192))
            d.write_at(20 * MIB - 4096, bytes(range(256)) * 64)
            d.trim(5 * MIB - 8192, 16384)
        disks.append(child)
    return disks


@pytest.mark.parametrize("ext", ["vhdx", "vhd"])
def test_merge_into_the_base_reads_as_the_chain(tmp_path: Path, ext: str) -> None:
    disks = chain(tmp_path, ext, 2)
    base, top = disks[0], disks[-1]
    other = tmp_path / f"other.a{ext}"
    vhdx.create(other, parent=base).close()
    before = pyvhdi_chain(disks[::-1])
    progress = Progress()
    stats = vhdx.merge(top, into=base, delete=True, progress=progress)
    progress.check(stats["seconds"])
    assert stats["ancestor"] == str(base)
    assert stats["merged"] == [str(top), str(disks[1])]
    assert stats["deleted"] == stats["merged"]
    assert not top.exists() and not disks[1].exists()
    assert stats["invalidated"] == [{"path": str(other), "parent": str(base)}]
    assert stats["resumed"] is False
    assert stats["bytes_written"] + stats["bytes_zeroed"] + stats["bytes_skipped"] == (
        stats["bytes_merged"]
    )
    if ext == "vhdx":
        assert stats["linkage_id_name"] == "DataWriteGuid"
        assert stats["linkage_id_after"] != stats["linkage_id_before"]
        with pytest.raises(vhdx.LinkageMismatchError):
            vhdx.open(other)
    else:
        assert stats["linkage_id_name"] == "UniqueId"
    raw = tmp_path / "before.raw"
    raw.write_bytes(before)
    run("qemu-img", "compare", "-f", QEMU[ext], "-F", "raw", str(base), str(raw))
    if ext == "vhdx":
        run("qemu-img", "check", "-f", "vhdx", str(base))
    assert pyvhdi_chain([base]) == before
    with vhdx.open(base) as d:
        assert d.read() == before
        assert d.check()["status"] == "ok"


def test_merge_into_the_parent_keeps_the_rest(tmp_path: Path) -> None:
    disks = chain(tmp_path, "vhdx", 2)
    before = pyvhdi_chain(disks[::-1])
    kept = {p: p.read_bytes() for p in (disks[0], disks[2])}
    stats = vhdx.merge(str(disks[2]))
    assert stats["ancestor"] == str(disks[1]) and stats["deleted"] == []
    assert stats["invalidated"] == []
    assert all(p.read_bytes() == b for p, b in kept.items())
    assert pyvhdi_chain([disks[1], disks[0]]) == before
    with vhdx.open(disks[1]) as d:
        assert d.read() == before
    # The merged child no longer matches its parent: merging it again is refused.
    with pytest.raises(vhdx.LinkageMismatchError):
        vhdx.merge(disks[2])


def test_merge_errors(tmp_path: Path) -> None:
    disks = chain(tmp_path, "vhdx", 1)
    with pytest.raises(vhdx.InvalidArgumentError, match="not a differencing disk"):
        vhdx.merge(disks[0])
    vhdx.create(tmp_path / "other.vhdx", 24 * MIB).close()
    with pytest.raises(vhdx.InvalidArgumentError, match="not in the child's chain"):
        vhdx.merge(disks[1], into=tmp_path / "other.vhdx")
    with pytest.raises(vhdx.InvalidArgumentError, match="the child itself"):
        vhdx.merge(disks[1], into=disks[1])
    with vhdx.open(disks[0], "r+"):
        with pytest.raises(vhdx.InUseError):
            vhdx.merge(disks[1])
    with pytest.raises(TypeError):
        vhdx.merge(disks[1], progress=3)  # type: ignore[arg-type]


def test_merge_releases_the_gil(tmp_path: Path) -> None:
    """Python code keeps running in other threads while a merge works (the GIL is taken
    back only to call ``progress``)."""
    need_qemu()
    base = tmp_path / "base.vhdx"
    run("qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(base), "256M")
    child = tmp_path / "child.avhdx"
    with vhdx.create(child, parent=base) as d:
        for i in range(48):
            d.write_at(i * 4 * MIB, bytes([i + 1]) * MIB)
    result: dict[str, dict[str, Any]] = {}
    progress = Progress()
    worker = threading.Thread(
        target=lambda: result.update(stats=vhdx.merge(child, progress=progress))
    )
    stamps = [time.monotonic()]
    worker.start()
    while worker.is_alive():
        stamps.append(time.monotonic())
        time.sleep(0.001)
    worker.join()
    stats = result["stats"]
    assert stats["bytes_written"] == 48 * MIB
    progress.check(stats["seconds"])
    assert progress.threads == {worker.ident}
    longest = max(b - a for a, b in zip(stamps, stamps[1:]))
    assert longest < max(stats["seconds"] / 2, 0.02), (longest, stats["seconds"])


@pytest.mark.parametrize("ext", ["vhdx", "vhd"])
def test_flatten(tmp_path: Path, ext: str) -> None:
    disks = chain(tmp_path, ext, 3)
    before = pyvhdi_chain(disks[::-1])
    raw = tmp_path / "before.raw"
    raw.write_bytes(before)
    kept = [p.read_bytes() for p in disks]
    out = tmp_path / f"flat.{ext}"
    progress = Progress()
    stats = vhdx.flatten(disks[-1], out, type="fixed", progress=progress)
    progress.check(1.0)
    assert stats["format"] == ext and stats["disk_type"] == "fixed"
    run("qemu-img", "compare", "-f", QEMU[ext], "-F", "raw", str(out), str(raw))
    assert pyvhdi_chain([out]) == before
    with vhdx.open(out) as d:
        assert d.info()["disk_type"] == "fixed" and d.info()["parent"] is None
    flat_raw = tmp_path / "flat.raw"
    stats = vhdx.flatten(disks[-1], flat_raw, format="raw")
    assert stats["format"] == "raw" and flat_raw.read_bytes() == before
    assert [p.read_bytes() for p in disks] == kept
    with pytest.raises(vhdx.InvalidArgumentError, match="already exists"):
        vhdx.flatten(disks[-1], out)
    with pytest.raises(vhdx.InvalidArgumentError, match="extension"):
        vhdx.flatten(disks[-1], tmp_path / "x.img")
    with pytest.raises(ValueError):
        vhdx.flatten(disks[-1], tmp_path / "y.vhd", format="qcow2")  # type: ignore[arg-type]
