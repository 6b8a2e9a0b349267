"""Reads through the file object, compared byte for byte with qemu-img's raw export and
with libvhdi (pyvhdi), an independent reader."""

from __future__ import annotations

import array
import io
import random
import threading
from pathlib import Path
from typing import Callable

import pytest
import pyvhdi

import vhdx
from conftest import MIB, MakeImage

LAYOUTS = {
    "dynamic-1M-blocks": dict(options="subformat=dynamic,block_size=1M"),
    "dynamic-default": dict(options="subformat=dynamic"),
    "fixed": dict(options="subformat=fixed", size=16 * MIB),
    "4k-logical": dict(options="subformat=dynamic,log_size=1M,block_size=8M"),
}


@pytest.mark.oracle
@pytest.mark.parametrize("layout", LAYOUTS)
def test_whole_disk_equals_qemu_raw(
    layout: str, make_vhdx: MakeImage, raw_of: Callable[[Path], bytes]
) -> None:
    img = make_vhdx(**LAYOUTS[layout])
    expected = raw_of(img)
    with vhdx.open(img) as disk:
        assert disk.size == len(expected)
        assert disk.read() == expected
        assert disk.read() == b""
        disk.seek(0)
        assert disk.readall() == expected


@pytest.mark.oracle
def test_random_ranges_equal_pyvhdi(make_vhdx: MakeImage) -> None:
    img = make_vhdx(
        options="subformat=dynamic,block_size=1M",
        writes=[f"write -P {i} {i * 3 + 1}M 700k" for i in range(1, 12)],
    )
    oracle = pyvhdi.file()
    oracle.open(str(img))
    try:
        with vhdx.open(img) as disk:
            assert disk.size == oracle.get_media_size()
            rng = random.Random(1234)
            for _ in range(200):
                off = rng.randrange(0, disk.size)
                n = rng.randrange(1, 3 * MIB)
                n = min(n, disk.size - off)
                oracle.seek_offset(off, 0)
                assert disk.read_at(off, n) == oracle.read_buffer(n), (off, n)
    finally:
        oracle.close()


def test_readinto_writes_into_the_callers_buffer(make_vhdx: MakeImage) -> None:
    img = make_vhdx()
    with vhdx.open(img) as disk:
        expected = disk.read_at(1 * MIB - 100, 4096)

        buf = bytearray(4096)
        disk.seek(1 * MIB - 100)
        assert disk.readinto(buf) == 4096
        assert bytes(buf) == expected
        assert disk.tell() == 1 * MIB - 100 + 4096

        # A memoryview slice: only the viewed bytes change.
        big = bytearray(b"\xee" * 8192)
        disk.seek(1 * MIB - 100)
        assert disk.readinto(memoryview(big)[100:4196]) == 4096
        assert big[:100] == b"\xee" * 100
        assert bytes(big[100:4196]) == expected
        assert big[4196:] == b"\xee" * (8192 - 4196)

        # Typed buffers are filled byte-wise; the count is in bytes.
        words = array.array("I", [0] * 1024)
        disk.seek(1 * MIB - 100)
        assert disk.readinto(words) == 4096
        assert words.tobytes() == expected

        with pytest.raises(TypeError):
            disk.readinto(b"read-only bytes")  # type: ignore[arg-type]


def test_readinto_at_the_end_is_short(make_vhdx: MakeImage) -> None:
    img = make_vhdx(size=8 * MIB, writes=["write -P 0x77 7M 1M"])
    with vhdx.open(img) as disk:
        disk.seek(-10, io.SEEK_END)
        buf = bytearray(100)
        assert disk.readinto(buf) == 10
        assert buf[:10] == b"\x77" * 10
        assert buf[10:] == bytes(90)
        assert disk.readinto(buf) == 0
        disk.seek(100, io.SEEK_END)
        assert disk.readinto(buf) == 0
        assert disk.read(5) == b""


def test_seek_and_tell(make_vhdx: MakeImage) -> None:
    img = make_vhdx(size=8 * MIB, writes=[])
    with vhdx.open(img) as disk:
        assert disk.seekable() and disk.readable() and not disk.writable()
        assert disk.tell() == 0
        assert disk.seek(1000) == 1000
        assert disk.seek(24, io.SEEK_CUR) == 1024
        assert disk.seek(-24, io.SEEK_CUR) == 1000
        assert disk.seek(0, io.SEEK_END) == 8 * MIB
        assert disk.seek(-512, 2) == 8 * MIB - 512
        assert disk.tell() == 8 * MIB - 512
        assert len(disk.read(4096)) == 512
        assert disk.tell() == 8 * MIB
        with pytest.raises(ValueError):
            disk.seek(-1)
        with pytest.raises(ValueError):
            disk.seek(0, 3)
        # read_at never moves the position.
        disk.seek(5)
        disk.read_at(0, 100)
        assert disk.tell() == 5


def test_geometry(make_vhdx: MakeImage) -> None:
    img = make_vhdx(size=32 * MIB, writes=[])
    with vhdx.open(img) as disk:
        assert disk.size == 32 * MIB
        assert disk.logical_sector_size in (512, 4096)
        assert disk.physical_sector_size in (512, 4096)
        info = disk.info()
        assert info["logical_sector_size"] == disk.logical_sector_size
        assert info["physical_sector_size"] == disk.physical_sector_size


def test_works_as_a_file_for_other_tools(make_vhdx: MakeImage) -> None:
    img = make_vhdx()
    with vhdx.open(img) as disk:
        reader = io.BufferedReader(disk, buffer_size=64 * 1024)
        reader.seek(1 * MIB)
        assert reader.read(4) == b"\x5a" * 4
        assert isinstance(disk, io.RawIOBase)


def test_close_and_context_manager(make_vhdx: MakeImage) -> None:
    img = make_vhdx(writes=[])
    disk = vhdx.open(img)
    with disk as d:
        assert d is disk
        assert not disk.closed
    assert disk.closed
    disk.close()  # idempotent
    for call in (lambda: disk.read(1), lambda: disk.read_at(0, 1), lambda: disk.size, disk.tell):
        with pytest.raises(ValueError):
            call()


def test_parallel_reads_from_threads(make_vhdx: MakeImage) -> None:
    img = make_vhdx(writes=[f"write -P {i} {i}M 1M" for i in range(1, 30)])
    with vhdx.open(img) as disk:
        expected = {i: bytes([i]) * MIB for i in range(1, 30)}
        errors: list[str] = []

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(50):
                i = rng.randrange(1, 30)
                if disk.read_at(i * MIB, MIB) != expected[i]:
                    errors.append(f"block {i}")

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
