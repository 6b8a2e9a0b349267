"""Writing through ``vhdx.open(path, "r+")``, checked by independent readers.

Random writes at unaligned offsets (1 byte to 2 MiB, random and zero bytes, through
``write_at`` and ``seek`` + ``write``, from bytes, bytearrays, memoryview slices, typed arrays
and strided views) are mirrored into a bytearray shadow, over two sessions with a ``flush``
inside the first. After ``close`` the image must read as the shadow in libvhdi (pyvhdi: every
layout, chains included) and, where QEMU can open it (512-byte sectors, no parent), in
``qemu-img compare``, with a clean ``qemu-img check`` (VHDX). Disks come from qemu-img (with
data written by qemu-io) and from ``vhdx.create``; differencing disks sit over a parent holding
``qemu-io -c "write -P 0xab 0 3M"``, whose file must not change.
"""

from __future__ import annotations

import array
import errno
import hashlib
import io
import os
import random
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import pytest

import vhdx
from conftest import MIB, MakeImage, missing, pyvhdi_bytes, run

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

pytestmark = pytest.mark.oracle


def need_qemu() -> None:
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        missing("qemu-img/qemu-io")


def qemu_raw(path: Path, fmt: str) -> bytearray:
    """The virtual disk as ``qemu-img convert`` exports it."""
    out = path.with_name(path.name + ".raw")
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), str(out))
    data = bytearray(out.read_bytes())
    out.unlink()
    return data


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Case:
    """A disk to write and the oracles that can read it."""

    image: Path
    #: What the disk reads before any write, from an independent reader.
    initial: bytearray
    #: Block size of the image: a differencing VHDX never gets a whole block of zeros.
    block: int
    #: qemu's driver name when QEMU reads the image exactly (512-byte sectors, no parent).
    qemu: Optional[str] = None
    parent: Optional[Path] = None


def qemu_vhdx(tmp: Path, make_vhdx: MakeImage) -> Case:
    img = make_vhdx("q.vhdx", size=40 * MIB, options="subformat=dynamic,block_size=1M")
    return Case(img, qemu_raw(img, "vhdx"), MIB, qemu="vhdx")


def qemu_vhdx_fixed(tmp: Path, make_vhdx: MakeImage) -> Case:
    img = make_vhdx("qf.vhdx", size=16 * MIB, options="subformat=fixed,block_size=1M")
    return Case(img, qemu_raw(img, "vhdx"), MIB, qemu="vhdx")


def qemu_vpc(tmp: Path, make_vhdx: MakeImage) -> Case:
    need_qemu()
    img = tmp / "q.vhd"
    run("qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic", str(img), "24M")
    run("qemu-io", "-f", "vpc", "-c", "write -P 0x5a 1M 64k", "-c", "write -P 0xc3 9M 3M", str(img))
    return Case(img, qemu_raw(img, "vpc"), 2 * MIB, qemu="vpc")


def created(
    name: str, size: int, block: int, qemu: Optional[str], **kw: object
) -> Callable[[Path, MakeImage], Case]:
    """A disk made by ``vhdx.create`` (all zeros)."""

    def make(tmp: Path, make_vhdx: MakeImage) -> Case:
        need_qemu()
        img = tmp / name
        vhdx.create(img, size, **kw)  # type: ignore[arg-type]
        return Case(img, bytearray(size), block, qemu=qemu)

    return make


def differencing(name: str, fmt: str) -> Callable[[Path, MakeImage], Case]:
    """``name`` made by ``vhdx.create`` over a qemu-made parent holding 3 MiB of 0xab."""

    def make(tmp: Path, make_vhdx: MakeImage) -> Case:
        need_qemu()
        parent = tmp / ("base.vhdx" if fmt == "vhdx" else "base.vhd")
        opts = "block_size=1M" if fmt == "vhdx" else "subformat=dynamic"
        run("qemu-img", "create", "-q", "-f", fmt, "-o", opts, str(parent), "24M")
        run("qemu-io", "-f", fmt, "-c", "write -P 0xab 0 3M", str(parent))
        child = tmp / name
        vhdx.create(child, parent=parent)
        with vhdx.open(child) as disk:
            block = int(disk.info()["block_size"])
        return Case(child, qemu_raw(parent, fmt), block, parent=parent)

    return make


