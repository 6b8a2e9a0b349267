#!/usr/bin/env bash
# Write benchmarks of issue #3, each against its peer in the same run, printed as ratios:
#
# 1. Import: a 2 GiB raw file (1.5 GiB of data in runs, the rest zeros written out, so the
#    file has no holes and every tool must read all of it) into a dynamic
#    VHDX with 1 MiB and 32 MiB blocks and a dynamic VHD, by `vhdx convert` and by
#    `qemu-img convert`, against copying the raw file on the same file system (`cp`, the
#    limit). Reported: seconds, throughput relative to cp (higher is better), output size.
# 2. 4 KiB writes, the pattern of `qemu-img bench -w -d 1` (one request at a time) —
#    into new blocks (a step of one block + 4 KiB) and into allocated blocks (a step of
#    12 KiB over a filled image) — by qemu-img bench and by our `bench_write` example, once
#    write-back (flush at close) and once flushing after every write (QEMU's durability).
#
#   scripts/bench-write.sh            (OUT=path for the markdown report; default
#                                      target/bench-write.md; images in $VHDX_BENCH_DIR)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${VHDX_BENCH_DIR:-/tmp/vhdx-bench}/write
OUT=${OUT:-$ROOT/target/bench-write.md}
mkdir -p "$DIR"
cd "$ROOT"
log() { printf '== %s\n' "$*" >&2; }

cargo build -q --release -p vhdx-cli -p vhdx-core --example bench_write
VHDX=$ROOT/target/release/vhdx
BW=$ROOT/target/release/examples/bench_write

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
size_of() { stat -c %s "$1"; }
alloc_of() { echo $(( $(stat -c %b "$1") * 512 )); }
mib() { python3 -c "print(f'{$1/1048576:.0f}')"; }

# ------------------------------------------------------------------ import
SRC=$DIR/import.raw
if [ ! -e "$SRC" ]; then
  log "making $SRC (2 GiB: 1.5 GiB of data in 32 MiB runs, zeros written between)"
  python3 - "$SRC" <<'PY'
import os, sys
f = open(sys.argv[1] + ".part", "wb")
block = bytes((i * 7 + 3) & 0xFF or 1 for i in range(1 << 20))
zero = bytes(1 << 20)
for mib in range(2048):
    run, k = divmod(mib, 32)
    f.write(block if run % 4 != 3 else zero)
f.close()
os.rename(sys.argv[1] + ".part", sys.argv[1])
PY
fi
# Page-cache warm for every contestant.
cat "$SRC" >/dev/null

{
echo "| import of a 2 GiB raw file (1.5 GiB data) | seconds | relative to cp | output bytes | allocated on host |"
echo "|---|---:|---:|---:|---:|"
} >"$OUT.import"

run_import() { # label cmd...
  local label=$1; shift
  local out=${@: -1}
  rm -f "$out"
  sync
  local t0 t1
  t0=$(now); "$@" >/dev/null; sync; t1=$(now)
  local s; s=$(secs "$t0" "$t1")
  echo "$label $s $(size_of "$out") $(alloc_of "$out")"
}

best_of() { # n label cmd... → best time line
  local n=$1; shift
  local best=""
  for _ in $(seq "$n"); do
    local line; line=$(run_import "$@")
    if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if float('${line#* }'.split()[0]) < float('${best#* }'.split()[0]) else 1)"; then
      best=$line
    fi
  done
  echo "$best"
}

log "import: cp"
CP=$(best_of 3 cp cp --sparse=never "$SRC" "$DIR/copy.raw")
CPS=$(echo "$CP" | awk '{print $2}')
rows=("$CP")
for bs in 1M 32M; do
  log "import: vhdx $bs"
  rows+=("$(best_of 3 "vhdx-convert-vhdx-$bs" "$VHDX" convert --format vhdx --block-size "$bs" --force "$SRC" "$DIR/ours-$bs.vhdx")")
  rows+=("$(best_of 3 "qemu-img-convert-vhdx-$bs" qemu-img convert -f raw -O vhdx -o "block_size=$bs" "$SRC" "$DIR/qemu-$bs.vhdx")")
