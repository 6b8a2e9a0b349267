"""``vhdx.convert``, checked by independent readers: ``qemu-img compare`` of each output with
the source (or, for a differencing chain, with libvhdi's reading of the chain), ``qemu-img
check`` of VHDX outputs, and ``qemu-img info``/``map`` plus the raw footer bytes for the Azure
output.
"""

from __future__ import annotations

import json
import shutil
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import vhdx
from conftest import MIB, missing, pyvhdi_bytes, run

pytestmark = pytest.mark.oracle

#: Output kinds: (extension, format, type, qemu's driver name).
OUTPUTS = [
    ("vhdx", "vhdx", "dynamic", "vhdx"),
    ("vhdx", "vhdx", "fixed", "vhdx"),
    ("vhd", "vhd", "dynamic", "vpc"),
    ("vhd", "vhd", "fixed", "vpc"),
    ("raw", "raw", "dynamic", "raw"),
]


def need_qemu() -> None:
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        missing("qemu-img/qemu-io")


def qemu_vhdx(tmp: Path, size: str = "24M", name: str = "src.vhdx") -> Path:
    """A dynamic VHDX (1 MiB blocks) made by qemu: data, written zeros, a hole, data."""
    need_qemu()
    img = tmp / name
    run("qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(img), size)
    writes = ["write -P 1 0 3M", "write -z 3M 2M", "write -P 2 9M 1M", "write -P 3 12345K 1K"]
    run("qemu-io", "-f", "vhdx", *[a for w in writes for a in ("-c", w)], str(img))
    return img


def qemu_same(out: Path, fmt: str, ref: Path, ref_fmt: str) -> None:
    """QEMU reads ``out`` as ``ref`` (sizes may differ by a zero tail); a VHDX is clean."""
    run("qemu-img", "compare", "-f", fmt, "-F", ref_fmt, str(out), str(ref))
    if fmt == "vhdx":
        run("qemu-img", "check", "-f", "vhdx", str(out))


class Progress:
    """A progress callback that records its calls and the threads that made them."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.threads: set[int] = set()

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))
        self.threads.add(threading.get_ident())

    def check(self, total: int, seconds: float) -> None:
        """Called, advancing, ending at ``total``, at most ~10 times a second."""
        assert self.calls, "progress was never called"
        assert {t for _, t in self.calls} == {total}, self.calls
        dones = [d for d, _ in self.calls]
        assert dones == sorted(dones), self.calls
        assert self.calls[-1] == (total, total), self.calls
        assert len(self.calls) <= seconds * 10 + 3, (seconds, self.calls)


@pytest.mark.parametrize(("ext", "fmt", "kind", "qfmt"), OUTPUTS)
def test_convert_every_output(tmp_path: Path, ext: str, fmt: str, kind: str, qfmt: str) -> None:
    src = qemu_vhdx(tmp_path)
    out = tmp_path / f"out.{ext}"
    # Small blocks, so that allocation shows: 1 MiB (VHDX), 2 MiB (VHD).
    bs = {"vhdx": MIB, "vhd": 2 * MIB}.get(fmt) if kind == "dynamic" else None
    progress = Progress()
    start = time.monotonic()
    stats = vhdx.convert(
        src, out, type=kind, block_size=bs, progress=progress  # type: ignore[arg-type]
    )
    progress.check(24 * MIB, time.monotonic() - start)
    assert set(stats) == {
        "format",
        "disk_type",
        "block_size",
        "size",
        "source_size",
        "bytes_written",
        "bytes_skipped",
        "file_length",
    }
    assert stats["format"] == fmt
    assert stats["disk_type"] == (None if fmt == "raw" else kind)
    assert stats["size"] == stats["source_size"] == 24 * MIB
    assert stats["bytes_written"] + stats["bytes_skipped"] == 24 * MIB
    assert stats["file_length"] == out.stat().st_size
    qemu_same(out, qfmt, src, "vhdx")
    if bs is not None:
        assert stats["block_size"] == bs
        # Only blocks with data: 3 + 1 + 1 of 1 MiB (VHDX, after 4 MiB of metadata), or
        # 2 + 1 + 1 of 2 MiB (VHD).
        assert stats["bytes_written"] <= 5 * MIB
        assert out.stat().st_size <= 9 * MIB
    # The extension, or format=, chooses the format.
    named = tmp_path / "out.bin"
    assert vhdx.convert(src, named, format=None)["format"] == "raw"
    with pytest.raises(vhdx.InvalidArgumentError, match="already exists"):
        vhdx.convert(src, named)
    again = vhdx.convert(src, named, format="vhd", overwrite=True)
    assert again["format"] == "vhd"
    qemu_same(named, "vpc", src, "vhdx")


def footer(path: Path) -> dict[str, Any]:
    """The fields Azure looks at in a VHD's footer (the file's last 512 bytes)."""
    with open(path, "rb") as f:
        f.seek(-512, 2)
        b = f.read(512)
    return {
        "cookie": b[0:8],
        "creator_application": b[28:32],
        "original_size": struct.unpack(">Q", b[40:48])[0],
        "current_size": struct.unpack(">Q", b[48:56])[0],
        "disk_type": struct.unpack(">I", b[60:64])[0],
    }


def test_convert_azure(tmp_path: Path) -> None:
    need_qemu()
    src = tmp_path / "odd.raw"
    size = 21 * MIB + 512
    with open(src, "wb") as f:
        f.truncate(size)
        f.write(b"boot" * 128)
        f.seek(size - 512)
        f.write(b"\xaa" * 512)
    out = tmp_path / "azure.vhd"
    with pytest.raises(vhdx.InvalidArgumentError, match="whole number of MiB") as e:
        vhdx.convert(src, out, azure=True)
    assert e.value.path == str(out)
    assert not out.exists()
    for bad, says in [
        ({"format": "vhdx"}, "VHDX output contradicts"),
        ({"type": "fixed", "block_size": 2 * MIB}, "block size"),
        ({"logical_sector_size": 4096}, "4096-byte sectors"),
    ]:
        with pytest.raises(vhdx.InvalidArgumentError, match=says):
            vhdx.convert(src, out, azure=True, round_up=True, **bad)  # type: ignore[arg-type]
    with pytest.raises(vhdx.InvalidArgumentError, match="Azure conversions only"):
        vhdx.convert(src, tmp_path / "x.vhd", round_up=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.raw"]

    stats = vhdx.convert(src, out, azure=True, round_up=True)
    assert stats["format"] == "vhd" and stats["disk_type"] == "fixed"
    assert stats["size"] == 22 * MIB and stats["source_size"] == size
    assert stats["file_length"] == out.stat().st_size == 22 * MIB + 512
    info = json.loads(run("qemu-img", "info", "-f", "vpc", "--output=json", str(out)))
    assert info["format"] == "vpc"
    assert info["virtual-size"] == 22 * MIB and info["virtual-size"] % MIB == 0
    # Fixed: QEMU maps every byte of the disk to the same offset of the file.
    extents = json.loads(run("qemu-img", "map", "-f", "vpc", "--output=json", str(out)))
    assert all(e["offset"] == e["start"] for e in extents), extents
    assert footer(out) == {
        "cookie": b"conectix",
        "creator_application": b"win ",
        "original_size": 22 * MIB,
        "current_size": 22 * MIB,
        "disk_type": 2,
    }
    # The source, then zeros (qemu-img compare accepts a longer image whose tail is zero).
    qemu_same(out, "vpc", src, "raw")
    assert pyvhdi_bytes(out) == src.read_bytes() + bytes(22 * MIB - size)

    # A size that is already whole is kept; type="fixed" agrees with azure.
    whole = qemu_vhdx(tmp_path, size="24M", name="whole.vhdx")
    stats = vhdx.convert(whole, tmp_path / "w.vhd", azure=True, type="fixed")
    assert stats["size"] == stats["source_size"] == 24 * MIB
    qemu_same(tmp_path / "w.vhd", "vpc", whole, "vhdx")


def test_convert_flattens_a_chain(tmp_path: Path) -> None:
    base = qemu_vhdx(tmp_path, name="base.vhdx")
    child = tmp_path / "child.avhdx"
    with vhdx.create(child, parent=base) as disk:
        disk.write_at(2 * MIB + 100, b"\x77" * 5000)
        disk.write_at(9 * MIB, bytes(MIB))  # hides the parent's data
    want = pyvhdi_bytes(child, base)
    expected = tmp_path / "expected.raw"
    expected.write_bytes(want)
    for ext, qfmt in [("vhdx", "vhdx"), ("vhd", "vpc"), ("raw", "raw")]:
        out = tmp_path / f"flat.{ext}"
        stats = vhdx.convert(child, out, parent=base)
        assert stats["size"] == len(want)
        qemu_same(out, qfmt, expected, "raw")


def test_convert_errors(tmp_path: Path) -> None:
    src = qemu_vhdx(tmp_path)
    with pytest.raises(TypeError):
        vhdx.convert(src, tmp_path / "a.vhd", progress=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="format must be"):
        vhdx.convert(src, tmp_path / "a.vhd", format="qcow2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extension"):
        vhdx.convert(src, tmp_path / "a.qcow2")
    with pytest.raises(vhdx.InvalidArgumentError, match="raw output"):
        vhdx.convert(src, tmp_path / "a.raw", type="fixed")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"x" * 4096)
    with pytest.raises(vhdx.NotADiskError):
        vhdx.convert(notes, tmp_path / "a.vhd")
    # A raw source named so, or named by input_format.
    assert vhdx.convert(notes, tmp_path / "n.vhdx", input_format="raw")["size"] == 4096

    # An exception in the callback is raised once the conversion has finished.
    def boom(done: int, total: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        vhdx.convert(src, tmp_path / "b.vhdx", progress=boom)
    qemu_same(tmp_path / "b.vhdx", "vhdx", src, "vhdx")


def test_convert_releases_the_gil(tmp_path: Path) -> None:
    """Python code keeps running in other threads while a conversion works (the GIL is taken
    back only to call ``progress``)."""
    need_qemu()
    src = tmp_path / "big.vhdx"
    run("qemu-img", "create", "-q", "-f", "vhdx", str(src), "512M")
    run("qemu-io", "-f", "vhdx", "-c", "write -P 7 0 192M", str(src))
    result: dict[str, dict[str, Any]] = {}
    progress = Progress()
    worker = threading.Thread(
        target=lambda: result.update(
            stats=vhdx.convert(src, tmp_path / "big.vhd", progress=progress)
        )
    )
    start = time.monotonic()
    stamps = [start]
    worker.start()
    while worker.is_alive():
        stamps.append(time.monotonic())
        time.sleep(0.001)
    worker.join()
    seconds = time.monotonic() - start
    assert result["stats"]["bytes_written"] == 192 * MIB
    progress.check(512 * MIB, seconds)
    assert progress.threads == {worker.ident}
    longest = max(b - a for a, b in zip(stamps, stamps[1:]))
    assert longest < max(seconds / 2, 0.02), (longest, seconds)
