"""Several threads read one :class:`vhdx.Disk` at once: positional reads from many threads
return exactly the bytes of qemu's raw export, and Python code runs in another thread while
a large read is under way (the GIL is released for it)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Callable

import vhdx
from conftest import MIB, MakeImage


def test_parallel_reads_return_the_right_bytes(
    make_vhdx: MakeImage, raw_of: Callable[..., bytes]
) -> None:
    img = make_vhdx(
        size=64 * MIB,
        options="subformat=dynamic,block_size=1M",
        writes=[f"write -P {i + 1} {i * 3}M 2M" for i in range(20)],
    )
    want = raw_of(img)
    errors: list[str] = []
    with vhdx.open(img) as disk:
        start = threading.Barrier(8)

        def reader(k: int) -> None:
            start.wait()
            buf = bytearray(3 * MIB)
            for rnd in range(6):
                off = ((k * 7 + rnd * 5) % 20) * 3 * MIB + k * 4096
                n = min(len(buf), disk.size - off)
                if disk.read_at(off, n) != want[off : off + n]:
                    errors.append(f"read_at {k} {off}")
                view = memoryview(buf)[: n // 2]
                got = disk.readinto_at(off, view)
                if got != n // 2 or bytes(view) != want[off : off + n // 2]:
                    errors.append(f"readinto_at {k} {off}")

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_python_runs_while_another_thread_reads(make_vhdx: MakeImage) -> None:
    """With a switch interval of a minute, a thread holding the GIL keeps it: the main
    thread gets to run while the reader is inside ``read_at`` only if the read released
    the GIL."""
    img = make_vhdx(size=256 * MIB, writes=["write -P 7 0 192M"])
    state = {"done": False, "seen_running": False}
    old = sys.getswitchinterval()
    with vhdx.open(img) as disk:

        def reader() -> None:
            data = disk.read_at(0, 192 * MIB)
            state["done"] = True
            assert data[:1] == b"\x07"

        t = threading.Thread(target=reader)
        sys.setswitchinterval(60.0)
        try:
            t.start()  # returns once the reader has started and let go of the GIL
            state["seen_running"] = not state["done"]
        finally:
            t.join()
            sys.setswitchinterval(old)
    assert state["done"]
    assert state["seen_running"], "the reader held the GIL through the whole read"
