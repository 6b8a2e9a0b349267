"""Fixtures: images made by qemu-img/qemu-io, their raw exports, the CLI binary, and the
shared real-world images (required under CI: a missing input fails there, never skips)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterable, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20


def in_ci() -> bool:
    return os.environ.get("CI", "") not in ("", "0", "false")


def missing(what: str) -> NoReturn:
    """Skips locally, fails under CI."""
    if in_ci():
        pytest.fail(f"{what} is missing under CI")
    pytest.skip(f"{what} is missing")


def run(*args: str) -> bytes:
    return subprocess.run(args, check=True, capture_output=True).stdout


MakeImage = Callable[..., Path]


@pytest.fixture
def make_vhdx(tmp_path: Path) -> MakeImage:
    """Makes a VHDX with qemu-img and writes ``writes`` (qemu-io commands) into it."""
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        missing("qemu-img/qemu-io")

    def make(
        name: str = "disk.vhdx",
        size: int = 64 * MIB,
        options: str = "subformat=dynamic",
        writes: Iterable[str] = ("write -P 0x5a 1M 64k", "write -P 0xc3 9437184 3M"),
    ) -> Path:
        path = tmp_path / name
        run("qemu-img", "create", "-q", "-f", "vhdx", "-o", options, str(path), str(size))
        cmds: list[str] = []
        for w in writes:
            cmds += ["-c", w]
        if cmds:
            run("qemu-io", "-f", "vhdx", *cmds, str(path))
        return path

    return make


@pytest.fixture
def raw_of(tmp_path: Path) -> Callable[..., bytes]:
    """The whole virtual disk as ``qemu-img convert -O raw`` exports it (``fmt``: qemu's
    driver name, probed when None)."""

    def export(path: Path, fmt: str | None = None) -> bytes:
        out = tmp_path / (path.name + ".raw")
        fmt_args = ["-f", fmt] if fmt else []
        run("qemu-img", "convert", *fmt_args, "-O", "raw", str(path), str(out))
        return out.read_bytes()

    return export


def pyvhdi_bytes(path: Path, parent: Path | None = None) -> bytes:
    """The whole virtual disk as libvhdi (pyvhdi) reads it, with ``parent`` for a
    differencing disk."""
    try:
        import pyvhdi  # type: ignore[import-not-found]  # no stubs
    except ImportError:
        missing("pyvhdi (pip install libvhdi-python)")
    f = pyvhdi.file()
    f.open(str(path))
    p = None
    if parent is not None:
        p = pyvhdi.file()
        p.open(str(parent))
        f.set_parent(p)
    try:
        n = f.get_media_size()
        f.seek_offset(0, 0)
        data: bytes = f.read_buffer(n)
        return data
    finally:
        f.close()
        if p is not None:
            p.close()


@pytest.fixture(scope="session")
def cli() -> Path:
    """The `vhdx` binary built from this workspace (release preferred)."""
    explicit = os.environ.get("VHDX_CLI")
    candidates = [Path(explicit)] if explicit else []
    candidates += [ROOT / "target" / "release" / "vhdx", ROOT / "target" / "debug" / "vhdx"]
    for c in candidates:
        if c.is_file():
            return c
    missing("the vhdx CLI binary (cargo build --release -p vhdx-cli)")


@pytest.fixture(scope="session")
def real() -> Path:
    """../shared/testdata/real, relative to the repository root."""
    p = ROOT.parent / "shared" / "testdata" / "real"
    if not p.is_dir():
        missing(str(p))
    return p
