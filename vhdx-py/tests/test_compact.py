"""``vhdx.compact`` and ``Disk.trim``, checked by independent readers.

Disks come from qemu-img/qemu-io (dynamic VHDX with 1 MiB blocks and no ZERO block state, so
written zeros allocate blocks; dynamic VHD) holding data, written zeros and holes. After
each operation the image must read as before (or, after a trim, as before with the range
zeroed) in ``qemu-img compare`` against a raw export taken before, with a clean ``qemu-img
check`` (VHDX), and in libvhdi (pyvhdi). Differencing disks sit over a qemu-made parent; their
expected content is built here from the parent's raw export and the writes made.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import vhdx
from conftest import MIB, missing, pyvhdi_bytes, run

pytestmark = pytest.mark.oracle

#: qemu's driver name and the block size of the disks ``qemu_dynamic`` makes.
FORMATS = {"vhdx": ("vhdx", MIB), "vhd": ("vpc", 2 * MIB)}


def need_qemu() -> None:
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        missing("qemu-img/qemu-io")


def qemu_dynamic(tmp: Path, ext: str, name: str = "d") -> Path:
    """A 32 MiB dynamic disk made by qemu: 8 MiB of data, 8 MiB of written zeros, a hole,
    4 MiB of data."""
    need_qemu()
    fmt, _ = FORMATS[ext]
    img = tmp / f"{name}.{ext}"
    if fmt == "vhdx":
        opts = "block_size=1M,block_state_zero=off"
    else:
        opts = "subformat=dynamic,force_size=on"
    run("qemu-img", "create", "-q", "-f", fmt, "-o", opts, str(img), "32M")
    writes = ["write -P 1 0 8M", "write -z 8M 8M", "write -P 2 20M 4M"]
    run("qemu-io", "-f", fmt, *[a for w in writes for a in ("-c", w)], str(img))
    return img


def qemu_raw(img: Path, fmt: str) -> Path:
    """``qemu-img convert -O raw`` of ``img``, beside it."""
    out = img.with_name(img.name + ".raw")
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", str(img), str(out))
    return out


def same_as_raw(img: Path, fmt: str, raw: Path) -> None:
    """QEMU and libvhdi read ``img`` as ``raw``; a VHDX passes ``qemu-img check``."""
    run("qemu-img", "compare", "-f", fmt, "-F", "raw", str(img), str(raw))
    if fmt == "vhdx":
        run("qemu-img", "check", "-f", "vhdx", str(img))
    assert pyvhdi_bytes(img) == raw.read_bytes()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Progress:
    """A progress callback that records its calls and the threads that made them."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.threads: set[int] = set()

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))
        self.threads.add(threading.get_ident())

    def check(self, seconds: float) -> None:
        """Called, advancing, ending at the total, at most ~10 times a second."""
        assert self.calls, "progress was never called"
        totals = {t for _, t in self.calls}
        assert len(totals) == 1 and totals.pop() > 0, self.calls
        dones = [d for d, _ in self.calls]
        assert dones == sorted(dones), self.calls
        assert self.calls[-1][0] == self.calls[-1][1], self.calls
        assert len(self.calls) <= seconds * 10 + 3, (seconds, self.calls)


@pytest.mark.parametrize("ext", ["vhdx", "vhd"])
def test_compact_in_place(tmp_path: Path, ext: str) -> None:
    fmt, block = FORMATS[ext]
    img = qemu_dynamic(tmp_path, ext)
    raw = qemu_raw(img, fmt)
    before = img.stat().st_size
    digest = sha256(img)

    dry = vhdx.compact(img, dry_run=True)
    assert sha256(img) == digest, "the dry run changed the file"
    assert dry["path"] == str(img) and dry["output"] is None
    assert dry["mode"] == "full" and dry["dry_run"] is True
    assert dry["file_len_before"] == before
    assert dry["zero_blocks_released"] == 8 * MIB // block
    assert dry["host_bytes_after"] is None

    progress = Progress()
    stats = vhdx.compact(img, progress=progress)
    progress.check(stats["seconds"])
    assert stats["dry_run"] is False
    assert stats["file_len_after"] == img.stat().st_size == dry["file_len_after"] < before
    assert stats["bytes_reclaimed"] == before - stats["file_len_after"]
    assert stats["zero_blocks_released"] == dry["zero_blocks_released"]
    assert stats["blocks_moved"] == dry["blocks_moved"]
    same_as_raw(img, fmt, raw)

    # Nothing is left to reclaim.
    again = vhdx.compact(img, mode="quick", progress=progress)
    assert again["bytes_reclaimed"] == 0 and again["blocks_moved"] == 0
    same_as_raw(img, fmt, raw)


