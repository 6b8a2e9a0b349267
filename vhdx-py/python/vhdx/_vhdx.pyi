"""Type stubs of the native module ``vhdx._vhdx`` (private: use :mod:`vhdx`)."""

import os
from typing import Callable, Sequence, Union, final

from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "NativeDisk",
    "__version__",
    "compact",
    "compare",
    "convert",
    "create_disk",
    "flatten",
    "merge",
    "odx_check",
    "resize",
    "set_parent",
]

__version__: str

_Path = Union[str, os.PathLike[str]]

@final
class NativeDisk:
    """An opened virtual disk (with its parent chain), read and written with positional calls."""

    def __new__(
        cls,
        path: _Path,
        parents: Sequence[_Path] = ...,
        parent_policy: str = ...,
        ignore_id_mismatch: bool = ...,
        require_parent: bool = ...,
        writable: bool = ...,
    ) -> NativeDisk: ...
    @property
    def writable(self) -> bool: ...
    @property
    def size(self) -> int: ...
    @property
    def logical_sector_size(self) -> int: ...
    @property
    def physical_sector_size(self) -> int: ...
    def read_at(self, offset: int, n: int) -> bytes: ...
    def readinto_at(self, offset: int, buffer: WriteableBuffer) -> int: ...
    def write_at(self, offset: int, data: ReadableBuffer) -> int: ...
    def trim(self, offset: int, length: int) -> None: ...
    def trim_free_space(self) -> str: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def info(self, scan: bool = False) -> str: ...
    def map(self) -> str: ...
    def check(self) -> str: ...

def create_disk(
    path: _Path,
    size: int | None,
    disk_type: str = ...,
    block_size: int | None = ...,
    logical_sector_size: int | None = ...,
    physical_sector_size: int | None = ...,
    parent: _Path | None = ...,
    format: str | None = ...,
) -> None: ...

def compact(
    path: _Path,
    mode: str = ...,
    out: _Path | None = ...,
    dry_run: bool = ...,
    overwrite: bool = ...,
    parents: Sequence[_Path] = ...,
    parent_policy: str = ...,
    ignore_id_mismatch: bool = ...,
    progress: Callable[[int, int], object] | None = ...,
    free_space: bool = ...,
) -> str: ...

def convert(
    src: _Path,
    out: _Path,
    format: str | None = ...,
    disk_type: str | None = ...,
    block_size: int | None = ...,
    logical_sector_size: int | None = ...,
    azure: bool = ...,
    round_up: bool = ...,
    overwrite: bool = ...,
    input_format: str | None = ...,
    parents: Sequence[_Path] = ...,
    parent_policy: str = ...,
    ignore_id_mismatch: bool = ...,
    progress: Callable[[int, int], object] | None = ...,
) -> str: ...

def merge(
    child: _Path,
    into: _Path | None = ...,
    delete: bool = ...,
    parents: Sequence[_Path] = ...,
    parent_policy: str = ...,
    ignore_id_mismatch: bool = ...,
    progress: Callable[[int, int], object] | None = ...,
) -> str: ...

def flatten(
    child: _Path,
    out: _Path,
    disk_type: str = ...,
    format: str | None = ...,
    overwrite: bool = ...,
    parents: Sequence[_Path] = ...,
    parent_policy: str = ...,
    ignore_id_mismatch: bool = ...,
    progress: Callable[[int, int], object] | None = ...,
) -> str: ...

def set_parent(child: _Path, parent: _Path, ignore_id_mismatch: bool = ...) -> str: ...

def resize(
    path: _Path,
    size: int | None = ...,
    to_minimum: bool = ...,
    parents: Sequence[_Path] = ...,
    parent_policy: str = ...,
    ignore_id_mismatch: bool = ...,
    progress: Callable[[int, int], object] | None = ...,
) -> str: ...

def odx_check(
    path: _Path,
    volume: int | None = ...,
    files: Sequence[str] = ...,
    controller: str = ...,
    parents: Sequence[_Path] = ...,
    parent_policy: str = ...,
    ignore_id_mismatch: bool = ...,
) -> str: ...
def compare(
    a: _Path,
    b: _Path,
    strict: bool = ...,
    input_format: str | None = ...,
    parents: Sequence[_Path] = ...,
    parents_b: Sequence[_Path] = ...,
    parent_policy: str = ...,
    ignore_id_mismatch: bool = ...,
    progress: Callable[[int, int], object] | None = ...,
) -> str: ...
