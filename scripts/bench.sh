#!/usr/bin/env bash
# Benchmarks of the vhdx reader against its page-cache baseline and its peers, in one run.
#
#   scripts/bench.sh                 images, builds, measurements, table (a few minutes)
#   CRITERION=1 scripts/bench.sh     also runs `cargo bench -p vhdx-core --bench read`
#   OUT=path scripts/bench.sh        where the markdown report goes (default: target/bench-results.md; the README table is copied from it)
#
# Everything is measured warm from the page cache: nothing drops the system's caches (that
# needs root and measures the disk, not the reader). Before timing, each benchmark file alone
# is evicted with posix_fadvise(DONTNEED) and read once, so all files sit in the page cache in
# the same read-ahead layout whatever way qemu-io wrote them.
# Images (a few GiB of sparse files) go to $VHDX_BENCH_DIR, default /tmp/vhdx-bench; they
# are made once with qemu-img/qemu-io and reused.
#
# Needs: cargo, gcc, qemu-img/qemu-io (qemu-utils), python3; hyperfine and GNU time are
# installed with apt-get when missing (root only). pyvhdi (PyPI libvhdi-python) and
# dissect.hypervisor are read from $ORACLE_PY (default /tmp/oraclevenv/bin/python), made
# with pip when missing; our Python package from .venv when `import vhdx` works there.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${VHDX_BENCH_DIR:-/tmp/vhdx-bench}
OUT=${OUT:-$ROOT/target/bench-results.md}
ORACLE_PY=${ORACLE_PY:-/tmp/oraclevenv/bin/python}
export VHDX_BENCH_DIR=$DIR
mkdir -p "$DIR"
cd "$ROOT"

log() { printf '== %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------- tools
need_apt=()
command -v hyperfine >/dev/null || need_apt+=(hyperfine)
[ -x /usr/bin/time ] || need_apt+=(time)
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
command -v gcc >/dev/null || need_apt+=(gcc)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing ${need_apt[*]}"
    apt-get update -qq >/dev/null && apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    log "missing ${need_apt[*]}: install them (hyperfine is optional: a date loop is used)"
  fi
fi
if [ ! -x "$ORACLE_PY" ]; then
  log "making the peer venv $(dirname "$(dirname "$ORACLE_PY")")"
  python3 -m venv "$(dirname "$(dirname "$ORACLE_PY")")" &&
    "$ORACLE_PY" -m pip install -q libvhdi-python dissect.hypervisor || log "peer venv failed: pyvhdi/dissect columns will be empty"
fi

# ---------------------------------------------------------------------------- images
make_image() { # file fmt opts size fill
  local f=$DIR/$1
  [ -e "$f" ] && return 0
  log "making $f"
  rm -f "$f.part"
  qemu-img create -q -f "$2" ${3:+-o "$3"} "$f.part" "$4"
  if [ "$5" = fill ]; then
    qemu-io -f "$2" -c "write -P 0x5a 0 $4" "$f.part" >/dev/null
  fi
  mv "$f.part" "$f"
}
make_image full.raw raw "" 256M fill
make_image vhdx-1m.vhdx vhdx block_size=1M 256M fill
make_image vhdx-8m.vhdx vhdx block_size=8M 256M fill
make_image vhdx-32m.vhdx vhdx block_size=32M 256M fill
make_image vhd-dynamic.vhd vpc subformat=dynamic,force_size=on 256M fill
make_image vhd-fixed.vhd vpc subformat=fixed,force_size=on 256M fill
make_image big-16t.vhdx vhdx block_size=1M 16T nofill
# The control row: the same bytes in another raw file, read through `Disk` as format raw.
[ -e "$DIR/control.raw" ] || { cp "$DIR/full.raw" "$DIR/control.raw.part" && mv "$DIR/control.raw.part" "$DIR/control.raw"; }
if [ ! -e "$DIR/sparse-64g.vhdx" ]; then
  log "making $DIR/sparse-64g.vhdx (64 GiB, 8 MiB of data)"
  rm -f "$DIR/sparse-64g.vhdx.part"
  qemu-img create -q -f vhdx "$DIR/sparse-64g.vhdx.part" 64G
  for o in 0 1G 17G 40G; do
    qemu-io -f vhdx -c "write -P 0x33 $o 2M" "$DIR/sparse-64g.vhdx.part" >/dev/null
  done
  mv "$DIR/sparse-64g.vhdx.part" "$DIR/sparse-64g.vhdx"
fi

# ---------------------------------------------------------------------------- builds
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
log "building (release)"
CLI=""
if nice cargo build --release -q -p vhdx-cli 2>"$DIR/cli-build.log"; then
  CLI=$TARGET_DIR/release/vhdx
else
  log "vhdx-cli does not build (see $DIR/cli-build.log): whole-process numbers use the bench_read example"
fi
nice cargo build --release -q -p vhdx-core --example bench_read
EXAMPLE=$TARGET_DIR/release/examples/bench_read

cat >"$DIR/pread_ref.c" <<'EOF'
/* Page-cache reference: sequential pread passes and random 4 KiB preads of a raw file. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
int main(int argc, char **argv) {
  if (argc != 5 && argc != 6) { fprintf(stderr, "usage: pread_ref seq|rand FILE BUF|COUNT REPS [SHIFT]\n"); return 2; }
  /* SHIFT (rand only): added to every 4 KiB-aligned offset, to measure reads that straddle
     two pages the way VHD dynamic data does (it starts 1536 bytes into a page). */
  long shift = argc == 6 ? atol(argv[5]) : 0;
  int fd = open(argv[2], O_RDONLY); if (fd < 0) { perror(argv[2]); return 1; }
  off_t size = lseek(fd, 0, SEEK_END);
  long n = atol(argv[3]); int reps = atoi(argv[4]);
  double *t = calloc(reps, sizeof *t);
  if (!strcmp(argv[1], "seq")) {
    char *buf = aligned_alloc(4096, n); memset(buf, 1, n);
    for (int r = 0; r < reps; r++) {
      double t0 = now();
      for (off_t o = 0; o < size; o += n) { size_t k = size - o < n ? size - o : n; if (pread(fd, buf, k, o) != (ssize_t)k) { perror("pread"); return 1; } }
      t[r] = now() - t0;
    }
    qsort(t, reps, sizeof *t, cmp);
    printf("{\"size\":%lld,\"best_s\":%.9f,\"median_s\":%.9f}\n", (long long)size, t[0], t[reps / 2]);
  } else {
    uint64_t x = 0x9e3779b97f4a7c15ULL, pages = size / 4096 - (shift ? 1 : 0); uint64_t *offs = malloc(n * sizeof *offs);
    for (long i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; offs[i] = (x % pages) * 4096 + shift; }
    char *buf = aligned_alloc(4096, 4096); memset(buf, 1, 4096);
    /* Per-chunk averages of 256 reads, like examples/bench_read.rs: best and median. */
    long chunks = (n + 255) / 256, k = 0; free(t); t = calloc(reps * chunks, sizeof *t);
    for (int r = 0; r < reps; r++)
      for (long c = 0; c < n; c += 256) {
        long e = c + 256 < n ? c + 256 : n;
        double t0 = now();
        for (long i = c; i < e; i++) if (pread(fd, buf, 4096, offs[i]) != 4096) { perror("pread"); return 1; }
        t[k++] = (now() - t0) * 1e6 / (e - c);
      }
    qsort(t, k, sizeof *t, cmp); reps = k;
    printf("{\"best_us\":%.4f,\"median_us\":%.4f}\n", t[0], t[reps / 2]);
  }
  return 0;
}
EOF
gcc -O2 -o "$DIR/pread_ref" "$DIR/pread_ref.c"

