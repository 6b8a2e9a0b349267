#!/usr/bin/env bash
# Merge benchmark of issue #5, against its limit in the same run, printed as a ratio:
# a differencing VHDX child holding 1 GiB of data (every other 32 MiB block of a 2 GiB
# disk) merged into its 2 GiB parent (qemu-made, 32 MiB blocks, the other half written) by
# `vhdx merge`, against copying the child's allocated bytes with `cp` (the limit: the same
# bytes read once and written once). Fresh copies of both files for every run (not timed),
# best of 3, page cache warm, `sync` inside the timed span.
#
#   scripts/bench-merge.sh             (OUT=path for the markdown report; default
#                                       target/bench-merge.md; images in $VHDX_BENCH_DIR)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${VHDX_BENCH_DIR:-/tmp/vhdx-bench}/merge
OUT=${OUT:-$ROOT/target/bench-merge.md}
PY=${PY:-$ROOT/.venv/bin/python}
mkdir -p "$DIR"
cd "$ROOT"
log() { printf '== %s\n' "$*" >&2; }

cargo build -q --release -p vhdx-cli
VHDX=$ROOT/target/release/vhdx

if [ ! -e "$DIR/child.tpl" ]; then
  log "making the parent (2 GiB, odd 32 MiB blocks written) and the child (even blocks, 1 GiB)"
  rm -f "$DIR"/parent.vhdx "$DIR"/child.avhdx
  qemu-img create -q -f vhdx -o block_size=32M "$DIR/parent.vhdx" 2G
  cmds=()
  for i in $(seq 1 2 63); do cmds+=(-c "write -P $((i % 250 + 1)) $((i * 32))M 32M"); done
  qemu-io -f vhdx "${cmds[@]}" "$DIR/parent.vhdx" >/dev/null
  "$VHDX" create "$DIR/child.avhdx" --parent "$DIR/parent.vhdx" --block-size 32M >/dev/null
  "$PY" - "$DIR/child.avhdx" <<'PY'
import sys, vhdx
with vhdx.open(sys.argv[1], "r+") as d:
    for i in range(0, 64, 2):
        d.write_at(i * (32 << 20), bytes([(i * 7 + 5) % 250 + 1]) * (32 << 20))
PY
  mv "$DIR/parent.vhdx" "$DIR/parent.tpl"
  mv "$DIR/child.avhdx" "$DIR/child.tpl"
fi
cat "$DIR/parent.tpl" "$DIR/child.tpl" >/dev/null

fresh() {
  rm -f "$DIR/parent.vhdx" "$DIR/child.avhdx" "$DIR/copy"
  cp --sparse=always "$DIR/parent.tpl" "$DIR/parent.vhdx"
  cp --sparse=always "$DIR/child.tpl" "$DIR/child.avhdx"
  sync
}
timed() { # cmd... → seconds (sync included)
  local t0 t1
  t0=$(date +%s.%N); "$@" >/dev/null; sync; t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}
best() { # label cmd... → "label best"
  local label=$1; shift
  local b=""
  for _ in 1 2 3; do
    fresh
    local s; s=$(timed "$@")
    if [ -z "$b" ] || python3 -c "import sys; sys.exit(0 if $s < $b else 1)"; then b=$s; fi
  done
  echo "$label $b"
}
log "cp of the child's allocated bytes"
C=$(best cp cp --sparse=always "$DIR/child.avhdx" "$DIR/copy")
log "vhdx merge"
M=$(best vhdx-merge "$VHDX" merge "$DIR/child.avhdx")
CS=${C#* }; MS=${M#* }
{
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(df -T "$DIR" | awk 'NR==2 {print $2}') at $DIR; $(date -u +%F)."
  echo
  echo "| merging a child holding 1 GiB into its 2 GiB parent | seconds (best of 3) | relative to cp (higher is better) |"
  echo "|---|---:|---:|"
  echo "| cp of the child file (the limit) | $CS | 1.00 |"
  echo "| vhdx merge | $MS | $(python3 -c "print(f'{$CS/$MS:.2f}')") |"
} >"$OUT"
cat "$OUT"
rm -f "$DIR/parent.vhdx" "$DIR/child.avhdx" "$DIR/copy"
