"""The exception hierarchy and what each exception carries."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

import vhdx
from conftest import MakeImage


def test_hierarchy() -> None:
    assert issubclass(vhdx.CorruptImageError, vhdx.VhdxError)
    assert issubclass(vhdx.CorruptImageError, ValueError)
    assert issubclass(vhdx.ParentNotFoundError, vhdx.VhdxError)
    assert issubclass(vhdx.ParentNotFoundError, FileNotFoundError)
    assert issubclass(vhdx.VhdxIOError, OSError)
    assert issubclass(vhdx.UnsupportedError, NotImplementedError)
    assert issubclass(vhdx.InUseError, BlockingIOError)
    for cls in (
        vhdx.NotADiskError,
        vhdx.UnsupportedError,
        vhdx.LinkageMismatchError,
        vhdx.InUseError,
        vhdx.PolicyRefusedError,
        vhdx.VhdxIOError,
        vhdx.ChainLoopError,
        vhdx.InvalidArgumentError,
    ):
        assert issubclass(cls, vhdx.VhdxError), cls
    kinds = {c.kind for c in (vhdx.CorruptImageError, vhdx.NotADiskError, vhdx.VhdxIOError)}
    assert kinds == {"corrupt", "not_a_disk", "io"}


def test_not_a_disk(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_bytes(b"hello" * 1000)
    with pytest.raises(vhdx.NotADiskError) as info:
        vhdx.open(p)
    e = info.value
    assert isinstance(e, ValueError)
    assert e.kind == "not_a_disk"
    assert e.path == str(p)
    assert e.structure == "file signature"
    assert e.offset == 0
    assert "not a VHDX or VHD image" in str(e)


def test_missing_file_is_a_file_not_found_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.vhdx"
    with pytest.raises(FileNotFoundError) as info:
        vhdx.open(missing)
    e = info.value
    assert isinstance(e, vhdx.VhdxFileNotFoundError)
    assert isinstance(e, vhdx.VhdxIOError) and isinstance(e, vhdx.VhdxError)
    assert e.kind == "io"
    assert e.errno == errno.ENOENT
    assert e.filename == e.path == str(missing)
    assert str(e) == f"{missing}: no such file"
    # The functions that open files raise it too.
    for call in (
        lambda: vhdx.compact(missing),
        lambda: vhdx.compare(missing, missing),
        lambda: vhdx.convert(missing, tmp_path / "out.raw"),
        lambda: vhdx.resize(missing, 1 << 20),
    ):
        with pytest.raises(FileNotFoundError):
            call()


# A child process opens the file: under root (CI) it drops to the unprivileged "nobody"
# first — after importing everything, as the interpreter's own files may be closed to it —
# since root opens any file.
_OPEN_AS_USER = """
import errno, os, sys, vhdx
try:  # the same call on a missing file first, so every module it needs is loaded
    vhdx.open(sys.argv[1] + ".missing")
except vhdx.VhdxError:
    pass
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
try:
    vhdx.open(sys.argv[1])
except vhdx.VhdxPermissionError as e:
    assert isinstance(e, PermissionError), type(e).__mro__
    assert e.errno == errno.EACCES, e.errno
    print("permission error")
"""


def test_unreadable_file_is_a_permission_error(make_vhdx: MakeImage) -> None:
    img = make_vhdx(writes=[])
    img.chmod(0)
    out = subprocess.run(
        [sys.executable, "-c", _OPEN_AS_USER, str(img)], capture_output=True, text=True
    )
    assert out.stdout.strip() == "permission error", out.stdout + out.stderr


def test_every_class_derives_a_builtin() -> None:
    """Code that knows nothing of this package catches each error by a built-in."""
    builtins = {
        vhdx.CorruptImageError: ValueError,
        vhdx.NotADiskError: ValueError,
        vhdx.UnsupportedError: NotImplementedError,
        vhdx.ParentNotFoundError: FileNotFoundError,
        vhdx.LinkageMismatchError: ValueError,
        vhdx.ChainLoopError: ValueError,
        vhdx.InvalidArgumentError: ValueError,
        vhdx.InUseError: BlockingIOError,
        vhdx.PolicyRefusedError: PermissionError,
        vhdx.VhdxIOError: OSError,
        vhdx.VhdxFileNotFoundError: FileNotFoundError,
        vhdx.VhdxPermissionError: PermissionError,
    }
    for cls, builtin in builtins.items():
        assert issubclass(cls, vhdx.VhdxError) and issubclass(cls, builtin), cls
        e = cls("message", path="/x.vhdx", structure="s", offset=5)
        assert (str(e), e.path, e.structure, e.offset) == ("message", "/x.vhdx", "s", 5)
        if isinstance(e, OSError):
            assert e.filename == "/x.vhdx"
    assert set(vhdx.errors.__all__) == {c.__name__ for c in builtins} | {"VhdxError"}
    assert set(vhdx.errors.__all__) <= set(vhdx.__all__)


def test_damaged_region_tables_are_corruption(make_vhdx: MakeImage) -> None:
    img = make_vhdx(writes=[])
    data = bytearray(img.read_bytes())
    data[0x30000 + 40] ^= 0xFF
    data[0x40000 + 40] ^= 0xFF
    img.write_bytes(bytes(data))
    with pytest.raises(vhdx.CorruptImageError) as info:
        vhdx.open(img)
    e = info.value
    assert e.kind == "corrupt"
    assert e.path == str(img)
    assert e.structure is not None and "region table" in e.structure
    assert e.offset is not None


def test_modes(make_vhdx: MakeImage) -> None:
    img = make_vhdx(writes=[])
    readers: tuple[Literal["r", "rb"], ...] = ("r", "rb")
    writers: tuple[Literal["r+", "rb+", "r+b"], ...] = ("r+", "rb+", "r+b")
    for r in readers:
        with vhdx.open(img, r) as disk:
            assert not disk.writable()
    for w in writers:
        with vhdx.open(img, w) as disk:
            assert disk.writable()
    for bad in ("w", "a", "r+w", "x"):
        with pytest.raises(ValueError, match="vhdx.create"):
            vhdx.open(img, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        vhdx.open(img, parent_policy="lenient")  # type: ignore[arg-type]


def test_bad_arguments(make_vhdx: MakeImage) -> None:
    img = make_vhdx(writes=[])
    with vhdx.open(img) as disk:
        with pytest.raises(ValueError):
            disk.read_at(-1, 10)
        assert disk.read_at(disk.size + 10, 10) == b""
