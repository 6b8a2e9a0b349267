"""Read and write Microsoft VHDX and VHD virtual disks as Python file objects.

>>> import vhdx
>>> with vhdx.open("disk.vhdx") as disk:          # doctest: +SKIP
...     boot = disk.read_at(0, 512)
>>> with vhdx.open("disk.vhdx", "r+") as disk:    # doctest: +SKIP
...     disk.write_at(1 << 20, b"hello")
...     disk.trim(32 << 20, 64 << 20)
>>> vhdx.compact("disk.vhdx")["bytes_reclaimed"]   # doctest: +SKIP
>>> vhdx.convert("disk.vhdx", "azure.vhd", azure=True)["size"]   # doctest: +SKIP
>>> vhdx.merge("checkpoint.avhdx")["ancestor"]   # doctest: +SKIP
>>> vhdx.compare("disk.vhdx", "copy.vhd")["identical"]   # doctest: +SKIP
>>> vhdx.odx_check("disk.vhdx", volume=2, files=["/data.bin"])["eligible"]   # doctest: +SKIP

Differencing disks open with their whole parent chain (located through the locators, or
given with ``parent=``). Opened read-only, a VHDX with a dirty log is replayed in memory,
never on the file.
"""

from __future__ import annotations

import os
import json
from typing import Any, Callable, Literal, Optional, Sequence, Union

from ._disk import Disk
from ._vhdx import NativeDisk, __version__, create_disk
from ._vhdx import compact as _compact
from ._vhdx import compare as _compare
from ._vhdx import convert as _convert
from ._vhdx import flatten as _flatten
from ._vhdx import merge as _merge
from ._vhdx import odx_check as _odx_check
from ._vhdx import resize as _resize
from ._vhdx import set_parent as _set_parent
from .errors import (
    ChainLoopError,
    CorruptImageError,
    InUseError,
    InvalidArgumentError,
    LinkageMismatchError,
    NotADiskError,
    ParentNotFoundError,
    PolicyRefusedError,
    UnsupportedError,
    VhdxError,
    VhdxFileNotFoundError,
    VhdxIOError,
    VhdxPermissionError,
)

