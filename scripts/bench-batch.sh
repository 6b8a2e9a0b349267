#!/usr/bin/env bash
# Batch compaction benchmark of issue #7: total throughput of `vhdx compact --jobs N` over a
# fleet of 16 disks, for N = 1, 2, 4, 8 (and `vhdx check --jobs N` over the same fleet).
# Each disk is a 256 MiB dynamic VHDX (qemu-made, 1 MiB blocks, block_state_zero=off) whose
# blocks alternate pattern data and zero-filled blocks (allocated in the VHDX and, copied
# with --sparse=never, on the host), so `--mode full` reads every block, releases half of
# them and moves the data blocks down. Every run starts from fresh copies (not timed), read
# once into the page cache, after `sync` and a pause; the time includes a closing `sync`.
# Best of ROUNDS (default 2). Throughput = bytes of the 16 input files / seconds.
#
#   scripts/bench-batch.sh        (OUT=path for the markdown report, default
#                                  target/bench-batch.md; images in $VHDX_BENCH_DIR;
#                                  VHDX=path of a built binary, else it is built)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${VHDX_BENCH_DIR:-/tmp/vhdx-bench}/batch
OUT=${OUT:-$ROOT/target/bench-batch.md}
ROUNDS=${ROUNDS:-2}
DISKS=16
mkdir -p "$DIR"
cd "$ROOT"
log() { printf '== %s\n' "$*" >&2; }

if [ -z "${VHDX:-}" ]; then
  cargo build -q --release -p vhdx-cli
  VHDX=$ROOT/target/release/vhdx
fi

T=$DIR/template.vhdx
if [ ! -e "$T" ]; then
  log "making $T (256 MiB, 256 blocks of 1 MiB: even blocks data, odd blocks zero-filled)"
  qemu-img create -q -f vhdx -o block_size=1M,block_state_zero=off "$T.part" 256M
  cmds=()
  for i in $(seq 0 255); do
    if [ $((i % 2)) = 0 ]; then cmds+=(-c "write -P $((i % 250 + 1)) ${i}M 1M")
    else cmds+=(-c "write -P 0 ${i}M 1M"); fi
  done
  qemu-io -f vhdx "${cmds[@]}" "$T.part" >/dev/null
  mv "$T.part" "$T"
fi

# fresh: 16 new copies of the template, flushed.
fresh() {
  rm -f "$DIR"/disk-*.vhdx
  for i in $(seq -w 1 $DISKS); do cp --sparse=never "$T" "$DIR/disk-$i.vhdx"; done
  sync
  sleep 2
}

# seconds CMD...: wall time of CMD plus a closing sync.
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null
  sync
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}

bytes=$(( $(stat -c %s "$T") * DISKS ))
rows=()
for n in 1 2 4 8; do
  best=""; best_check=""
  for _ in $(seq "$ROUNDS"); do
    fresh
    cat "$DIR"/disk-*.vhdx >/dev/null   # the same warm page cache for every N
    c=$(seconds "$VHDX" check --jobs "$n" "$DIR"/disk-*.vhdx)
    s=$(seconds "$VHDX" compact --jobs "$n" "$DIR"/disk-*.vhdx)
    if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $s < $best else 1)"; then best=$s; fi
    if [ -z "$best_check" ] || python3 -c "import sys; sys.exit(0 if $c < $best_check else 1)"; then best_check=$c; fi
  done
  log "jobs $n: compact $best s, check $best_check s"
  rows+=("$n $best $best_check")
done
rm -f "$DIR"/disk-*.vhdx

{
  echo "Batch compaction: $DISKS × 256 MiB dynamic VHDX (half data, half zero-filled 1 MiB blocks), \`vhdx compact --jobs N\` (mode full) and \`vhdx check --jobs N\`, best of $ROUNDS"
  echo
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, Linux $(uname -r); $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "| jobs | compact: seconds | compact: MiB/s of input | speed-up | check: seconds |"
  echo "|---:|---:|---:|---:|---:|"
  base=${rows[0]#* }; base=${base%% *}
  for r in "${rows[@]}"; do
    set -- $r
    python3 -c "print(f'| $1 | {$2:.2f} | {$bytes / $2 / 2**20:.0f} | {$base / $2:.2f}× | {$3:.2f} |')"
  done
} | tee "$OUT"
