"""The :class:`Disk` file object: a virtual disk as an ``io.RawIOBase``.

Reads go straight from the image files into the caller's buffer (the native module writes
into it with the GIL released); the position is kept here, so ``read_at`` calls from several
threads do not disturb each other or the file position.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, Optional, Union

from ._vhdx import NativeDisk

__all__ = ["Disk"]

_Buffer = Union[bytearray, memoryview, Any]


class Disk(io.RawIOBase):
    """An opened virtual disk (with its parent chain), read-only.

    Use :func:`vhdx.open` to get one. It is a binary file object: ``read``, ``readinto``,
    ``seek``, ``tell`` and iteration work as on any raw file, so other Python tools (for
    example a partition-table or file-system parser) can read the guest disk directly.
    """

    def __init__(self, native: NativeDisk, path: Union[str, os.PathLike[str]]) -> None:
        super().__init__()
        self._native: Optional[NativeDisk] = native
        self._pos = 0
        #: The path the disk was opened from.
        self.name: str = os.fspath(path)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"size={self._native_or_raise().size}"
        return f"<vhdx.Disk {self.name!r} {state}>"

    def _native_or_raise(self) -> NativeDisk:
        native = self._native
        if native is None:
            raise ValueError("I/O operation on closed disk")
        return native

    # --- geometry -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Virtual size in bytes."""
        return self._native_or_raise().size

    @property
    def logical_sector_size(self) -> int:
        """Logical sector size the guest sees (512 or 4096)."""
        return self._native_or_raise().logical_sector_size

    @property
    def physical_sector_size(self) -> int:
        """Physical sector size reported to the guest (512 or 4096)."""
        return self._native_or_raise().physical_sector_size

    # --- io.RawIOBase ---------------------------------------------------------------------

    def readable(self) -> bool:
        """Always true while open."""
        self._native_or_raise()
        return True

    def seekable(self) -> bool:
        """Always true while open."""
        self._native_or_raise()
        return True

    def writable(self) -> bool:
        """False: writing arrives with the write path."""
        self._native_or_raise()
        return False

    def readinto(self, buffer: _Buffer) -> int:
        """Reads into ``buffer`` at the current position; returns the bytes read (0 at the end)."""
        native = self._native
        if native is None:
            raise ValueError("I/O operation on closed disk")
        try:
            # bytearray, bytes-format memoryview, mmap, array('B'): passed as they are.
            n = native.readinto_at(self._pos, buffer)
        except BufferError:
            # Another item format or shape (array('I'), a 2-D view): read into its bytes.
            n = native.readinto_at(self._pos, memoryview(buffer).cast("B"))
        self._pos += n
        return n

    def read(self, size: Optional[int] = -1) -> bytes:
        """Reads up to ``size`` bytes (all to the end when ``size`` is negative or None)."""
        native = self._native_or_raise()
        if size is None or size < 0:
            size = max(native.size - self._pos, 0)
        data = native.read_at(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        """Reads from the current position to the end of the disk."""
        return self.read(-1)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Moves the position (``whence`` 0: from the start, 1: from here, 2: from the end)."""
        native = self._native_or_raise()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = native.size + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self) -> int:
        """The current position."""
        self._native_or_raise()
        return self._pos

    def close(self) -> None:
        """Closes the disk; the image files are released."""
        if not self.closed:
            self._native = None
        super().close()

    def __enter__(self) -> "Disk":
        self._native_or_raise()
        return self

    # --- disk operations ------------------------------------------------------------------

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset``, without moving the position (fewer at the end)."""
        if offset < 0 or n < 0:
            raise ValueError("offset and n must not be negative")
        return self._native_or_raise().read_at(offset, n)

    def info(self, scan: bool = False) -> dict[str, Any]:
        """The facts ``vhdx info --json`` prints (same keys)."""
        result: dict[str, Any] = json.loads(self._native_or_raise().info(scan))
        return result

    def map(self) -> list[dict[str, Any]]:
        """The allocation map ``vhdx map --json`` prints, like ``qemu-img map --output=json``."""
        result: list[dict[str, Any]] = json.loads(self._native_or_raise().map())
        return result

    def check(self) -> dict[str, Any]:
        """The report ``vhdx check --json`` prints: ``status``, ``corrupt``, ``findings``."""
        result: dict[str, Any] = json.loads(self._native_or_raise().check())
        return result