def test_compact_out_leaves_the_input_unchanged(tmp_path: Path) -> None:
    img = qemu_dynamic(tmp_path, "vhdx")
    raw = qemu_raw(img, "vhdx")
    digest = sha256(img)
    out = tmp_path / "out.vhdx"
    progress = Progress()
    stats = vhdx.compact(img, out=out, mode="quick", progress=progress)
    progress.check(stats["seconds"])
    assert sha256(img) == digest, "the input changed"
    assert stats["path"] == str(img) and stats["output"] == str(out)
    assert stats["file_len_before"] == img.stat().st_size
    assert stats["file_len_after"] == out.stat().st_size < img.stat().st_size
    assert stats["zero_blocks_released"] == 0
    same_as_raw(out, "vhdx", raw)

    with pytest.raises(vhdx.InvalidArgumentError, match="already exists"):
        vhdx.compact(img, out=out)
    full = vhdx.compact(img, out=out, overwrite=True)
    assert sha256(img) == digest, "the input changed"
    assert full["file_len_after"] == out.stat().st_size < stats["file_len_after"]
    same_as_raw(out, "vhdx", raw)

    with pytest.raises(vhdx.InvalidArgumentError, match="input itself"):
        vhdx.compact(img, out=img, overwrite=True)
    assert sha256(img) == digest, "the input changed"

    # A dry run with out= measures and writes nothing.
    out.unlink()
    dry = vhdx.compact(img, out=out, dry_run=True)
    assert dry["file_len_after"] == full["file_len_after"]
    assert not out.exists()


def test_compact_arguments_and_errors(tmp_path: Path) -> None:
    img = qemu_dynamic(tmp_path, "vhdx")
    digest = sha256(img)
    with pytest.raises(vhdx.InvalidArgumentError, match="unknown compaction mode"):
        vhdx.compact(img, mode="slow")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        vhdx.compact(img, progress=3)  # type: ignore[arg-type]
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"x" * 4096)
    with pytest.raises(vhdx.NotADiskError):
        vhdx.compact(notes)
    with vhdx.open(img, "r+"):
        with pytest.raises(vhdx.InUseError) as e:
            vhdx.compact(img)
        assert e.value.path == str(img)
    assert sha256(img) == digest

    # An exception in the callback is raised once the compaction has finished.
    def boom(done: int, total: int) -> None:
        raise RuntimeError("stop")

    raw = qemu_raw(img, "vhdx")
    with pytest.raises(RuntimeError, match="stop"):
        vhdx.compact(img, progress=boom)
    same_as_raw(img, "vhdx", raw)


def test_compact_fixed_disk_notes_and_changes_nothing(tmp_path: Path) -> None:
    need_qemu()
    img = tmp_path / "f.vhdx"
    opts = "subformat=fixed,block_size=1M"
    run("qemu-img", "create", "-q", "-f", "vhdx", "-o", opts, str(img), "8M")
    digest = sha256(img)
    progress = Progress()
    stats = vhdx.compact(img, progress=progress)
    assert "fixed" in stats["note"]
    assert stats["bytes_reclaimed"] == 0
    assert progress.calls == []
    assert sha256(img) == digest


def test_compact_releases_the_gil(tmp_path: Path) -> None:
    """Python code keeps running in other threads while a compaction works (the GIL is taken
    back only to call ``progress``)."""
    need_qemu()
    img = tmp_path / "big.vhdx"
    opts = "block_size=1M,block_state_zero=off"
    run("qemu-img", "create", "-q", "-f", "vhdx", "-o", opts, str(img), "512M")
    # Written zeros to scan and release, and data beyond them to move into the freed space.
    run("qemu-io", "-f", "vhdx", "-c", "write -z 0 96M", "-c", "write -P 7 256M 64M", str(img))
    result: dict[str, dict[str, Any]] = {}
    progress = Progress()
    worker = threading.Thread(
        target=lambda: result.update(stats=vhdx.compact(img, progress=progress))
    )
    stamps = [time.monotonic()]
    worker.start()
    while worker.is_alive():
        stamps.append(time.monotonic())
        time.sleep(0.001)
    worker.join()
    stats = result["stats"]
    assert stats["zero_blocks_released"] == 96 and stats["blocks_moved"] == 64
    progress.check(stats["seconds"])
    assert progress.threads == {worker.ident}
    # Holding the GIL would stop this thread for the whole compaction.
    longest = max(b - a for a, b in zip(stamps, stamps[1:]))
    assert longest < max(stats["seconds"] / 2, 0.02), (longest, stats["seconds"])


