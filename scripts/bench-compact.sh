#!/usr/bin/env bash
# Compaction benchmark of issue #4, against its peer in the same run, printed as ratios:
# a 2 GiB dynamic VHDX (qemu-made, 32 MiB blocks, block_state_zero=off) whose blocks are half
# pattern data, half zero-filled (allocated), compacted
#   - in place by `vhdx compact --mode full` (scan, release the zero blocks, move, truncate),
#   - in place by `vhdx compact --mode retrim` (punch the free space only),
#   - by `qemu-img convert -O vhdx` into a new file (QEMU's way to compact),
# each from a fresh copy of the image (the copy is not timed), best of 3, page cache warm.
# Peak RSS from GNU time.
#
#   scripts/bench-compact.sh           (OUT=path for the markdown report; default
#                                       target/bench-compact.md; images in $VHDX_BENCH_DIR)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${VHDX_BENCH_DIR:-/tmp/vhdx-bench}/compact
OUT=${OUT:-$ROOT/target/bench-compact.md}
mkdir -p "$DIR"
cd "$ROOT"
log() { printf '== %s\n' "$*" >&2; }
[ -x /usr/bin/time ] || { [ "$(id -u)" = 0 ] && apt-get install -y -qq time >/dev/null; }

cargo build -q --release -p vhdx-cli
VHDX=$ROOT/target/release/vhdx

T=$DIR/template.vhdx
if [ ! -e "$T" ]; then
  log "making $T (2 GiB, 64 blocks of 32 MiB: even blocks data, odd blocks zero-filled)"
  qemu-img create -q -f vhdx -o block_size=32M,block_state_zero=off "$T.part" 2G
  cmds=()
  for i in $(seq 0 63); do
    if [ $((i % 2)) = 0 ]; then cmds+=(-c "write -P $((i % 250 + 1)) $((i * 32))M 32M")
    else cmds+=(-c "write -P 0 $((i * 32))M 32M"); fi
  done
  qemu-io -f vhdx "${cmds[@]}" "$T.part" >/dev/null
  mv "$T.part" "$T"
fi
cat "$T" >/dev/null

# run LABEL CMD... → "LABEL seconds rss_kib out_bytes" (best of 3; a fresh copy each time)
run() {
  local label=$1; shift
  local best="" rss="" size=""
  for _ in 1 2 3; do
    rm -f "$DIR/work.vhdx" "$DIR/qemu.vhdx"
    cp --sparse=always "$T" "$DIR/work.vhdx"
    sync
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f %M -o "$DIR/rss" "$@" >/dev/null
    sync
    t1=$(date +%s.%N)
    local s; s=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
    if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $s < $best else 1)"; then
      best=$s; rss=$(cat "$DIR/rss")
      if [ -e "$DIR/qemu.vhdx" ]; then size=$(stat -c %s "$DIR/qemu.vhdx"); else size=$(stat -c %s "$DIR/work.vhdx"); fi
    fi
  done
  echo "$label $best $rss $size"
}

log "qemu-img convert"
Q=$(run qemu-img-convert qemu-img convert -f vhdx -O vhdx -o block_size=32M "$DIR/work.vhdx" "$DIR/qemu.vhdx")
log "vhdx compact --mode full"
F=$(run vhdx-compact-full "$VHDX" compact --mode full "$DIR/work.vhdx")
log "vhdx compact --mode retrim"
R=$(run vhdx-compact-retrim "$VHDX" compact --mode retrim "$DIR/work.vhdx")
QS=$(echo "$Q" | awk '{print $2}')
{
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(df -T "$DIR" | awk 'NR==2 {print $2}') at $DIR; $(date -u +%F)."
  echo
  echo "| compacting a 2 GiB VHDX, half its blocks zero-filled | seconds (best of 3) | speed-up over qemu-img convert | peak RSS | file bytes after |"
  echo "|---|---:|---:|---:|---:|"
  for r in "$Q" "$F" "$R"; do
    read -r label s rss size <<<"$r"
    echo "| $label | $s | $(python3 -c "print(f'{$QS/$s:.1f}x')") | $((rss / 1024)) MiB | $size |"
  done
} >"$OUT"
cat "$OUT"
rm -f "$DIR/work.vhdx" "$DIR/qemu.vhdx" "$DIR/rss"
