"""The stub check: ``mypy --strict`` accepts every documented use of the package
(typing/usage.py) and refuses each misuse in typing/misuse.py, on the lines marked ``# E:``;
``stubtest`` finds the stubs of the native module true to it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def python_m(*args: str, cwd: Path = HERE) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m ARGS`` with this interpreter (mypy is installed by scripts/test.sh)."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd)


def test_usage_type_checks() -> None:
    r = python_m("mypy", "--strict", "--no-incremental", "typing/usage.py")
    assert r.returncode == 0, r.stdout + r.stderr


def test_misuse_is_refused_line_by_line() -> None:
    src = (HERE / "typing" / "misuse.py").read_text()
    marked = {i for i, line in enumerate(src.splitlines(), 1) if line.rstrip().split("  # E:")[1:]}
    r = python_m("mypy", "--strict", "--no-incremental", "typing/misuse.py")
    flagged = {int(m) for m in re.findall(r"misuse\.py:(\d+): error", r.stdout)}
    assert marked and flagged == marked, r.stdout


def test_stubtest(tmp_path: Path) -> None:
    # From a folder without the sources, so the installed package is what is checked.
    r = python_m("mypy.stubtest", "vhdx", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
