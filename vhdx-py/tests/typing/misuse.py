"""Calls the stubs must refuse (test_typing.py expects one ``mypy --strict`` error per line
marked ``# E:``). Never run."""

from __future__ import annotations

import vhdx

vhdx.open("d.vhdx", "w")  # E: no such mode
vhdx.open("d.vhdx", parent_policy="lax")  # E: no such policy
vhdx.compact("d.vhdx", mode="fast")  # E: no such mode
vhdx.compare("a.vhdx", "b.vhdx", progress="verbose")  # E: not callable
vhdx.convert("a.vhdx", "b.vhdx", type="differencing")  # E: not a convert type
size: str = vhdx.open("d.vhdx").size  # E: an int
vhdx.resize("d.vhdx", "1G")  # E: sizes are ints
