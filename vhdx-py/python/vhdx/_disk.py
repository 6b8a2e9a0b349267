"""The :class:`Disk` file object: a virtual disk as an ``io.RawIOBase``.

Reads go straight from the image files into the caller's buffer, and writes straight from
the caller's buffer into the image (the native module uses the buffer in place, with the GIL
released for large transfers); the position is kept here, so ``read_at`` and ``write_at``
calls from several threads do not disturb each other or the file position.
"""

from __future__ import annotations

import errno
import io
import json
import os
from typing import TYPE_CHECKING, Any, NoReturn, Optional, Union

from ._vhdx import NativeDisk

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["Disk"]


class Disk(io.RawIOBase):
    """An opened virtual disk (with its parent chain), read-only or, opened with mode
    ``"r+"``, read-write.

    Use :func:`vhdx.open` to get one. It is a binary file object: ``read``, ``readinto``,
    ``write``, ``seek``, ``tell`` and iteration work as on any raw file, so other Python
    tools (for example a partition-table or file-system parser) can use the guest disk
    directly. Like a block device it has a fixed size: writes never extend it.

    Reads see every earlier write. ``flush()`` makes every earlier write durable (until
    then, a crash may lose recent writes, as with a disk's write cache, but never leaves the
    image inconsistent); ``close()`` flushes, marks a VHDX log clean and releases the write
    lock. Several threads may call ``read_at``, ``readinto_at`` and ``write_at`` on one disk
    at once: large reads run in parallel with the GIL released (writes are applied one at a
    time). ``read``, ``readinto`` and ``seek`` share one position, like any file object.
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
        """True when the disk was opened with mode ``"r+"``."""
        return self._native_or_raise().writable

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Reads into ``buffer`` (any writable C-contiguous buffer, filled byte-wise) at the
        current position; returns the bytes read (0 at the end)."""
        n = self._native_or_raise().readinto_at(self._pos, buffer)
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

    def write(self, b: ReadableBuffer) -> int:
        """Writes ``b`` at the current position and moves past what was written; returns the
        number of bytes written. Past the end of the disk it behaves as :meth:`write_at`."""
        n = self.write_at(self._pos, b)
        self._pos += n
        return n

    def truncate(self, size: Optional[int] = None) -> NoReturn:
        """Always raises ``io.UnsupportedOperation``: a virtual disk has a fixed size."""
        self._native_or_raise()
        raise io.UnsupportedOperation("truncate: a virtual disk cannot change its size")

    def flush(self) -> None:
        """Commits every earlier write and makes it durable: the data and the metadata that
        makes it visible reach stable storage (VHDX: through the log). Does nothing on a disk
        opened read-only."""
        native = self._native
        if native is not None:
            native.flush()
        elif self.closed:
            raise ValueError("I/O operation on closed disk")
        # Otherwise close() is under way and has committed already.

    def close(self) -> None:
        """Closes the disk. Opened ``"r+"``, it first commits and flushes every write and
        marks a VHDX log clean (any tool then opens the file without a replay); the write
        lock is released and the image files are closed. If that fails, the error is raised
        and the disk is closed all the same (as ``io.FileIO`` does). Idempotent."""
        native, self._native = self._native, None
        try:
            if native is not None:
                native.close()
        finally:
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

    def readinto_at(self, offset: int, buffer: WriteableBuffer) -> int:
        """Reads into ``buffer`` (any writable C-contiguous buffer, filled byte-wise) from
        ``offset`` without moving the position, like ``os.preadv``; returns the bytes read
        (fewer than the buffer at the end of the disk, 0 past it). The bytes go straight
        into the buffer, with the GIL released for large reads, so threads sharing one disk
        read in parallel this way."""
        if offset < 0:
            raise ValueError("offset must not be negative")
        return self._native_or_raise().readinto_at(offset, buffer)

    def write_at(self, offset: int, data: ReadableBuffer) -> int:
        """Writes ``data`` at ``offset`` without moving the position, like ``os.pwrite``;
        returns the number of bytes written.

        ``data`` is any object with the buffer protocol (bytes, bytearray, memoryview,
        array, mmap, ...), taken byte-wise; contiguous buffers are written without a copy.
        Any offset and length work (partial sectors are merged with what the disk holds).
        A disk cannot grow, so the end of the disk behaves as on a Linux block device: a
        write that crosses the end writes the bytes that fit and returns their count; one
        that starts at or past the end raises ``OSError`` with ``errno.ENOSPC``; an empty
        write returns 0 anywhere. A disk opened read-only raises
        ``io.UnsupportedOperation``.
        """
        if offset < 0:
            raise ValueError("offset must not be negative")
        native = self._native_or_raise()
        n = native.write_at(offset, data)
        if n == 0 and offset >= native.size and memoryview(data).nbytes > 0:
            raise OSError(
                errno.ENOSPC,
                f"{os.strerror(errno.ENOSPC)}: offset {offset} is at or past the end of the "
                f"{native.size}-byte virtual disk",
                self.name,
            )
        return n

    def trim(self, offset: int, length: int) -> None:
        """Makes ``length`` bytes at ``offset`` read as zeros and gives their space back where
        the format allows, as a guest's UNMAP/TRIM does; the position does not move.

        Whole blocks are freed (VHDX: not present in a dynamic disk, zero in a differencing
        disk, so the parent's data never shows through; VHD: unallocated) and their space
        in the host file is punched out; the rest of the range is zeroed, punching holes in
        the host file where it can. A fixed disk is zeroed and keeps its space. Any offset
        and length work. Durable after :meth:`flush` or :meth:`close`, like writes; the file
        keeps its length (:func:`vhdx.compact` shrinks it). A range outside the disk raises
        :class:`vhdx.InvalidArgumentError` (a ``ValueError``); a disk opened read-only
        raises ``io.UnsupportedOperation``.
        """
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        self._native_or_raise().trim(offset, length)

    def trim_free_space(self) -> list[dict[str, Any]]:
        """Trims the free space of the guest's file systems, offline, as ``fstrim`` would in
        the guest (``vhdx trim --free-space``): every volume whose allocation map is read
        completely (ext2/3/4 block bitmaps, NTFS ``$Bitmap``) has its free ranges trimmed
        where this file stores them (see :meth:`trim`); used bytes never change, free ones
        read as zeros afterwards. Volumes that are not understood or not clean (BitLocker,
        NTFS marked dirty, ext needing journal recovery, …) are skipped and keep every byte.

        Returns one dict per volume: ``volume`` (partition number, 0 for the whole disk),
        ``offset``, ``length``, ``file_system``, ``free_bytes`` (None when skipped),
        ``bytes_reclaimed`` (free bytes this file held and gave back), ``blocks_released``,
        ``skipped`` (None, or a reason kind such as ``"dirty"``) and ``reason``. Durable
        after :meth:`flush` or :meth:`close`. A disk opened read-only raises
        ``io.UnsupportedOperation``.
        """
        result: list[dict[str, Any]] = json.loads(self._native_or_raise().trim_free_space())
        return result

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
