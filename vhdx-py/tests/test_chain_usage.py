"""``Disk.info()["chain_usage"]``: where the bytes of a differencing disk are read from (issue
#4 item 4). Oracle: dissect.hypervisor's BAT of the qemu-made parent (qemu's VHDX driver maps
every byte as data, so ``qemu-img map`` cannot tell) plus the ranges written to the child."""

from __future__ import annotations

from pathlib import Path

import vhdx
from conftest import MIB, MakeImage, missing

SECTOR = 512
NOBODY, PARENT_DATA, PARENT_ZERO, CHILD = range(4)


def parent_owners(path: Path) -> list[int]:
    """Who answers each sector of the parent, from dissect's payload block states."""
    try:
        from dissect.hypervisor.disk import vhdx as dissect_vhdx
    except ImportError:
        missing("dissect.hypervisor")
    with path.open("rb") as fh:
        d = dissect_vhdx.VHDX(fh)
        spb = d.block_size // SECTOR
        owners: list[int] = []
        for block in range(-(-d.size // d.block_size)):
            state = int(d.bat.pb(block).state)
            # MS-VHDX 2.5.1.1: 6 FULLY_PRESENT; 1 UNDEFINED, 2 ZERO, 3 UNMAPPED read zeros.
            owner = {0: NOBODY, 1: PARENT_ZERO, 2: PARENT_ZERO, 3: PARENT_ZERO, 6: PARENT_DATA}
            owners += [owner[state]] * spb
        return owners[: d.size // SECTOR]


def test_chain_usage_counts_child_and_parent_bytes(make_vhdx: MakeImage, tmp_path: Path) -> None:
    size = 24 * MIB
    parent = make_vhdx(
        "base.vhdx",
        size=size,
        options="subformat=dynamic,block_size=1M",
        writes=("write -P 0x11 1M 64k", "write -P 0x22 9437184 3M", "write -z 20M 1M"),
    )
    owners = parent_owners(parent)
    child = tmp_path / "child.vhdx"
    # Sector-aligned and non-zero: one inside a parent block, one across a block edge, one
    # whole 2 MiB child block.
    writes = [(MIB + 8 * SECTOR, 4096), (4 * MIB - 4096, 8192), (12 * MIB, 2 * MIB)]
    with vhdx.create(child, parent=parent) as disk:
        for off, n in writes:
            disk.write_at(off, b"\xa5" * n)
            owners[off // SECTOR : (off + n) // SECTOR] = [CHILD] * (n // SECTOR)

    with vhdx.open(child) as disk:
        info = disk.info()
    assert info["chain_usage_note"] is None
    usage = info["chain_usage"]
    count = {o: owners.count(o) * SECTOR for o in (NOBODY, PARENT_DATA, PARENT_ZERO, CHILD)}
    levels = usage["levels"]
    assert [lv["depth"] for lv in levels] == [0, 1]
    assert levels[0]["path"].endswith("child.vhdx")
    assert levels[1]["path"].endswith("base.vhdx")
    assert levels[0]["data_bytes"] == count[CHILD]
    assert levels[0]["zero_bytes"] == 0
    assert levels[1]["data_bytes"] == count[PARENT_DATA] > 0
    assert levels[1]["zero_bytes"] == count[PARENT_ZERO]
    assert usage["zero_bytes"] == count[PARENT_ZERO]
    assert usage["unallocated_bytes"] == count[NOBODY]
    assert usage["parent_data_bytes"] == count[PARENT_DATA]
    assert f"({count[PARENT_DATA]} bytes)" in usage["note"]
    assert "only merging the chain can" in usage["note"]

    # A dynamic disk has no chain usage; neither is computed without the parent.
    with vhdx.open(parent) as disk:
        assert disk.info()["chain_usage"] is None
    parent.unlink()
    with vhdx.open(child, require_parent=False) as disk:
        info = disk.info(scan=True)
    assert info["chain_usage"] is None
    assert "--parent" in info["chain_usage_note"]
