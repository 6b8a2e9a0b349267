#!/usr/bin/env bash
# The long crash run of issue #3: SIGKILLs a writer at random moments KILLS times (default
# 3000; two thirds on a VHDX, one third on a VHD) and checks the disk after every kill (see
# vhdx-core/tests/integration/crash.rs). Prints one summary line per format.
#   bash scripts/crash.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
export VHDX_CRASH_KILLS="${1:-3000}"
export VHDX_ORACLE_PYTHON="${VHDX_ORACLE_PYTHON:-$PWD/.venv/bin/python}"
cargo test --release -q -p vhdx-core --test integration crash::killed -- --nocapture --test-threads=2 2>&1 |
    grep -E 'kills|panicked|test result|expected|reads'