done
log "import: vhd"
rows+=("$(best_of 3 vhdx-convert-vhd "$VHDX" convert --format vhd --force "$SRC" "$DIR/ours.vhd")")
rows+=("$(best_of 3 qemu-img-convert-vhd qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on "$SRC" "$DIR/qemu.vhd")")
for r in "${rows[@]}"; do
  read -r label s size alloc <<<"$r"
  rel=$(python3 -c "print(f'{$CPS/$s:.2f}')")
  echo "| $label | $s | $rel | $size | $alloc |" >>"$OUT.import"
done
rm -f "$DIR/copy.raw"

# ------------------------------------------------------------------ 4 KiB writes
{
echo "| 4 KiB writes, one at a time | qemu-img bench -w -d 1 (s) | ours, write-back (s) | ours, flush every write (s) | qemu / ours write-back | qemu / ours flushing |"
echo "|---|---:|---:|---:|---:|---:|"
} >"$OUT.writes"

fresh() { # name fmt opts size fill
  rm -f "$DIR/$1"
  qemu-img create -q -f "$2" -o "$3" "$DIR/$1" "$4"
  if [ "$5" = fill ]; then qemu-io -f "$2" -c "write -P 0x11 0 $4" "$DIR/$1" >/dev/null; fi
}

bench_case() { # label fmt opts size fill count step
  local label=$1 fmt=$2 opts=$3 size=$4 fill=$5 count=$6 step=$7
  fresh q.img "$fmt" "$opts" "$size" "$fill"
  local t0 t1; t0=$(now)
  qemu-img bench -q -w -c "$count" -d 1 -s 4096 -S "$step" -f "$fmt" "$DIR/q.img" >/dev/null
  t1=$(now); local q; q=$(secs "$t0" "$t1")
  fresh o.img "$fmt" "$opts" "$size" "$fill"
  local o; o=$("$BW" "$DIR/o.img" "$count" 4096 "$step" 0 0 | python3 -c "import json,sys; print(f\"{json.load(sys.stdin)['seconds']:.3f}\")")
  fresh f.img "$fmt" "$opts" "$size" "$fill"
  local f; f=$("$BW" "$DIR/f.img" "$count" 4096 "$step" 0 1 | python3 -c "import json,sys; print(f\"{json.load(sys.stdin)['seconds']:.3f}\")")
  echo "| $label | $q | $o | $f | $(python3 -c "print(f'{$q/$o:.1f}')") | $(python3 -c "print(f'{$q/$f:.1f}')") |" >>"$OUT.writes"
  rm -f "$DIR/q.img" "$DIR/o.img" "$DIR/f.img"
}
log "4 KiB writes"
bench_case "VHDX 1 MiB blocks, new blocks (2000)" vhdx block_size=1M 4G nofill 2000 $(( (1 << 20) + 4096 ))
bench_case "VHDX 32 MiB blocks, new blocks (120)" vhdx block_size=32M 4G nofill 120 $(( (32 << 20) + 4096 ))
bench_case "VHDX 1 MiB blocks, allocated (20000)" vhdx block_size=1M 256M fill 20000 12288
bench_case "VHD dynamic, new blocks (1500)" vpc subformat=dynamic,force_size=on 4G nofill 1500 $(( (2 << 20) + 4096 ))
bench_case "VHD dynamic, allocated (20000)" vpc subformat=dynamic,force_size=on 256M fill 20000 12288

{
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(df -T "$DIR" | awk 'NR==2 {print $2}') at $DIR; $(date -u +%F)."
  echo
  cat "$OUT.import"
  echo
  cat "$OUT.writes"
} >"$OUT"
rm -f "$OUT.import" "$OUT.writes"
cat "$OUT"
