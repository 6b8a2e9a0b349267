"""``vhdx.resize`` and ``vhdx.set_parent``, checked by independent readers.

Resizing: qemu-made disks grow and shrink; ``qemu-img info`` reports the new size,
``qemu-img compare`` finds the content below the old size unchanged and zeros past it, and
libvhdi (pyvhdi) reads the same. Relinking: a parent moved to another folder is found again
(our reader verifies the linkage; libvhdi reads the chain), a stranger is refused unless
``ignore_id_mismatch``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import vhdx
from conftest import MIB, missing, pyvhdi_bytes, run

pytestmark = pytest.mark.oracle


def qemu_disk(tmp: Path, ext: str) -> tuple[Path, str]:
    """A 48 MiB dynamic disk made by qemu with data at its start and its end."""
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        missing("qemu-img/qemu-io")
    fmt = "vhdx" if ext == "vhdx" else "vpc"
    opts = "block_size=1M" if ext == "vhdx" else "subformat=dynamic,force_size=on"
    img = tmp / f"d.{ext}"
    run("qemu-img", "create", "-q", "-f", fmt, "-o", opts, str(img), "48M")
    run("qemu-io", "-f", fmt, "-c", "write -P 7 0 3M", "-c", "write -P 9 46M 2M", str(img))
    return img, fmt


def qemu_size(img: Path, fmt: str) -> int:
    info = json.loads(run("qemu-img", "info", "-f", fmt, "--output=json", str(img)))
    size: int = info["virtual-size"]
    return size


@pytest.mark.parametrize("ext", ["vhdx", "vhd"])
def test_resize_grows_shrinks_and_reports(tmp_path: Path, ext: str) -> None:
    img, fmt = qemu_disk(tmp_path, ext)
    orig = tmp_path / f"orig.{ext}"
    shutil.copy(img, orig)
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))

    # 40 GiB needs a bigger block table (VHDX 1 MiB blocks: more than one MiB of entries
    # past 128 GiB, so 200 GiB there): the first blocks move out of its way.
    new = (200 if ext == "vhdx" else 40) << 30
    stats = vhdx.resize(img, new, progress=progress)
    assert (stats["size_before"], stats["size_after"]) == (48 * MIB, new)
    assert stats["block_table_grown"] is True
    assert stats["blocks_moved"] >= 1
    assert calls and calls[-1][0] == calls[-1][1]
    assert qemu_size(img, fmt) == new
    if fmt == "vpc":
        run("qemu-img", "compare", "-f", fmt, "-F", fmt, str(orig), str(img))
    else:
        run("qemu-img", "check", "-f", fmt, str(img))
    with vhdx.open(img) as d:
        assert d.size == new
        assert d.read_at(0, 48 * MIB) == pyvhdi_bytes(orig)
        assert d.read_at(48 * MIB, MIB) == bytes(MIB)
    # Below the data: refused, naming where it ends; the minimum is exactly that end.
    with pytest.raises(vhdx.InvalidArgumentError, match=str(48 * MIB)):
        vhdx.resize(img, 16 * MIB)
    stats = vhdx.resize(img, to_minimum=True)
    assert stats["size_after"] == 48 * MIB
    assert stats["minimum_size"] == 48 * MIB
    run("qemu-img", "compare", "-s", "-f", fmt, "-F", fmt, str(orig), str(img))
    assert pyvhdi_bytes(img) == pyvhdi_bytes(orig)
    with pytest.raises(vhdx.InvalidArgumentError):
        vhdx.resize(img)
    with pytest.raises(vhdx.InvalidArgumentError):
        vhdx.resize(img, 64 * MIB, to_minimum=True)
    with pytest.raises(vhdx.InvalidArgumentError, match="multiple"):
        vhdx.resize(img, 64 * MIB + 1)


def chain(tmp: Path, ext: str) -> tuple[Path, Path, bytes]:
    base = tmp / f"base.{ext}"
    child = tmp / f"child.{ext}"
    with vhdx.create(base, 8 * MIB) as d:
        d.write_at(MIB, b"\x61" * (2 * MIB))
    with vhdx.create(child, parent=base) as d:
        d.write_at(2 * MIB, b"\x62" * 4096)
    with vhdx.open(child) as d:
        want = d.read_at(0, d.size)
    return base, child, want


@pytest.mark.parametrize("ext", ["vhdx", "vhd"])
def test_set_parent_after_a_move_and_with_a_stranger(tmp_path: Path, ext: str) -> None:
    base, child, want = chain(tmp_path, ext)
    moved = tmp_path / "elsewhere" / f"the parent.{ext}"
    moved.parent.mkdir()
    base.rename(moved)
    with pytest.raises(vhdx.ParentNotFoundError):
        vhdx.open(child)
    stats = vhdx.set_parent(child, moved)
    assert stats["id_mismatch_ignored"] is False
    assert stats["relative_path"] == f".\\elsewhere\\the parent.{ext}"
    with vhdx.open(child) as d:
        assert d.info()["parent"]["status"] == "ok"
        assert d.read_at(0, d.size) == want
    assert pyvhdi_bytes(child, moved) == want
    stranger = tmp_path / f"stranger.{ext}"
    vhdx.create(stranger, 8 * MIB).close()
    with pytest.raises(vhdx.LinkageMismatchError):
        vhdx.set_parent(child, stranger)
    stats = vhdx.set_parent(child, stranger, ignore_id_mismatch=True)
    assert stats["id_mismatch_ignored"] is True
    with vhdx.open(child) as d:
        assert d.info()["parent"]["status"] == "ok"
    with pytest.raises(vhdx.InvalidArgumentError):
        vhdx.set_parent(stranger, child)
