"""The real-world images in ../shared/testdata/real (made by Windows and by qemu, not by this
project), compared with libvhdi. Under CI a missing folder fails these tests."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

import vhdx
from conftest import pyvhdi_bytes

pytestmark = pytest.mark.real


def test_ext2_vhd_equals_libvhdi(real: Path) -> None:
    path = real / "ext2.vhd"
    with vhdx.open(path) as disk:
        data = disk.read()
        info = disk.info()
        assert disk.check()["corrupt"] is False
    assert data == pyvhdi_bytes(path)
    assert len(data) == 4212736
    assert hashlib.sha256(data).hexdigest().startswith("870be7ae16c1fa8f")
    assert info["format"] == "vhd"
    assert info["disk_type"] == "dynamic"


def test_differencing_vhd_with_parent(real: Path, tmp_path: Path) -> None:
    with vhdx.open(real / "image-differential.vhd", parent=real / "image.vhd") as disk:
        data = disk.read()
        chain = disk.info()["chain"]
    assert len(data) == 104448
    assert hashlib.sha256(data).hexdigest().startswith("c6db12a7db548e19")
    assert len(chain) == 2
    # Located through the parent's name beside the child, without parent=.
    shutil.copy(real / "image.vhd", tmp_path / "image.vhd")
    shutil.copy(real / "image-differential.vhd", tmp_path / "child.vhd")
    with vhdx.open(tmp_path / "child.vhd") as disk:
        assert disk.read() == data


def test_missing_parent_raises_parent_not_found(real: Path) -> None:
    with pytest.raises(vhdx.ParentNotFoundError) as info:
        vhdx.open(real / "fat-differential.vhd")
    e = info.value
    assert isinstance(e, FileNotFoundError)
    assert e.kind == "parent_not_found"
    assert "fat-parent.vhd" in str(e)
    assert "parent=" in str(e)


def test_missing_parent_info_with_require_parent_false(real: Path) -> None:
    with vhdx.open(real / "fat-differential.vhd", require_parent=False) as d:
        info = d.info()
        assert info["disk_type"] == "differencing"
        p = info["parent"]
        assert p["status"] == "not_found"
        keys = {loc["key"] for loc in p["locators"]}
        assert {"W2ru", "W2ku"} <= keys
        assert any("fat-parent.vhd" in t for t in p["tried"])
        # Reads of ranges the missing parent holds cannot be answered.
        with pytest.raises(vhdx.ParentNotFoundError):
            d.read()