@pytest.mark.parametrize("ext", ["vhdx", "vhd"])
def test_trim(tmp_path: Path, ext: str) -> None:
    fmt, block = FORMATS[ext]
    img = qemu_dynamic(tmp_path, ext)
    want = bytearray(qemu_raw(img, fmt).read_bytes())
    host_before = img.stat().st_blocks * 512
    with vhdx.open(img) as ro:
        with pytest.raises(io.UnsupportedOperation):
            ro.trim(0, block)
    with vhdx.open(img, "r+") as disk:
        disk.seek(100)
        disk.trim(2 * MIB, 4 * MIB)  # whole blocks inside the first 8 MiB of data
        disk.trim(21_000_000, 1000)  # a piece of a block, not sector-aligned
        assert disk.tell() == 100
        want[2 * MIB : 6 * MIB] = bytes(4 * MIB)
        want[21_000_000:21_001_000] = bytes(1000)
        assert disk.read_at(0, disk.size) == want
        with pytest.raises(vhdx.InvalidArgumentError, match="outside the virtual disk"):
            disk.trim(31 * MIB, 2 * MIB)
        with pytest.raises(ValueError):
            disk.trim(-1, 10)
    assert img.stat().st_blocks * 512 <= host_before - 4 * MIB + 64 * 1024
    raw = img.with_name("want.raw")
    raw.write_bytes(want)
    same_as_raw(img, fmt, raw)

    # The trimmed blocks left holes that compaction gives back.
    stats = vhdx.compact(img, mode="quick")
    assert stats["bytes_reclaimed"] >= 4 * MIB
    same_as_raw(img, fmt, raw)


@pytest.mark.parametrize("ext", ["vhdx", "vhd"])
def test_compact_differencing(tmp_path: Path, ext: str) -> None:
    """A differencing disk's zero blocks are released only where the parent reads zeros
    too; where the parent holds data a VHDX block becomes ZERO (libvhdi reads those from the
    parent, so that range is checked with our reader against the expected zeros) and a VHD
    block stays. The parent file never changes."""
    need_qemu()
    fmt, _ = FORMATS[ext]
    parent = tmp_path / f"base.{ext}"
    opts = "block_size=1M" if fmt == "vhdx" else "subformat=dynamic"
    run("qemu-img", "create", "-q", "-f", fmt, "-o", opts, str(parent), "24M")
    run("qemu-io", "-f", fmt, "-c", "write -P 0xab 0 3M", str(parent))
    parent_digest = sha256(parent)
    want = bytearray(qemu_raw(parent, fmt).read_bytes())
    child = tmp_path / f"child.{ext}"
    with vhdx.create(child, parent=parent) as disk:
        block = int(disk.info()["block_size"])
        assert block == 2 * MIB
        for off, fill in [(0, 0x77), (10 * MIB, 0x77), (4 * MIB, 0x55)]:
            disk.write_at(off, bytes([fill]) * block)
        # Zeros over two whole written blocks: over the parent's data, and over its zeros.
        disk.write_at(0, bytes(block))
        disk.write_at(10 * MIB, bytes(block))
    want[4 * MIB : 6 * MIB] = b"\x55" * block
    want[0:block] = bytes(block)
    before = child.stat().st_size

    progress = Progress()
    stats = vhdx.compact(child, parent=parent, progress=progress)
    progress.check(stats["seconds"])
    assert sha256(parent) == parent_digest, "the parent changed"
    # Block 5 (parent zeros) always; block 0 (parent data) only as a VHDX ZERO block.
    assert stats["zero_blocks_released"] == (2 if fmt == "vhdx" else 1)
    assert stats["file_len_after"] == child.stat().st_size < before
    with vhdx.open(child) as disk:
        assert disk.read_at(0, disk.size) == want
    theirs = pyvhdi_bytes(child, parent)
    if fmt == "vhdx":
        assert theirs[block:] == want[block:]
    else:
        assert theirs == want
