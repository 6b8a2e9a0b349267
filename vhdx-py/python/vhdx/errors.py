"""Exceptions raised by :mod:`vhdx`.

Every exception derives from :class:`VhdxError`; most also derive from the built-in that
fits (``ValueError`` for a corrupt image, ``FileNotFoundError`` for a missing parent or
file, ``PermissionError`` for a file the caller may not open or a path the parent policy
refuses, ``OSError`` for other I/O failures, ``BlockingIOError`` for a disk in use), so code
that knows nothing of this package still catches them. I/O errors carry ``errno`` and
``filename`` like any ``OSError``. Each carries the stable ``kind`` of the underlying error
and, when known, the file (``path``), the on-disk ``structure`` and the file ``offset``
concerned.
"""

from __future__ import annotations

import errno
import os
from typing import Optional

__all__ = [
    "VhdxError",
    "CorruptImageError",
    "NotADiskError",
    "UnsupportedError",
    "ParentNotFoundError",
    "LinkageMismatchError",
    "ChainLoopError",
    "InvalidArgumentError",
    "InUseError",
    "PolicyRefusedError",
    "VhdxIOError",
    "VhdxFileNotFoundError",
    "VhdxPermissionError",
]


class VhdxError(Exception):
    """Root of every error raised by :mod:`vhdx`."""

    #: Stable machine-readable kind (``"corrupt"``, ``"io"``, ...), as the CLI reports it.
    kind: str = "error"

    def __init__(
        self,
        message: str,
        *,
        kind: Optional[str] = None,
        path: Optional[str] = None,
        structure: Optional[str] = None,
        offset: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind
        #: The image file concerned, when known.
        self.path: Optional[str] = path
        #: The on-disk structure concerned (for example ``"VHDX BAT entry"``), when known.
        self.structure: Optional[str] = structure
        #: The byte offset in the file concerned, when known.
        self.offset: Optional[int] = offset

        if isinstance(self, OSError):
            # OSError's own attribute (set through setattr: VhdxError does not declare it).
            setattr(self, "filename", path)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.kind


class CorruptImageError(VhdxError, ValueError):
    """A structure inside the image violates the format (bad checksum, impossible value)."""

    kind = "corrupt"


class NotADiskError(VhdxError, ValueError):
    """The file is not a VHDX or VHD image at all."""

    kind = "not_a_disk"


class UnsupportedError(VhdxError, NotImplementedError):
    """The image (or the request) uses something this version does not implement."""

    kind = "unsupported"


class ParentNotFoundError(VhdxError, FileNotFoundError):
    """A differencing disk's parent was not found; pass ``parent=``."""

    kind = "parent_not_found"


class LinkageMismatchError(VhdxError, ValueError):
    """The parent found does not carry the identity the child recorded."""

    kind = "linkage_mismatch"


class ChainLoopError(VhdxError, ValueError):
    """The parent chain loops back on itself or is deeper than the limit."""

    kind = "chain_loop"


class InvalidArgumentError(VhdxError, ValueError):
    """An argument is invalid (for example a range outside the disk)."""

    kind = "invalid_argument"


class InUseError(VhdxError, BlockingIOError):
    """The disk is held by another writer (another process, a virtual machine, ``qemu-io``,
    or another ``vhdx.open(path, "r+")``), or by a program that forbids writers.

    It is a ``BlockingIOError``, the exception Python raises when a non-blocking lock is
    already taken (``fcntl.flock(fd, LOCK_EX | LOCK_NB)``): the condition passes when the
    holder closes the image. (Not ``PermissionError``: the caller has the rights, and code
    that answers ``PermissionError`` by asking for more rights would be misled.)
    """

    kind = "in_use"


class PolicyRefusedError(VhdxError, PermissionError):
    """A parent path was refused by the parent policy (``parent_policy="strict"``)."""

    kind = "policy_refused"


class VhdxIOError(VhdxError, OSError):
    """The operating system failed an I/O request (``errno`` says how, when known)."""

    kind = "io"


class VhdxFileNotFoundError(VhdxIOError, FileNotFoundError):
    """An image file does not exist (``errno.ENOENT``)."""


class VhdxPermissionError(VhdxIOError, PermissionError):
    """The operating system refused access to an image file (``errno.EACCES``/``EPERM``)."""


_BY_KIND = {
    cls.kind: cls
    for cls in (
        CorruptImageError,
        NotADiskError,
        UnsupportedError,
        ParentNotFoundError,
        LinkageMismatchError,
        ChainLoopError,
        InvalidArgumentError,
        InUseError,
        PolicyRefusedError,
        VhdxIOError,
    )
}


#: I/O failures with a more precise built-in, by ``errno``.
_IO_BY_ERRNO: dict[int, type[VhdxIOError]] = {
    errno.ENOENT: VhdxFileNotFoundError,
    errno.EACCES: VhdxPermissionError,
    errno.EPERM: VhdxPermissionError,
}


def _from_native(
    kind: str,
    message: str,
    path: Optional[os.PathLike[str]],
    structure: Optional[str],
    offset: Optional[int],
    os_errno: Optional[int] = None,
) -> VhdxError:
    """Builds the exception for an error of ``kind`` (called by the native module)."""
    cls = _BY_KIND.get(kind, VhdxError)
    if cls is VhdxIOError and os_errno is not None:
        cls = _IO_BY_ERRNO.get(os_errno, VhdxIOError)
    exc = cls(
        message,
        kind=kind,
        path=None if path is None else os.fspath(path),
        structure=structure,
        offset=offset,
    )
    if isinstance(exc, OSError):
        exc.errno = os_errno
        exc.strerror = message
    return exc
