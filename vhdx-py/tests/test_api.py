"""The package surface: every public name documented, ``Disk`` behaving as a file object
(repr, lines, buffering, closing), and the error classes no other test raises:
``PolicyRefusedError``, ``ChainLoopError`` and ``UnsupportedError``, each with what it
carries."""

from __future__ import annotations

import inspect
import io
import os
from pathlib import Path

import pytest

import vhdx
from conftest import MIB


def test_every_public_name_exists_and_is_documented() -> None:
    assert vhdx.__version__ and vhdx.__doc__
    for name in vhdx.__all__:
        obj = getattr(vhdx, name)
        if name == "__version__":
            continue
        assert inspect.getdoc(obj), f"vhdx.{name} has no docstring"
        if inspect.isfunction(obj):
            for p in inspect.signature(obj).parameters.values():
                # Options are keywords; only the paths and sizes are positional.
                if p.name not in ("path", "size", "mode", "a", "b", "src", "out", "child", "parent"):
                    assert p.kind == p.KEYWORD_ONLY, f"vhdx.{name}({p.name})"
    for name, member in inspect.getmembers(vhdx.Disk):
        if not name.startswith("_") and name in vhdx.Disk.__dict__:
            assert inspect.getdoc(member), f"Disk.{name} has no docstring"


def test_disk_is_a_file_object(tmp_path: Path) -> None:
    path = tmp_path / "d.vhdx"
    with vhdx.create(path, 4 * MIB) as w:
        w.write_at(0, b"line one\nline two\n")
    disk = vhdx.open(path)
    assert repr(disk) == f"<vhdx.Disk {str(path)!r} size={4 * MIB}>"
    assert isinstance(disk, io.RawIOBase) and disk.name == str(path)
    assert disk.readline() == b"line one\n"
    assert next(iter(disk)) == b"line two\n"
    buffered = io.BufferedReader(disk, buffer_size=8192)
    buffered.seek(5)
    assert buffered.read(3) == b"one"
    assert disk.readinto_at(5, bytearray(3)) == 3
    assert disk.readinto_at(4 * MIB - 1, bytearray(10)) == 1
    assert disk.readinto_at(4 * MIB + 5, bytearray(10)) == 0
    with pytest.raises(ValueError):
        disk.readinto_at(-1, bytearray(1))
    with pytest.raises(io.UnsupportedOperation):
        disk.write(b"x")
    with pytest.raises(io.UnsupportedOperation):
        disk.truncate(0)
    disk.close()
    disk.close()  # idempotent
    assert disk.closed and repr(disk) == f"<vhdx.Disk {str(path)!r} closed>"
    for call in (disk.read, disk.tell, lambda: disk.read_at(0, 1), lambda: disk.seek(0)):
        with pytest.raises(ValueError):
            call()


def test_policy_refused_and_chain_loop(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "other").mkdir()
    base = tmp_path / "other" / "base.vhdx"
    vhdx.create(base, 8 * MIB).close()
    child = tmp_path / "sub" / "child.avhdx"
    vhdx.create(child, parent=os.path.abspath(base)).close()
    with pytest.raises(vhdx.PolicyRefusedError) as info:
        vhdx.open(child, parent_policy="strict")
    e = info.value
    assert isinstance(e, PermissionError) and e.kind == "policy_refused"
    assert "strict parent policy" in str(e) and e.path == str(child)
    # The strict policy accepts a parent named by the caller.
    with vhdx.open(child, parent_policy="strict", parent=base) as d:
        assert d.size == 8 * MIB
    with pytest.raises(vhdx.ChainLoopError) as loop:
        vhdx.open(child, parent=child)
    assert isinstance(loop.value, ValueError) and loop.value.kind == "chain_loop"
    # Every function that opens a chain takes the policy (here resize, to the same size).
    with pytest.raises(vhdx.PolicyRefusedError):
        vhdx.resize(child, 8 * MIB, parent_policy="strict")
    assert vhdx.resize(child, 8 * MIB, parent_policy="strict", parent=base)["size_after"] == 8 * MIB


def test_unsupported(tmp_path: Path) -> None:
    base = tmp_path / "base.vhdx"
    vhdx.create(base, 8 * MIB).close()
    child = tmp_path / "child.avhdx"
    vhdx.create(child, parent=base).close()
    vhdx.resize(base, 16 * MIB)  # the child still has the old size (and a stale link)
    with pytest.raises(vhdx.UnsupportedError) as info:
        vhdx.merge(child, ignore_id_mismatch=True)
    e = info.value
    assert isinstance(e, NotImplementedError) and e.kind == "unsupported"
    assert "equal sizes" in str(e)
