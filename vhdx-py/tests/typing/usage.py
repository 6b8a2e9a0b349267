"""Every public name of :mod:`vhdx` used the way the documentation shows, for ``mypy --strict``
(scripts/test.sh and test_typing.py run it): the stubs and annotations must accept all of it
and infer the types noted. Never run; it only has to type-check."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

import vhdx


def progress(done: int, total: int) -> None:
    print(f"{done}/{total}")


def reads(path: Path) -> bytes:
    with vhdx.open(path, parent=[path.with_name("base.vhdx")], parent_policy="strict") as disk:
        raw: io.RawIOBase = disk
        fh: BinaryIO = io.BufferedReader(disk)
        size: int = disk.size
        sectors: tuple[int, int] = (disk.logical_sector_size, disk.physical_sector_size)
        buf = bytearray(4096)
        n: int = disk.readinto(buf) + disk.readinto_at(512, memoryview(buf)[:512])
        disk.seek(0, io.SEEK_END)
        pos: int = disk.tell()
        info: dict[str, Any] = disk.info(scan=True)
        extents: list[dict[str, Any]] = disk.map()
        report: dict[str, Any] = disk.check()
        name: str = disk.name
        del raw, fh, size, sectors, n, pos, info, extents, report, name
        return disk.read_at(0, 512) + disk.read(10) + disk.readall()


def writes(path: Path) -> None:
    with vhdx.create(path, 1 << 30, type="fixed", block_size=None, format="vhdx") as disk:
        written: int = disk.write_at(0, b"boot") + disk.write(memoryview(b"x"))
        disk.trim(1 << 20, 1 << 20)
        disk.flush()
        del written
    with vhdx.open(str(path), "r+", ignore_id_mismatch=True, require_parent=False) as disk:
        assert disk.writable()


def operations(a: Path, b: Path) -> list[dict[str, Any]]:
    return [
        vhdx.compact(a, mode="quick", out=b, overwrite=True, dry_run=False, progress=progress),
        vhdx.convert(a, b, format="vhd", type="fixed", azure=True, round_up=True),
        vhdx.convert(a, b, input_format="raw", block_size=1 << 20, logical_sector_size=4096),
        vhdx.merge(a, into=b, delete=True, progress=progress),
        vhdx.flatten(a, b, type="dynamic", format="raw", parent=b),
        vhdx.set_parent(a, b, ignore_id_mismatch=True),
        vhdx.resize(a, 1 << 30, progress=progress),
        vhdx.resize(a, to_minimum=True),
        vhdx.compare(a, b, strict=True, parent_b=[b], progress=lambda d, t: None),
    ]


def errors(path: Path) -> str:
    try:
        vhdx.open(path)
    except vhdx.ParentNotFoundError as e:
        missing: FileNotFoundError = e
        return f"{missing} {e.kind} {e.path} {e.structure} {e.offset}"
    except vhdx.VhdxFileNotFoundError as e:
        return str(e.errno)
    except (vhdx.InUseError, vhdx.PolicyRefusedError, vhdx.VhdxPermissionError) as e:
        os_error: OSError = e
        return str(os_error)
    except (vhdx.CorruptImageError, vhdx.NotADiskError, vhdx.LinkageMismatchError) as e:
        value_error: ValueError = e
        return str(value_error)
    except (vhdx.ChainLoopError, vhdx.InvalidArgumentError, vhdx.UnsupportedError) as e:
        return str(e)
    except vhdx.VhdxIOError as e:
        return e.kind
    except vhdx.VhdxError as e:
        return e.kind
    return vhdx.__version__
