"""Creating disks with ``vhdx.create``: every type opens again in ``vhdx.open`` and in
qemu-img (not differencing: qemu cannot open those), and bad arguments raise
``InvalidArgumentError`` without leaving a file."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import vhdx
from conftest import MIB, MakeImage, missing


def qemu_info(path: Path, fmt: str) -> dict[str, object]:
    if shutil.which("qemu-img") is None:
        missing("qemu-img")
    out = subprocess.run(
        ["qemu-img", "info", "-f", fmt, "--output=json", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    info: dict[str, object] = json.loads(out)
    return info


@pytest.mark.parametrize(
    ("name", "kwargs", "fmt", "disk_type", "block"),
    [
        ("d.vhdx", {}, "vhdx", "dynamic", 32 * MIB),
        ("f.vhdx", {"type": "fixed", "block_size": MIB}, "vhdx", "fixed", MIB),
        ("d.vhd", {}, "vpc", "dynamic", 2 * MIB),
        ("f.vhd", {"type": "fixed"}, "vpc", "fixed", None),
    ],
)
def test_create_types(
    tmp_path: Path,
    name: str,
    kwargs: dict[str, object],
    fmt: str,
    disk_type: str,
    block: int | None,
) -> None:
    path = tmp_path / name
    vhdx.create(path, 50 * MIB, **kwargs)  # type: ignore[arg-type]
    with vhdx.open(path) as disk:
        info = disk.info()
        assert info["disk_type"] == disk_type
        assert info["virtual_size"] == 50 * MIB
        assert info["block_size"] == block
        assert disk.read_at(0, 1 << 20) == bytes(1 << 20)
    assert qemu_info(path, fmt)["virtual-size"] == 50 * MIB


def test_create_differencing_and_4k(tmp_path: Path, make_vhdx: MakeImage) -> None:
    parent = make_vhdx("base.vhdx", size=16 * MIB)
    child = tmp_path / "child.avhdx"
    vhdx.create(child, parent=parent)
    with vhdx.open(child) as c, vhdx.open(parent) as p:
        assert c.info()["disk_type"] == "differencing"
        assert c.size == p.size
        assert c.read_at(0, c.size) == p.read_at(0, p.size)
    k = tmp_path / "4k.vhdx"
    vhdx.create(k, 8 * MIB, logical_sector_size=4096)
    with vhdx.open(k) as disk:
        assert disk.logical_sector_size == 4096
        assert disk.physical_sector_size == 4096


def test_create_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(vhdx.InvalidArgumentError):
        vhdx.create(tmp_path / "a.vhdx", 1000)
    with pytest.raises(vhdx.InvalidArgumentError):
        vhdx.create(tmp_path / "a.vhdx", 8 * MIB, block_size=3 * MIB)
    with pytest.raises(vhdx.InvalidArgumentError):
        vhdx.create(tmp_path / "a.vhd", 8 * MIB, logical_sector_size=4096)
    assert list(tmp_path.iterdir()) == []
    existing = tmp_path / "e.vhdx"
    existing.write_bytes(b"keep")
    with pytest.raises(vhdx.InvalidArgumentError):
        vhdx.create(existing, 8 * MIB)
    assert existing.read_bytes() == b"keep"
