"""``vhdx.compare`` against ``qemu-img compare`` (the oracle for the verdict and the first
differing offset, which it prints as "Content mismatch at offset N!") on the same pairs:
VHDX against its raw export, a changed copy, a larger disk, a chain against its parent."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest

import vhdx
from conftest import MIB, MakeImage, run

pytestmark = pytest.mark.oracle


def qemu_compare(a: Path, b: Path, strict: bool = False) -> tuple[int, Optional[int]]:
    """``qemu-img compare``'s exit status and the offset it names."""
    args = ["qemu-img", "compare", *(["-s"] if strict else []), str(a), str(b)]
    p = subprocess.run(args, capture_output=True, text=True)
    m = re.search(r"Content mismatch at offset (\d+)!", p.stdout)
    return p.returncode, int(m.group(1)) if m else None


def ours(a: Path, b: Path, **kw: object) -> tuple[int, Optional[int]]:
    r = vhdx.compare(a, b, **kw)  # type: ignore[arg-type]
    return (0 if r["identical"] else 1), r["first_difference"]


def test_pairs_agree_with_qemu(tmp_path: Path, make_vhdx: MakeImage) -> None:
    a = make_vhdx("a.vhdx", options="subformat=dynamic,block_size=1M")
    raw = tmp_path / "a.raw"
    run("qemu-img", "convert", "-O", "raw", str(a), str(raw))
    b = tmp_path / "b.vhdx"
    shutil.copy(a, b)
    run("qemu-io", "-f", "vhdx", "-c", "write -P 0x33 10000000 1", str(b))
    bigger = make_vhdx(
        "c.vhdx",
        size=80 * MIB,
        writes=("write -P 0x5a 1M 64k", "write -P 0xc3 9437184 3M", "write -P 5 70M 4k"),
    )
    bigger_zero = make_vhdx(
        "d.vhdx",
        size=80 * MIB,
        writes=("write -P 0x5a 1M 64k", "write -P 0xc3 9437184 3M", "write -z 70M 4k"),
    )
    pairs = [(a, raw), (raw, a), (a, b), (raw, b), (a, bigger), (bigger, a), (a, bigger_zero)]
    for x, y in pairs:
        assert ours(x, y) == qemu_compare(x, y), (x.name, y.name)
    assert ours(a, bigger_zero, strict=True) == (1, None)
    assert qemu_compare(a, bigger_zero, strict=True)[0] == 1


def test_result_fields_and_progress(tmp_path: Path, make_vhdx: MakeImage) -> None:
    a = make_vhdx("a.vhdx")
    calls: list[tuple[int, int]] = []
    r = vhdx.compare(a, a, progress=lambda d, t: calls.append((d, t)))
    assert r == {
        "a": str(a),
        "b": str(a),
        "identical": True,
        "first_difference": None,
        "size_a": 64 * MIB,
        "size_b": 64 * MIB,
        "size_mismatch": False,
        "bytes_compared": r["bytes_compared"],
        "bytes_skipped": 64 * MIB - r["bytes_compared"],
        "seconds": r["seconds"],
    }
    assert r["bytes_compared"] >= 64 * 1024 + 3 * MIB
    assert calls and calls[-1] == (64 * MIB, 64 * MIB)
    with pytest.raises(TypeError):
        vhdx.compare(a, a, progress=3)  # type: ignore[arg-type]


def test_chain_and_errors(tmp_path: Path, make_vhdx: MakeImage) -> None:
    base = make_vhdx("base.vhdx")
    child = tmp_path / "child.vhdx"
    # QEMU reads no differencing VHDX: the chain is checked against its flattened copy.
    vhdx.create(child, parent=base).close()
    assert vhdx.compare(child, base)["identical"]
    with vhdx.open(child, "r+") as d:
        d.write_at(2 * MIB + 700, b"\x01")
    assert ours(child, base) == (1, 2 * MIB + 512)
    flat = tmp_path / "flat.raw"
    vhdx.flatten(child, flat, format="raw")
    assert ours(child, flat) == (0, None)
    assert qemu_compare(flat, base) == (1, 2 * MIB + 512)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(str(base), moved / "base.vhdx")
    with pytest.raises(vhdx.ParentNotFoundError):
        vhdx.compare(child, child)
    assert ours(child, child, parent=moved / "base.vhdx", parent_b=moved / "base.vhdx") == (0, None)
    with pytest.raises(FileNotFoundError):
        vhdx.compare(tmp_path / "nope.vhdx", child)
