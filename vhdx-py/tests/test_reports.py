"""`Disk.info()`, `map()` and `check()` carry exactly what `vhdx info|map|check --json` print."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import vhdx
from conftest import MIB, MakeImage


def cli_json(cli: Path, *args: str) -> Any:
    out = subprocess.run([str(cli), *args, "--json"], capture_output=True, check=False)
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def test_info_has_the_cli_fields(make_vhdx: MakeImage, cli: Path) -> None:
    img = make_vhdx()
    with vhdx.open(str(img)) as disk:
        ours = disk.info()
    theirs = cli_json(cli, "info", str(img))
    assert list(ours) == list(theirs)
    assert ours == theirs
    assert ours["virtual_size"] == 64 * MIB
    assert ours["format"] == "vhdx"
    assert ours["vhdx"]["log"]["state"] == "clean"


def test_map_equals_the_cli(make_vhdx: MakeImage, cli: Path) -> None:
    img = make_vhdx()
    with vhdx.open(img) as disk:
        entries = disk.map()
        size = disk.size
    assert entries == cli_json(cli, "map", str(img))
    pos = 0
    for e in entries:
        assert e["start"] == pos
        pos += e["length"]
    assert pos == size


def test_check_equals_the_cli(make_vhdx: MakeImage, cli: Path) -> None:
    img = make_vhdx()
    with vhdx.open(str(img)) as disk:
        report = disk.check()
    assert report["corrupt"] is False
    assert report == cli_json(cli, "check", str(img))


def test_check_reports_a_corrupt_bat_entry(make_vhdx: MakeImage) -> None:
    img = make_vhdx(options="subformat=dynamic,block_size=1M")
    data = bytearray(img.read_bytes())
    # Region table entries at 0x30010; find the BAT (GUID 2DC27766-F623-4200-9D64-115E9BFD4A08).
    bat_guid = bytes.fromhex("6677c22d23f600429d64115e9bfd4a08")
    count = int.from_bytes(data[0x30008:0x3000C], "little")
    entries = [data[0x30010 + 32 * i : 0x30010 + 32 * (i + 1)] for i in range(count)]
    bat = next(int.from_bytes(e[16:24], "little") for e in entries if e[:16] == bat_guid)
    data[bat + 8 : bat + 16] = ((1 << 40) | 6).to_bytes(8, "little")
    img.write_bytes(bytes(data))
    with vhdx.open(img) as disk:
        report = disk.check()
    assert report["corrupt"] is True
    assert any(f["severity"] == "corrupt" and f["offset"] == bat + 8 for f in report["findings"])
