"""vhdx.odx_check and the guest layout of Disk.info() on a disk made by sgdisk, mkntfs and
ntfscp (converted by qemu-img): the same report as ``vhdx odx-check --json``, the exact
verdict table, and the errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import vhdx

from conftest import MIB, missing, run


def _tools() -> None:
    for tool in ("sgdisk", "mkntfs", "ntfscp", "qemu-img"):
        if shutil.which(tool) is None:
            missing(tool)


def _disk(tmp_path: Path) -> Path:
    """GPT: 1 NTFS (plain.bin, small.txt), 2 a BitLocker signature volume; as a VHDX
    without holes on the host (a full copy of qemu-img's output)."""
    raw = tmp_path / "d.raw"
    with raw.open("wb") as f:
        f.truncate(24 * MIB)
    run("sgdisk", "-n", "1:2048:+16M", "-t", "1:0700", "-c", "1:data",
        "-n", "2:0:+2M", "-t", "2:0700", str(raw))
    vol = tmp_path / "ntfs.raw"
    with vol.open("wb") as f:
        f.truncate(16 * MIB)
    run("mkntfs", "-F", "-Q", "-q", str(vol))
    plain = tmp_path / "plain.bin"
    plain.write_bytes(bytes(range(256)) * 400)
    small = tmp_path / "small.txt"
    small.write_bytes(b"resident\n")
    run("ntfscp", str(vol), str(plain), "plain.bin")
    run("ntfscp", str(vol), str(small), "small.txt")
    fve = bytearray(512)
    fve[0:3] = b"\xeb\x58\x90"
    fve[3:11] = b"-FVE-FS-"
    fve[510:512] = b"\x55\xaa"
    with raw.open("r+b") as f:
        f.seek(MIB)
        f.write(vol.read_bytes())
        f.seek(17 * MIB)
        f.write(bytes(fve))
    sparse = tmp_path / "sparse.vhdx"
    run("qemu-img", "convert", "-O", "vhdx", str(raw), str(sparse))
    full = tmp_path / "d.vhdx"
    run("cp", "--sparse=never", str(sparse), str(full))
    return full


def _table(report: dict[str, object]) -> list[tuple[str, str, str]]:
    findings = report["findings"]
    assert isinstance(findings, list)
    host = report["host_files"]
    assert isinstance(host, list)
    return [
        (f["rule"], "host" if f["subject"] in host else f["subject"], f["status"])
        for f in findings
        if f["rule"] != "host_filesystem"
    ]


def test_odx_check_table_and_cli(tmp_path: Path, cli: Path) -> None:
    _tools()
    disk = _disk(tmp_path)
    r = vhdx.odx_check(disk, files=["/plain.bin", "/SMALL.TXT"])
    file_rules = ["sparse", "compressed", "encrypted", "resident", "reparse_point"]

    def file_rows(path: str, fail: str | None) -> list[tuple[str, str, str]]:
        s = f"volume 1: {path}"
        rows = [("guest_file_not_found", s, "pass")]
        for rule in file_rules:
            rows.append(("guest_file_" + rule, s, "fail" if rule == fail else "pass"))
        return rows

    assert _table(r) == [
        ("host_file_sparse", "host", "pass"),
        ("host_file_compressed", "host", "pass"),
        ("host_file_encrypted", "host", "pass"),
        ("controller_ide", "controller", "pass"),
        ("guest_volume_bitlocker", "volume 1", "pass"),
        ("guest_volume_not_ntfs", "volume 1", "pass"),
        ("guest_volume_bitlocker", "volume 2", "fail"),
        *file_rows("/plain.bin", None),
        *file_rows("/SMALL.TXT", "resident"),
    ]
    assert r["eligible"] is False
    assert r["volumes"] == [1, 2]
    # The CLI prints the same report, and exits 1 (not eligible).
    out = subprocess.run(
        [str(cli), "odx-check", str(disk), "--json", "--file", "/plain.bin", "--file", "/SMALL.TXT"],
        capture_output=True,
    )
    assert out.returncode == 1, out.stderr
    assert json.loads(out.stdout) == r
    # Volume 1 and the plain file over SCSI: eligible (exit 0); on IDE not.
    ok = vhdx.odx_check(disk, volume=1, files="/plain.bin")
    assert ok["eligible"] is True
    assert [f["status"] for f in ok["findings"]].count("fail") == 0
    ide = vhdx.odx_check(disk, volume=1, files=["/plain.bin"], controller="ide")
    assert [(f["rule"], f["status"]) for f in ide["findings"] if f["status"] == "fail"] == [
        ("controller_ide", "fail")
    ]
    out = subprocess.run(
        [str(cli), "odx-check", str(disk), "--volume", "1", "--file", "/plain.bin"],
        capture_output=True,
    )
    assert out.returncode == 0, out.stderr
    assert b"eligible for ODX" in out.stdout


def test_info_lists_the_guest(tmp_path: Path) -> None:
    _tools()
    disk = _disk(tmp_path)
    with vhdx.open(disk) as d:
        info = d.info()
    guest = info["guest"]
    assert info["guest_note"] is None
    assert guest["table"]["type"] == "gpt"
    assert [(v["number"], v["offset"], v["length"], v["kind"]) for v in guest["volumes"]] == [
        (1, MIB, 16 * MIB, "ntfs"),
        (2, 17 * MIB, 2 * MIB, "bitlocker"),
    ]
    p = guest["volumes"][0]["partition"]
    assert p["name"] == "data"
    assert p["type_guid"] == "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"


def test_odx_check_errors(tmp_path: Path) -> None:
    _tools()
    disk = _disk(tmp_path)
    with pytest.raises(vhdx.InvalidArgumentError):
        vhdx.odx_check(disk, volume=7)
    with pytest.raises(ValueError):
        vhdx.odx_check(disk, controller="sata")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        vhdx.odx_check(tmp_path / "missing.vhdx")