CASES: dict[str, Callable[[Path, MakeImage], Case]] = {
    "qemu-vhdx-dynamic-1M": qemu_vhdx,
    "qemu-vhdx-fixed": qemu_vhdx_fixed,
    "qemu-vhd-dynamic": qemu_vpc,
    "vhdx-dynamic-1M": created("c.vhdx", 40 * MIB, MIB, "vhdx", block_size=MIB),
    "vhdx-dynamic-32M": created("c32.vhdx", 40 * MIB, 32 * MIB, "vhdx"),
    "vhdx-fixed": created("f.vhdx", 16 * MIB, MIB, "vhdx", type="fixed", block_size=MIB),
    "vhdx-4k-sectors": created(
        "k.vhdx", 24 * MIB, MIB, None, block_size=MIB, logical_sector_size=4096
    ),
    "vhd-dynamic": created("c.vhd", 24 * MIB, 2 * MIB, "vpc"),
    "vhd-fixed": created("f.vhd", 16 * MIB, 2 * MIB, "vpc", type="fixed"),
    "vhdx-differencing": differencing("child.avhdx", "vhdx"),
    "vhd-differencing": differencing("child.vhd", "vpc"),
}


def random_write(rng: random.Random, case: Case, size: int) -> tuple[int, bytes]:
    """Where and what: lengths inside a sector, up to 64 KiB (the GIL is kept) and up to
    2 MiB (released, across blocks); offsets anywhere, often just before a block boundary;
    random bytes or zeros."""
    r = rng.random()
    if r < 0.3:
        n = rng.randint(1, 700)
    elif r < 0.6:
        n = rng.randint(701, 64 << 10)
    else:
        n = rng.randint((64 << 10) + 1, 2 * MIB + 4097)
    n = min(n, size)
    off = rng.randrange(0, size - n + 1)
    if rng.random() < 0.3:
        boundary = (off // case.block + 1) * case.block
        off = max(0, min(boundary - rng.randrange(1, 1500), size - n))
    # Two departures of libvhdi from the spec (testdata/README.md) are kept out of reach.
    if case.parent is not None and case.image.suffix == ".vhd":
        # A differencing VHD: libvhdi reads the sectors after a set bit of a sector-bitmap
        # byte from the child, even where their bits say "parent"; so writes end on a
        # bitmap byte (8 sectors) and set bits never precede clear ones in a byte.
        n = min(size, -(-(off + n) // 4096) * 4096) - off
    zeros = rng.random() < 0.15
    if zeros and case.parent is not None and case.image.suffix == ".avhdx":
        # A differencing VHDX: libvhdi reads ZERO-state blocks from the parent, so no
        # single zero write may cover a whole block.
        n = min(n, case.block - 1)
    return off, bytes(n) if zeros else rng.randbytes(n)


def as_buffer(data: bytes, i: int) -> ReadableBuffer:
    """``data`` in one of the shapes callers pass."""
    kind = i % 5
    if kind == 1:
        return bytearray(data)
    if kind == 2:
        return memoryview(b"\xee" * 7 + data + b"\xee")[7:-1]
    if kind == 3 and len(data) % 4 == 0:
        return array.array("I", data)  # typed: taken byte-wise
    if kind == 4:
        strided = bytearray(2 * len(data))
        strided[::2] = data
        return memoryview(strided)[::2]  # not contiguous: copied once
    return data


def write_session(
    disk: vhdx.Disk, shadow: bytearray, case: Case, rng: random.Random, count: int
) -> None:
    size = disk.size
    for i in range(count):
        off, data = random_write(rng, case, size)
        buf = as_buffer(data, i)
        if i % 2:
            assert disk.write_at(off, buf) == len(data)
        else:
            disk.seek(off)
            assert disk.write(buf) == len(data)
            assert disk.tell() == off + len(data)
        shadow[off : off + len(data)] = data
        if i == count // 2:
            disk.flush()
        # Reads see the write at once, edges included.
        lo, hi = max(0, off - 700), min(size, off + len(data) + 700)
        assert disk.read_at(lo, hi - lo) == shadow[lo:hi], (i, off, len(data))


def open_rw(case: Case) -> vhdx.Disk:
    return vhdx.open(case.image, "r+", parent=case.parent)


@pytest.mark.parametrize("name", CASES)
def test_random_writes_match_the_oracles(
    name: str, tmp_path: Path, make_vhdx: MakeImage
) -> None:
    case = CASES[name](tmp_path, make_vhdx)
    parent_sha = sha256(case.parent) if case.parent else None
    shadow = case.initial
    rng = random.Random(f"{name}-7")
    with open_rw(case) as disk:
        assert disk.writable()
        assert disk.size == len(shadow)
        assert disk.read() == shadow  # before: as the independent reader saw it
        write_session(disk, shadow, case, rng, 40)
    with open_rw(case) as disk:
        write_session(disk, shadow, case, rng, 25)
        buf = bytearray(disk.size)
        disk.seek(0)
        assert disk.readinto(buf) == len(buf)
        assert buf == shadow
    # The oracles, on the closed image.
    assert pyvhdi_bytes(case.image, case.parent) == shadow
    if case.qemu is not None:
        raw = tmp_path / "shadow.raw"
        raw.write_bytes(shadow)
        run("qemu-img", "compare", "-q", "-f", case.qemu, "-F", "raw", str(case.image), str(raw))
        if case.qemu == "vhdx":
            out = run("qemu-img", "check", "-f", "vhdx", str(case.image))
            assert b"No errors were found" in out
    with vhdx.open(case.image, parent=case.parent) as disk:
        assert disk.check()["corrupt"] is False
        assert disk.read() == shadow
    if case.parent is not None:
        assert sha256(case.parent) == parent_sha


def test_whole_block_of_zeros_over_the_parent(tmp_path: Path, make_vhdx: MakeImage) -> None:
    """The write libvhdi cannot check (it reads ZERO-state blocks from the parent): a whole
    block of zeros in a differencing VHDX reads as zeros, not as the parent's 0xab."""
    case = differencing("child.avhdx", "vhdx")(tmp_path, make_vhdx)
    with open_rw(case) as disk:
        assert disk.write_at(case.block, bytes(case.block)) == case.block
        assert disk.read_at(case.block - 1, case.block + 2) == b"\xab" + bytes(case.block + 1)
    with vhdx.open(case.image, parent=case.parent) as disk:
        assert disk.read_at(case.block - 1, case.block + 2) == b"\xab" + bytes(case.block + 1)
        assert disk.check()["corrupt"] is False


def test_the_end_of_the_disk_is_like_a_block_device(tmp_path: Path) -> None:
    img = tmp_path / "e.vhdx"
    vhdx.create(img, 8 * MIB, block_size=MIB)
    with vhdx.open(img, "r+") as disk:
        end = disk.size
        # Across the end: what fits is written, and the count says so.
        disk.seek(end - 3)
        assert disk.write(b"abcdef") == 3
        assert disk.tell() == end
        assert disk.write_at(end - 5, bytearray(b"12345678")) == 5
        # At or past the end: ENOSPC, nothing written, the position kept.
        for off in (end, end + 1, end + 10 * MIB):
            with pytest.raises(OSError) as info:
                disk.write_at(off, b"x")
            assert info.value.errno == errno.ENOSPC
            assert info.value.filename == str(img)
        with pytest.raises(OSError) as info:
            disk.write(b"more")
        assert info.value.errno == errno.ENOSPC
        assert disk.tell() == end
        # Empty writes succeed anywhere.
        assert disk.write_at(end + 1, b"") == 0
        assert disk.write(memoryview(b"")) == 0
        with pytest.raises(ValueError):
            disk.write_at(-1, b"x")
        with pytest.raises(TypeError):
            disk.write_at(0, "text")  # type: ignore[arg-type]
        assert disk.read_at(end - 8, 100) == b"\0\0\x0012345"
        # A buffered writer on top stops at the end as on a block device.
        disk.seek(end - 2)
        with pytest.raises(OSError) as info:
            with io.BufferedWriter(disk) as w:
                w.write(b"XYZ")
                w.flush()
        assert info.value.errno == errno.ENOSPC
    with vhdx.open(img) as disk:
        assert disk.read_at(end - 8, 8) == b"\0\0\x0012345"[:6] + b"XY"


def test_read_only_disks_refuse_writes(tmp_path: Path) -> None:
    img = tmp_path / "r.vhdx"
    vhdx.create(img, 8 * MIB)
    before = sha256(img)
    with vhdx.open(img) as disk:
        assert not disk.writable()
        with pytest.raises(io.UnsupportedOperation):
            disk.write(b"x")
        with pytest.raises(io.UnsupportedOperation):
            disk.write_at(0, b"x")
        with pytest.raises(io.UnsupportedOperation):
            disk.truncate(0)
        disk.flush()  # nothing to commit
    assert sha256(img) == before
    with vhdx.open(img, "r+") as disk:
        with pytest.raises(io.UnsupportedOperation):
            disk.truncate()
        assert disk.size == 8 * MIB


def test_close_commits_and_closes(tmp_path: Path) -> None:
    img = tmp_path / "c.vhdx"
    vhdx.create(img, 8 * MIB, block_size=MIB)
    disk = vhdx.open(img, "r+")
    with disk:
        disk.write_at(3 * MIB + 1, b"kept")
    assert disk.closed
    disk.close()  # idempotent
    for call in (
        lambda: disk.write(b"x"),
        lambda: disk.write_at(0, b"x"),
        disk.flush,
        disk.writable,
        lambda: disk.truncate(),
    ):
        with pytest.raises(ValueError):
            call()
    with vhdx.open(img) as again:
        assert again.read_at(3 * MIB, 6) == b"\0kept\0"


def test_opening_and_closing_without_writes_changes_nothing(
    tmp_path: Path, make_vhdx: MakeImage
) -> None:
    images = [make_vhdx("q.vhdx", options="subformat=dynamic,block_size=1M")]
    for name, kw in (("d.vhdx", {}), ("f.vhdx", {"type": "fixed"}), ("d.vhd", {})):
        vhdx.create(tmp_path / name, 8 * MIB, **kw)  # type: ignore[arg-type]
        images.append(tmp_path / name)
    child = tmp_path / "child.avhdx"
    vhdx.create(child, parent=images[0])
    images.append(child)
    for img in images:
        before = img.read_bytes()
        with vhdx.open(img, "r+") as disk:
            disk.read_at(0, disk.size)
            disk.flush()
        assert img.read_bytes() == before, img.name


def qemu_io_holding(path: Path) -> subprocess.Popen[bytes]:
    """A qemu-io keeping ``path`` open read-write (until its stdin closes), once its locks
    show in /proc/locks."""
    proc = subprocess.Popen(
        ["qemu-io", "-f", "vhdx", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    needle = f":{os.stat(path).st_ino} "
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if needle in Path("/proc/locks").read_text():
            return proc
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise AssertionError(f"qemu-io took no lock on {path}")


def test_a_disk_in_use_is_refused(make_vhdx: MakeImage) -> None:
    img = make_vhdx(writes=["write -P 0x5a 0 64k"])
    before = img.read_bytes()
    proc = qemu_io_holding(img)
    try:
        with pytest.raises(vhdx.InUseError) as info:
            vhdx.open(img, "r+")
        e = info.value
        assert isinstance(e, BlockingIOError) and isinstance(e, vhdx.VhdxError)
        assert e.kind == "in_use"
        assert e.path == str(img)
        assert "in use" in str(e)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # qemu-io quits at the end of its input
        proc.wait(timeout=10)
    assert img.read_bytes() == before

    first = vhdx.open(img, "r+")
    try:
        # Another open in this process is another open file description: refused too.
        with pytest.raises(vhdx.InUseError):
            vhdx.open(img, "r+")
        # And QEMU is refused while we hold the image.
        q = subprocess.run(
            ["qemu-io", "-f", "vhdx", "-c", "read 0 512", str(img)], capture_output=True
        )
        assert q.returncode != 0
        assert b"lock" in q.stderr
    finally:
        first.close()
    # close() released the lock, though `first` is still referenced.
    with vhdx.open(img, "r+") as second:
        assert second.read_at(0, 4) == b"\x5a" * 4


def test_threads_write_and_read_one_disk(tmp_path: Path) -> None:
    """Threads write interleaved unaligned stripes whose edges share sectors (a
    read-modify-write that was not serialized would lose bytes), each longer than 64 KiB so
    the GIL is released and the writes really overlap in time; one thread also flushes, while
    readers check a range nobody writes."""
    need_qemu()
    img = tmp_path / "t.vhdx"
    vhdx.create(img, 24 * MIB, block_size=MIB)
    shadow = bytearray(24 * MIB)
    stable = (14 * MIB, 15 * MIB)  # written before the threads, then only read
    pattern = random.Random(5).randbytes(stable[1] - stable[0])
    shadow[stable[0] : stable[1]] = pattern
    stripe, nthreads, rounds = (64 << 10) + 100, 4, 3
    plans: list[list[tuple[int, bytes]]] = [[] for _ in range(nthreads)]
    rng = random.Random(9)
    for r in range(rounds):  # stripes of [0, 10 MiB), round-robin over the threads
        for t in range(nthreads):
            mine = list(range(t, 10 * MIB // stripe, nthreads))
            rng.shuffle(mine)
            for j in mine:
                data = bytes([(j + r) % 251 + 1]) * stripe
                plans[t].append((j * stripe, data))
                shadow[j * stripe : (j + 1) * stripe] = data
    errors: list[str] = []
    done = threading.Event()

    with vhdx.open(img, "r+") as disk:
        disk.write_at(stable[0], pattern)

        def writer(t: int) -> None:
            try:
                for i, (off, data) in enumerate(plans[t]):
                    assert disk.write_at(off, data) == len(data)
                    if t == 0 and i % 10 == 0:
                        disk.flush()
            except BaseException as e:  # reported by the main thread
                errors.append(f"writer {t}: {e!r}")

        def reader(seed: int) -> None:
            r = random.Random(seed)
            lo, hi = 12 * MIB, 16 * MIB
            while not done.is_set():
                off = r.randrange(lo, hi - 1)
                n = r.randrange(1, min(hi - off, 300_000) + 1)
                if disk.read_at(off, n) != shadow[off : off + n]:
                    errors.append(f"reader saw a change at {off}+{n}")
                    return

        writers = [threading.Thread(target=writer, args=(t,)) for t in range(nthreads)]
        readers = [threading.Thread(target=reader, args=(s,)) for s in range(2)]
        for th in readers + writers:
            th.start()
        for th in writers:
            th.join()
        done.set()
        for th in readers:
            th.join()
        assert errors == []
        assert disk.read_at(0, disk.size) == shadow
    raw = tmp_path / "shadow.raw"
    raw.write_bytes(shadow)
    run("qemu-img", "compare", "-q", "-f", "vhdx", "-F", "raw", str(img), str(raw))


def test_close_while_another_thread_writes(tmp_path: Path) -> None:
    """close() from one thread while another writes: every write that returned is kept, the
    next one raises ValueError (closed), and the lock is released."""
    need_qemu()
    img = tmp_path / "c.vhdx"
    vhdx.create(img, 64 * MIB, block_size=MIB)
    disk = vhdx.open(img, "r+")
    written: list[int] = []
    outcome: list[BaseException] = []
    started = threading.Event()

    def writer() -> None:
        try:
            for i in range(100_000):  # until closed
                k = i % 64
                disk.write_at(k * MIB, bytes([k + 1]) * (MIB // 2 + 1))  # GIL released
                written.append(k)
                started.set()
        except BaseException as e:  # noqa: BLE001 - inspected below
            outcome.append(e)
        started.set()

    th = threading.Thread(target=writer)
    th.start()
    started.wait(10)
    disk.close()
    th.join()
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError), outcome
    assert 0 < len(written) < 100_000
    with vhdx.open(img, "r+") as again:  # the lock is free
        for k in set(written):
            assert again.read_at(k * MIB + MIB // 2 - 3, 4) == bytes([k + 1]) * 4, k
    out = run("qemu-img", "check", "-f", "vhdx", str(img))
    assert b"No errors were found" in out


def test_create_returns_the_new_disk_open_for_writing(tmp_path: Path) -> None:
    """The ROADMAP's contract: ``vhdx.create`` returns the disk opened "r+"."""
    p = tmp_path / "new.vhdx"
    with vhdx.create(p, 8 << 20, block_size=1 << 20) as d:
        assert d.writable()
        d.write_at(3 << 20, b"\x42" * 5000)
    with vhdx.open(p) as d:
        assert d.read_at(3 << 20, 5000) == b"\x42" * 5000
        assert d.read_at(0, 512) == bytes(512)
