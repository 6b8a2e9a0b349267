#!/usr/bin/env bash
# Filesystem-aware compaction benchmark of issue #6: a 4 GiB ext4 disk (mkfs.ext4 -d with
# 1 GiB of live files, then 2 GiB of junk written with debugfs and deleted, so half the
# disk is deleted data that never reads as zeros) as a dynamic VHDX made by qemu-img, with
# 1 MiB blocks (as WSL2 makes ext4.vhdx) and with qemu's default 32 MiB blocks. Compared:
#   - `vhdx compact --mode full` (reads the ext4 block bitmaps, the default),
#   - `vhdx compact --mode full --no-free-space` (zero-only: all-zero blocks),
#   - `virt-sparsify --in-place` (libguestfs), when it can run here; else the reason.
# Each run on a fresh sparse copy (not timed), best of 3, page cache warm, `sync` inside the
# timed span. The compacted copy of the first run is checked: `e2fsck -fn` clean on the
# image as qemu-img exports it, and every live file byte-identical (`debugfs -R cat`).
#
#   scripts/bench-fscompact.sh          (OUT=path for the markdown report; default
#                                        target/bench-fscompact.md; images in $VHDX_BENCH_DIR)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${VHDX_BENCH_DIR:-/tmp/vhdx-bench}/fscompact
OUT=${OUT:-$ROOT/target/bench-fscompact.md}
export PATH="$PATH:/usr/sbin:/sbin"
mkdir -p "$DIR"
cd "$ROOT"
log() { printf '== %s\n' "$*" >&2; }

cargo build -q --release -p vhdx-cli
VHDX=$ROOT/target/release/vhdx

if [ ! -e "$DIR/fs.img" ]; then
  log "making the 4 GiB ext4: 1 GiB of live files (mkfs.ext4 -d), 2 GiB of junk deleted (debugfs)"
  rm -rf "$DIR/live" "$DIR/fs.tmp"
  mkdir -p "$DIR/live"
  for i in 0 1 2 3; do head -c 256M /dev/urandom >"$DIR/live/file$i"; done
  truncate -s 4G "$DIR/fs.tmp"
  mkfs.ext4 -q -F -d "$DIR/live" "$DIR/fs.tmp"
  for i in 0 1 2 3 4 5 6 7; do
    head -c 256M /dev/urandom >"$DIR/junk"
    debugfs -w -R "write $DIR/junk junk$i" "$DIR/fs.tmp" >/dev/null 2>&1
  done
  rm -f "$DIR/junk"
  for i in 0 1 2 3 4 5 6 7; do debugfs -w -R "rm junk$i" "$DIR/fs.tmp" >/dev/null 2>&1; done
  e2fsck -fn "$DIR/fs.tmp" >/dev/null 2>&1
  mv "$DIR/fs.tmp" "$DIR/fs.img"
fi
for bs in 1M 32M; do
  if [ ! -e "$DIR/disk-$bs.tpl" ]; then
    qemu-img convert -f raw -O vhdx -o "subformat=dynamic,block_size=$bs" \
      "$DIR/fs.img" "$DIR/disk-$bs.tpl"
  fi
done

fresh() { # template → a fresh sparse copy at $DIR/run.vhdx
  rm -f "$DIR/run.vhdx"
  cp --sparse=always "$1" "$DIR/run.vhdx"
  cat "$DIR/run.vhdx" >/dev/null
  sync
}
timed() { # cmd... → seconds (sync included)
  local t0 t1
  t0=$(date +%s.%N); "$@" >/dev/null 2>&1; sync; t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}
mib() { python3 -c "print(f'{$1 / 1048576:.0f}')"; }
alloc() { stat -c '%b' "$1" | python3 -c "import sys; print(int(sys.stdin.read()) * 512)"; }

verify() { # image: e2fsck -fn clean and the live files identical
  rm -f "$DIR/back.raw"
  qemu-img convert -f vhdx -O raw "$1" "$DIR/back.raw"
  e2fsck -fn "$DIR/back.raw" >/dev/null 2>&1
  for f in "$DIR"/live/*; do
    debugfs -R "cat /$(basename "$f")" "$DIR/back.raw" 2>/dev/null | cmp -s - "$f" \
      || { echo "file $(basename "$f") differs after compaction" >&2; exit 1; }
  done
  rm -f "$DIR/back.raw"
}

rows=()
run_case() { # label template cmd... (the command takes $DIR/run.vhdx as its last argument)
  local label=$1 tpl=$2; shift 2
  local best="" len="" host=""
  for i in 1 2 3; do
    fresh "$tpl"
    local s; s=$(timed "$@" "$DIR/run.vhdx")
    if [ "$i" = 1 ]; then
      len=$(stat -c %s "$DIR/run.vhdx"); host=$(alloc "$DIR/run.vhdx")
      verify "$DIR/run.vhdx"
    fi
    if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $s < $best else 1)"; then best=$s; fi
  done
  log "$label: $(mib "$len") MiB file, $(mib "$host") MiB allocated, ${best} s"
  rows+=("| $label | $(mib "$(stat -c %s "$tpl")") | $(mib "$len") | $(mib "$host") | $best |")
}

for bs in 1M 32M; do
  tpl="$DIR/disk-$bs.tpl"
  run_case "\`vhdx compact --mode full\` ($bs blocks)" "$tpl" "$VHDX" compact --mode full
  run_case "\`vhdx compact --mode full --no-free-space\` ($bs blocks)" "$tpl" \
    "$VHDX" compact --mode full --no-free-space
done

sparsify="not run"
if command -v virt-sparsify >/dev/null 2>&1; then
  fresh "$DIR/disk-1M.tpl"
  if s=$(LIBGUESTFS_BACKEND_SETTINGS=force_tcg timeout 900 bash -c \
      "t0=\$(date +%s.%N); virt-sparsify --in-place '$DIR/run.vhdx' >/dev/null 2>&1; sync; t1=\$(date +%s.%N); python3 -c \"print(f'{\$t1 - \$t0:.2f}')\""); then
    rows+=("| \`virt-sparsify --in-place\` (1M blocks) | $(mib "$(stat -c %s "$DIR/disk-1M.tpl")") | $(mib "$(stat -c %s "$DIR/run.vhdx")") | $(mib "$(alloc "$DIR/run.vhdx")") | $s |")
    sparsify="ran (TCG)"
  else
    sparsify="failed or timed out (see a manual run)"
  fi
else
  sparsify="virt-sparsify is not installed"
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
{
  echo "Filesystem-aware compaction, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($cpu)"
  echo
  echo "4 GiB ext4 (1 GiB live, 2 GiB deleted junk), dynamic VHDX by qemu-img; best of 3."
  echo
  echo "| run | MiB before | MiB after | MiB allocated after | seconds |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "virt-sparsify: $sparsify"
} | tee "$OUT"