__all__ = [
    "__version__",
    "open",
    "create",
    "compact",
    "convert",
    "merge",
    "flatten",
    "set_parent",
    "resize",
    "compare",
    "odx_check",
    "Disk",
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

_Path = Union[str, "os.PathLike[str]"]

#: What ``parent=`` takes: one path, or several (nearest first).
_Parents = Union[_Path, Sequence[_Path], None]

#: The modes :func:`open` takes, and whether each opens for writing.
_MODES = {"r": False, "rb": False, "r+": True, "rb+": True, "r+b": True}


def open(  # noqa: A001 - the name mirrors the built-in on purpose
    path: _Path,
    mode: Literal["r", "rb", "r+", "rb+", "r+b"] = "r",
    *,
    parent: _Parents = None,
    parent_policy: Literal["default", "strict"] = "default",
    ignore_id_mismatch: bool = False,
    require_parent: bool = True,
) -> Disk:
    """Opens the virtual disk at ``path`` (VHDX or VHD) with its parent chain.

    ``parent`` names the parent image (or a list of them, nearest first) instead of the
    locators stored in the child. ``parent_policy="strict"`` follows only relative locators
    inside the child's folder tree (for untrusted images). ``ignore_id_mismatch`` opens a
    parent even if its identity differs from what the child recorded.
    ``require_parent=False`` opens a differencing disk whose parent cannot be found (for
    :meth:`Disk.info`, which then lists every path tried); its reads of ranges the parent
    holds raise :class:`ParentNotFoundError`.

    ``mode="r+"`` (or ``"rb+"``) opens for reading and writing: the image file is locked
    for writing the way QEMU does it, so it raises :class:`InUseError` (a
    ``BlockingIOError``) while a virtual machine, ``qemu-io`` or another writer (in this
    process too) has the image open; a VHDX with a dirty log is replayed onto the file
    first. Parents are only read. Writes become durable on :meth:`Disk.flush` and
    :meth:`Disk.close`; a clean image opened and closed without writes is left
    byte-identical. A VHDX gets a new data identity when first written, so writing into the
    parent of differencing disks makes them raise :class:`LinkageMismatchError`, as Hyper-V
    would. No mode creates or truncates a disk: use :func:`create`.
    """
    writable = _MODES.get(mode)
    if writable is None:
        raise ValueError(
            f"invalid mode {mode!r} (expected 'r' or 'r+'; vhdx.create makes new disks)"
        )
    if parent_policy not in ("default", "strict"):
        raise ValueError(f"parent_policy must be 'default' or 'strict', not {parent_policy!r}")
    native = NativeDisk(
        os.fspath(path),
        _parent_list(parent),
        parent_policy,
        ignore_id_mismatch,
        require_parent,
        writable,
    )
    return Disk(native, path)


def _parent_list(parent: _Parents) -> list[str]:
    """``parent=`` as a list of paths, nearest first."""
    if parent is None:
        return []
    if isinstance(parent, (str, bytes, os.PathLike)):
        return [os.fspath(parent)]
    return [os.fspath(p) for p in parent]


#: What ``progress=`` takes: called with (bytes done, bytes in all).
_Progress = Optional[Callable[[int, int], object]]


def _run(
    native: Callable[..., str], *args: object, progress: _Progress, **options: object
) -> dict[str, Any]:
    """Runs the native operation ``native(*args, progress=progress, **options)`` (after
    checking that ``progress`` is callable) and returns the JSON object it reports as a
    dict."""
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable, not {type(progress).__name__}")
    result: dict[str, Any] = json.loads(native(*args, progress=progress, **options))
    return result


def create(
    path: _Path,
    size: Optional[int] = None,
    *,
    type: Literal["dynamic", "fixed"] = "dynamic",  # noqa: A002 - the ROADMAP's name
    block_size: Optional[int] = None,
    logical_sector_size: int = 512,
    physical_sector_size: int = 4096,
    parent: Optional[_Path] = None,
    format: Optional[Literal["vhdx", "vhd"]] = None,  # noqa: A002
) -> Disk:
    """Creates a new VHDX or VHD disk at ``path`` (format from ``format`` or the extension)
    and returns it opened read-write (``"r+"``; close it, or use it as a context manager, to
    release its lock).

    ``type`` is ``"dynamic"`` or ``"fixed"``; giving ``parent`` makes a differencing disk
    over it (same format; ``size`` then defaults to the parent's and the sector sizes to the
    parent's). ``block_size`` defaults to 32 MiB for VHDX (2 MiB for differencing) and 2 MiB
    for VHD. A VHD has 512-byte sectors and no physical sector size (the argument is then
    ignored unless it is invalid). An existing file is never overwritten; bad arguments
    raise :class:`InvalidArgumentError`, and a failed create leaves no file behind.
    """
    is_vhd = format == "vhd" or (
        format is None and os.fspath(path).lower().endswith((".vhd", ".avhd"))
    )
    logical: Optional[int] = logical_sector_size
    physical: Optional[int] = physical_sector_size
    if parent is not None:
        # Inherit the parent's sector sizes unless the caller changed the defaults.
        logical = None if logical_sector_size == 512 else logical_sector_size
        physical = None if physical_sector_size == 4096 else physical_sector_size
    if is_vhd and physical_sector_size == 4096:
        physical = None
    create_disk(
        os.fspath(path),
        size,
        type,
        block_size,
        logical,
        physical,
        None if parent is None else os.fspath(parent),
        format,
    )
    return open(path, "r+", parent=parent)


def compact(
    path: _Path,
    *,
    mode: Literal["quick", "full", "retrim"] = "full",
    out: Optional[_Path] = None,
    dry_run: bool = False,
    overwrite: bool = False,
    parent: _Parents = None,
    parent_policy: Literal["default", "strict"] = "default",
    ignore_id_mismatch: bool = False,
    progress: _Progress = None,
    free_space: bool = True,
) -> dict[str, Any]:
    """Gives back the space of the blocks of the disk at ``path`` that hold no live data,
    like ``vhdx compact``, and returns what was done.

    ``mode``: ``"quick"`` moves blocks into the holes of the file and truncates it;
    ``"full"`` first releases every block that reads as zeros (in a differencing disk: where
    the parent reads zeros too, else, in a VHDX, the block is marked zero) and, unless
    ``free_space=False``, every block that holds only free space of the guest's ext2/3/4
    and NTFS volumes (read from their own allocation maps; volumes not understood or not
    clean are skipped and keep every byte), then does what quick does; ``"retrim"`` moves nothing and punches holes in the host file where no block
    or structure lies (the file keeps its length). The disk reads the same afterwards, byte
    for byte; a VHDX keeps its data identity, so differencing children stay linked.

    In place, the disk is locked for writing (:class:`InUseError` while a virtual machine,
    ``qemu-io`` or another writer has it open); an interrupted compaction leaves a disk
    with the same content, and running it again finishes the job. With ``out``, a compacted
    copy is written there (it appears only when complete; an existing file is replaced
    only with ``overwrite=True``) and ``path`` is left as it was. ``dry_run=True`` changes
    nothing and reports what the mode would reclaim (``out`` is then not written). A fixed
    disk has nothing to give back: the result says so in ``note`` and nothing changes.
    ``out`` naming the input itself raises :class:`InvalidArgumentError`.
    ``parent``, ``parent_policy`` and ``ignore_id_mismatch`` locate the parents of a
    differencing disk as in :func:`open` (its zero blocks are compared with them).

    ``progress(done, total)`` is called as a quick or full compaction advances (bytes of
    work), at most about ten times a second and last with ``done == total``; dry runs,
    retrim and fixed disks do no block copying and do not call it. The work runs with the
    GIL released; the GIL is taken back only to call ``progress``. An exception raised by
    ``progress`` stops the calls and is raised when the compaction has finished (it cannot
    be interrupted halfway).

    Returns the object ``vhdx compact --json`` prints for one file: ``path``, ``output``,
    ``mode``, ``dry_run``, ``file_len_before``, ``file_len_after``, ``host_bytes_before``,
    ``host_bytes_after`` (bytes the file occupies on the host; None when unknown, and for
    dry runs), ``bytes_reclaimed`` (file length given back; for retrim the bytes of the
    holes punched), ``blocks_moved``, ``bytes_moved``, ``zero_blocks_released``,
    ``free_space_pass``, ``free_space_blocks_released``, ``volumes`` (one dict per guest
    volume, as :meth:`Disk.trim_free_space` returns, with ``blocks_released`` and
    ``bytes_reclaimed`` of this compaction), ``seconds``, ``note`` (why nothing could be
    done, or a remark) and any other field the core reports.
    """
    if (
        out is not None
        and not dry_run
        and os.path.exists(path)
        and os.path.exists(out)
        and os.path.samefile(path, out)
    ):
        raise InvalidArgumentError(
            f"{os.fspath(out)}: out is the input itself; leave out unset to compact in place",
            path=os.fspath(out),
        )
    stats = _run(
        _compact,
        os.fspath(path),
        mode,
        None if out is None else os.fspath(out),
        dry_run,
        overwrite,
        _parent_list(parent),
        parent_policy,
        ignore_id_mismatch,
        progress=progress,
        free_space=free_space,
    )
    return {"path": os.fspath(path), "output": None if out is None else os.fspath(out), **stats}


def convert(
    src: _Path,
    out: _Path,
    *,
    format: Optional[Literal["vhdx", "vhd", "raw"]] = None,  # noqa: A002 - the CLI's name
    type: Literal["dynamic", "fixed"] = "dynamic",  # noqa: A002 - the ROADMAP's name
    block_size: Optional[int] = None,
    logical_sector_size: Optional[int] = None,
    azure: bool = False,
    round_up: bool = False,
    overwrite: bool = False,
    input_format: Optional[Literal["vhdx", "vhd", "raw"]] = None,
    parent: _Parents = None,
    parent_policy: Literal["default", "strict"] = "default",
    ignore_id_mismatch: bool = False,
    progress: _Progress = None,
) -> dict[str, Any]:
    """Copies the disk at ``src`` into a new disk at ``out``, like ``vhdx convert``, and
    returns what was written.

    ``src`` is any disk :func:`open` reads (a differencing disk is flattened with its whole
    chain; ``parent``, ``parent_policy`` and ``ignore_id_mismatch`` locate the parents as
    there) or a raw image: ``input_format="raw"``, or a file without a VHDX or VHD signature
    whose name ends in ``.raw``, ``.img`` or ``.bin``. ``format`` is ``"vhdx"``, ``"vhd"``
    or ``"raw"`` (a sparse raw file); by default it comes from ``out``'s extension
    (``.vhdx``/``.avhdx``, ``.vhd``/``.avhd``, ``.raw``/``.img``/``.bin``). ``type`` is
    ``"dynamic"`` (the default; raw outputs have no type) or ``"fixed"``; ``block_size``
    defaults to 32 MiB for VHDX and 2 MiB for VHD; ``logical_sector_size`` to the source's
    (VHDX; a VHD has 512-byte sectors). Ranges the source holds no data in, and all-zero
    pieces, are not written, so a dynamic output allocates only blocks with data.

    ``azure=True`` makes an Azure-ready disk: a fixed VHD whose virtual size is a whole
    number of MiB and at least 20 MiB. ``format`` then defaults to ``"vhd"`` and ``type``
    (left at its default, or ``"fixed"``) is fixed; another format, a block size or 4 KiB
    sectors raise :class:`InvalidArgumentError`. A source of another size raises :class:`InvalidArgumentError` unless
    ``round_up=True``, which grows the output to the next MiB (at least 20 MiB); the added
    tail reads as zeros. ``round_up`` without ``azure`` raises :class:`InvalidArgumentError`.
    A VHD cannot exceed 2040 GiB.

    The output is written under a temporary name beside ``out`` and appears only when it is
    complete and flushed; on any failure nothing is left. An existing ``out`` raises
    :class:`InvalidArgumentError` unless ``overwrite=True``.

    The work runs with the GIL released; ``progress(done, total)`` is called as it advances
    (bytes of the source), at most about ten times a second and last with ``done == total``.
    An exception raised by ``progress`` stops the calls and is raised when the conversion has
    finished (it cannot be interrupted halfway).

    Returns the object ``vhdx convert --json`` prints: ``format``, ``disk_type`` (None for
    raw), ``block_size`` (None for raw and fixed VHD), ``size`` (the output's virtual size),
    ``source_size``, ``bytes_written``, ``bytes_skipped`` (together ``size``) and
    ``file_length``.
    """
    stats = _run(
        _convert,
        os.fspath(src),
        os.fspath(out),
        format,
        None if type == "dynamic" else type,
        block_size,
        logical_sector_size,
        azure,
        round_up,
        overwrite,
        input_format,
        _parent_list(parent),
        parent_policy,
        ignore_id_mismatch,
        progress=progress,
    )
    return stats


def merge(
    child: _Path,
    *,
    into: Optional[_Path] = None,
    delete: bool = False,
    parent: _Parents = None,
    parent_policy: Literal["default", "strict"] = "default",
    ignore_id_mismatch: bool = False,
    progress: _Progress = None,
) -> dict[str, Any]:
    """Writes the content of the differencing disk ``child``, and of every disk between it
    and the ancestor, into that ancestor (like Hyper-V's ``Merge-VHD`` and ``vhdx merge``),
    which then reads exactly as ``child`` did; returns what was done.

    The ancestor is ``child``'s parent, or ``into`` (a path naming any disk of the chain
    above ``child``). ``parent``, ``parent_policy`` and ``ignore_id_mismatch`` locate the
    parents as in :func:`open`. ``child`` and the disks between are only read (and locked
    against writers meanwhile); with ``delete=True`` they are removed once the merge is
    complete. The ancestor is written like a disk opened ``"r+"``: locked
    (:class:`InUseError` while a virtual machine or another writer has it, or any disk of
    the chain, open), crash-safe. A merge interrupted at any moment leaves an ancestor that
    opens and checks clean; running the same merge again completes it (a marker file
    ``.NAME.vhdx-merge`` beside the ancestor lets that run accept the ancestor's changed
    identity; it is removed when the merge completes).

    A merge changes the ancestor's content, and a VHDX its DataWriteGuid, so the other
    differencing disks made from it (or from a merged disk) no longer read what they were
    made over: those found in the folders of the disks involved are listed in
    ``invalidated``.

    The work runs with the GIL released; ``progress(done, total)`` is called as it advances
    (bytes of the ranges the merged disks hold), at most about ten times a second and last
    with ``done == total``. An exception raised by ``progress`` stops the calls and is
    raised when the merge has finished (it cannot be interrupted halfway).

    Returns the object ``vhdx merge --json`` prints: ``child``, ``ancestor``, ``format``,
    ``merged`` (the disks merged, child first), ``size``, ``bytes_merged``,
    ``bytes_written``, ``bytes_zeroed``, ``bytes_skipped`` (zeros the ancestor already
    read), ``linkage_id_name`` (``"DataWriteGuid"`` or, for VHD, ``"UniqueId"``),
    ``linkage_id_before``, ``linkage_id_after``, ``resumed`` (this run completed an
    interrupted merge), ``deleted``, ``invalidated`` (a list of ``{"path", "parent"}``) and
    ``seconds``.
    """
    stats = _run(
        _merge,
        os.fspath(child),
        None if into is None else os.fspath(into),
        delete,
        _parent_list(parent),
        parent_policy,
        ignore_id_mismatch,
        progress=progress,
    )
    return stats


def flatten(
    child: _Path,
    out: _Path,
    *,
    type: Literal["dynamic", "fixed"] = "dynamic",  # noqa: A002 - the ROADMAP's name
    format: Optional[Literal["vhdx", "vhd", "raw"]] = None,  # noqa: A002 - the CLI's name
    overwrite: bool = False,
    parent: _Parents = None,
    parent_policy: Literal["default", "strict"] = "default",
    ignore_id_mismatch: bool = False,
    progress: _Progress = None,
) -> dict[str, Any]:
    """Writes the content of the disk ``child`` with its whole parent chain into a new
    standalone disk at ``out`` (like ``vhdx flatten``) and returns what was written; the
    chain is only read.

    ``format`` is ``"vhdx"``, ``"vhd"`` or ``"raw"``; by default the chain's own format, and
    an ``out`` whose extension names another format raises :class:`InvalidArgumentError`
    (pass ``format``). ``type`` is ``"dynamic"`` or ``"fixed"`` (raw outputs are sparse and
    have no type). ``out`` appears only when complete; an existing ``out`` raises
    :class:`InvalidArgumentError` unless ``overwrite=True``, and ``out`` may not be a disk
    of the chain. ``parent``, ``parent_policy`` and ``ignore_id_mismatch`` locate the parents
    as in :func:`open`. Progress and the GIL as in :func:`convert`.

    Returns the object ``vhdx flatten --json`` prints (that of :func:`convert`).
    """
    stats = _run(
        _flatten,
        os.fspath(child),
        os.fspath(out),
        type,
        format,
        overwrite,
        _parent_list(parent),
        parent_policy,
        ignore_id_mismatch,
        progress=progress,
    )
    return stats


def set_parent(
    child: _Path,
    parent: _Path,
    *,
    ignore_id_mismatch: bool = False,
) -> dict[str, Any]:
    """Points the differencing disk ``child`` at ``parent`` (like ``vhdx set-parent`` and
    Hyper-V's ``Set-VHD -ParentPath``), after the parent moved or to use a copy of it, and
    returns what was done.

    The child's parent locators are rewritten the way :func:`create` writes them: a path
    relative to the child's folder and an absolute one. ``parent`` must be the disk the
    child was made from: its identity (VHDX DataWriteGuid, VHD UniqueId) must be one the
    child recorded, else :class:`LinkageMismatchError` is raised and nothing changes.
    ``ignore_id_mismatch=True`` accepts it and records its identity: only for a parent
    holding the data the child was made on (any other corrupts what the child reads). The
    child is locked like a disk opened ``"r+"``; its content and data identity do not
    change; the change is crash-safe (a VHDX's through its log). The GIL is released.

    Returns the object ``vhdx set-parent --json`` prints: ``path``, ``parent``, ``format``,
    ``relative_path``, ``absolute_path`` (as recorded), ``parent_id`` (the identity
    recorded), ``previous_ids``, ``id_mismatch_ignored``, ``previous_locators`` (a list of
    ``{"key", "value"}``) and ``note`` (for instance that the sizes differ).
    """
    stats: dict[str, Any] = json.loads(
        _set_parent(os.fspath(child), os.fspath(parent), ignore_id_mismatch)
    )
    return stats


def resize(
    path: _Path,
    size: Optional[int] = None,
    *,
    to_minimum: bool = False,
    parent: _Parents = None,
    parent_policy: Literal["default", "strict"] = "default",
    ignore_id_mismatch: bool = False,
    progress: _Progress = None,
) -> dict[str, Any]:
    """Changes the virtual size of the disk at ``path`` to ``size`` bytes (like ``vhdx
    resize`` and Hyper-V's ``Resize-VHD``), or with ``to_minimum=True`` shrinks it to the
    end of its last data rounded up to a whole block (fixed disks: a whole MiB); returns
    what was done. Give exactly one of ``size`` and ``to_minimum``.

    Every type grows (the new space reads as zeros). A disk shrinks only when no data lies
    past the new end, else :class:`InvalidArgumentError` names where its data ends. The
    size must be a multiple of the logical sector size, at most 2040 GiB for VHD and 64 TiB
    for VHDX. A differencing disk must keep its parent's size: it is resized only to the
    size of its parent (named by ``parent`` when its locators do not find it; ``parent``,
    ``parent_policy`` and ``ignore_id_mismatch`` locate the parents as in :func:`open`), after
    the parent was resized. A VHDX gets a new data identity (its differencing children must be
    relinked with :func:`set_parent`); a VHD keeps its UniqueId. The disk is locked like a
    disk opened ``"r+"``; an interrupted resize leaves the old or the new size, the content
    unchanged, and running it again finishes.

    The work runs with the GIL released; ``progress(done, total)`` is called as data is
    moved or scanned, at most about ten times a second and last with ``done == total``.

    Returns the object ``vhdx resize --json`` prints: ``path``, ``format``, ``disk_type``,
    ``size_before``, ``size_after``, ``minimum_size`` (None when a fixed disk grows without
    a scan), ``file_len_before``, ``file_len_after``, ``block_table_grown``,
    ``blocks_moved``, ``bytes_moved``, ``seconds``, ``gpt_relocated`` (the backup GPT
    moved to the new end) and ``note``. Partitions are never cut: a shrink below the end of
    the last partition (plus a GPT's backup copy) is refused, and ``to_minimum`` stops there.
    """
    if (size is None) == (not to_minimum):
        raise InvalidArgumentError(
            "give either a new size or to_minimum=True (exactly one)", path=os.fspath(path)
        )
    return _run(
        _resize,
        os.fspath(path),
        size,
        to_minimum,
        _parent_list(parent),
        parent_policy,
        ignore_id_mismatch,
        progress=progress,
    )


def compare(
    a: _Path,
    b: _Path,
    *,
    strict: bool = False,
    input_format: Optional[Literal["vhdx", "vhd", "raw"]] = None,
    parent: _Parents = None,
    parent_b: _Parents = None,
    parent_policy: Literal["default", "strict"] = "default",
    ignore_id_mismatch: bool = False,
    progress: _Progress = None,
) -> dict[str, Any]:
    """Whether the disks ``a`` and ``b`` read the same, like ``vhdx compare`` and ``qemu-img
    compare``; returns what was found. Nothing is written.

    Each side is any disk :func:`open` reads (a differencing disk with its whole chain:
    ``parent`` names ``a``'s parents, ``parent_b`` ``b``'s; ``parent_policy`` and
    ``ignore_id_mismatch`` apply to both) or a raw image (``input_format="raw"`` for both,
    or a name ending in ``.raw``, ``.img`` or ``.bin``). Ranges both disks hold no data in
    are not read. Disks of different sizes compare over the size they share, and the extra
    part of the larger one must read as zeros; with ``strict=True`` a difference in size
    makes them different by itself.

    The work runs with the GIL released; ``progress(done, total)`` is called as it advances
    (bytes of the larger disk), at most about ten times a second. An exception raised by
    ``progress`` stops the calls and is raised when the comparison has finished.

    Returns the object ``vhdx compare --json`` prints: ``a``, ``b``, ``identical``,
    ``first_difference`` (the offset of the first 512-byte sector that differs, as
    ``qemu-img compare`` reports it; None when identical or when only the sizes differ under
    ``strict``), ``size_a``, ``size_b``, ``size_mismatch``, ``bytes_compared``,
    ``bytes_skipped`` and ``seconds``. A disk that cannot be read raises the matching
    :class:`VhdxError`; it is never reported as a difference.
    """
    result = _run(
        _compare,
        os.fspath(a),
        os.fspath(b),
        strict,
        input_format,
        _parent_list(parent),
        _parent_list(parent_b),
        parent_policy,
        ignore_id_mismatch,
        progress=progress,
    )
    return {"a": os.fspath(a), "b": os.fspath(b), **result}


def odx_check(
    path: _Path,
    *,
    volume: Optional[int] = None,
    files: Union[str, Sequence[str]] = (),
    controller: Literal["scsi", "ide"] = "scsi",
    parent: _Parents = None,
    parent_policy: Literal["default", "strict"] = "default",
    ignore_id_mismatch: bool = False,
) -> dict[str, Any]:
    """Whether Hyper-V could offload copies (ODX, offloaded data transfer) for the disk at
    ``path``, with every reason (like ``vhdx odx-check``).

    It examines every image file of the chain on the host (not sparse, compressed or
    encrypted; the host file system is reported), the ``controller`` the disk hangs off
    (``"scsi"`` qualifies, ``"ide"`` does not), the guest volumes as the guest sees them
    (NTFS, not BitLocker; every volume, or only partition ``volume``, 1-based, 0 for a file
    system on the whole disk) and each guest path in ``files`` on that volume (not sparse,
    compressed, encrypted, resident in its MFT record or a reparse point). ``parent``,
    ``parent_policy`` and ``ignore_id_mismatch`` locate the parents as in :func:`open`.

    Returns the object ``vhdx odx-check --json`` prints: ``path``, ``eligible`` (no finding
    failed), ``controller``, ``host_files``, ``volumes`` and ``findings``, each a dict with
    ``rule`` (a stable id such as ``"guest_file_sparse"``), ``subject``, ``volume``,
    ``status`` (``"pass"``, ``"fail"`` or ``"info"``) and ``message``. A disk that cannot be
    read raises (as :func:`open`); a ``volume`` the disk lacks raises
    :class:`InvalidArgumentError`.
    """
    paths = [files] if isinstance(files, str) else list(files)
    report: dict[str, Any] = json.loads(
        _odx_check(
            os.fspath(path),
            volume,
            paths,
            controller,
            _parent_list(parent),
            parent_policy,
            ignore_id_mismatch,
        )
    )
    return report