OURS_PY=""
OURS_PYTHONPATH=""
if [ -x "$ROOT/.venv/bin/python" ] && "$ROOT/.venv/bin/python" -c 'import vhdx' 2>/dev/null; then
  OURS_PY=$ROOT/.venv/bin/python
elif nice cargo build --release -q -p vhdx-py 2>"$DIR/py-build.log" && [ -f "$TARGET_DIR/release/lib_vhdx.so" ]; then
  # No .venv with the package: assemble it from the release build of the native module and
  # the package's Python files, outside the repository.
  rm -rf "$DIR/pyvhdx" && mkdir -p "$DIR/pyvhdx/vhdx"
  cp "$ROOT"/vhdx-py/python/vhdx/*.py "$DIR/pyvhdx/vhdx/"
  cp "$TARGET_DIR/release/lib_vhdx.so" "$DIR/pyvhdx/vhdx/_vhdx.abi3.so"
  if PYTHONPATH=$DIR/pyvhdx python3 -c 'import vhdx' 2>/dev/null; then
    OURS_PY=$(command -v python3)
    OURS_PYTHONPATH=$DIR/pyvhdx
    log "Python package: release build of vhdx-py from $DIR/pyvhdx (no .venv)"
  fi
fi
[ -n "$OURS_PY" ] || log "the vhdx Python package is not importable: the Python columns stay empty"

if [ "${CRITERION:-0}" = 1 ]; then
  log "cargo bench (criterion, short runs)"
  nice cargo bench -q -p vhdx-core --bench read -- --warm-up-time 1 --measurement-time 3 >"$DIR/criterion.log" 2>&1 ||
    log "cargo bench failed: see $DIR/criterion.log"
fi

log "measuring"
python3 "$ROOT/scripts/bench_peers.py" drive \
  --dir "$DIR" --example "$EXAMPLE" --cli "$CLI" --pread-ref "$DIR/pread_ref" \
  --oracle-py "$ORACLE_PY" --ours-py "$OURS_PY" --ours-pythonpath "$OURS_PYTHONPATH" --criterion-dir "$TARGET_DIR/criterion" \
  --out "$OUT"
{
  echo
  echo "C pread of random 4 KiB at page-aligned offsets vs at offsets 1536 bytes into a page (where VHD"
  echo "dynamic data sits: footer copy 512 + header 1024, then 512-byte bitmaps before 2 MiB blocks), same run:"
  echo
  echo '```'
  echo "aligned:    $("$DIR/pread_ref" rand "$DIR/full.raw" 16384 9)"
  echo "shift 1536: $("$DIR/pread_ref" rand "$DIR/full.raw" 16384 9 1536)"
  echo '```'
} >>"$OUT"
log "report written to $OUT"
