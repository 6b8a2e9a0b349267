#!/usr/bin/env bash
# Makes VHDX files with a dirty log, the way a host crash leaves them, using QEMU itself:
#
#   1. qemu-img create -f vhdx -o block_size=1M,block_state_zero=off  <name>.vhdx 2G
#   2. qemu-io -f vhdx with 2000 "-c 'write -P <pattern> <offset> 4k'" commands, each into its
#      own 1 MiB block, so every write allocates a block and QEMU logs the BAT update
#      (QEMU writes the log entry, flushes, applies it, flushes, then clears the LogGuid);
#   3. SIGKILL qemu-io after a fraction of a second;
#   4. keep the image only if `qemu-img info` refuses it because the log needs replaying
#      (a kill outside the log window leaves a clean image: try again).
#
# Each kept image is written as testdata/dirty-log-<name>.vhdx.gz (gzip -9 -n; the files are
# mostly sparse zeros). The kill timing is not deterministic, so a rerun makes different but
# equivalent files; the checked-in ones are described (with sha256 of the uncompressed files)
# in testdata/README.md.
#
# Usage: testdata/make-dirty-logs.sh [name:delay ...]   (default: a:0.08 b:0.4 c:0.9)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

specs=("$@")
if [ ${#specs[@]} -eq 0 ]; then
    specs=(a:0.08 b:0.4 c:0.9)
fi

# The qemu-io command line: write i goes to block i at a 4 KiB-aligned offset inside it,
# with pattern byte (i mod 255) + 1.
args=()
for i in $(seq 0 1999); do
    args+=(-c "write -P $((i % 255 + 1)) $((i * 1048576 + (i * 37 % 256) * 4096)) 4k")
done

for spec in "${specs[@]}"; do
    name=${spec%%:*}
    delay=${spec#*:}
    img="$work/dirty-log-$name.vhdx"
    for attempt in $(seq 1 40); do
        rm -f "$img"
        qemu-img create -q -f vhdx -o block_size=1M,block_state_zero=off "$img" 2G
        qemu-io -f vhdx "${args[@]}" "$img" >/dev/null 2>&1 &
        pid=$!
        sleep "$delay"
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if ! err=$(qemu-img info -f vhdx "$img" 2>&1 >/dev/null) &&
            grep -q "contains a log that needs to be replayed" <<<"$err"; then
            echo "$name: dirty after $attempt attempt(s) (delay $delay s), $(stat -c %s "$img") bytes"
            sha256sum "$img" | sed "s|$work/||"
            gzip -9 -n -c "$img" >"$here/dirty-log-$name.vhdx.gz"
            ls -l "$here/dirty-log-$name.vhdx.gz"
            continue 2
        fi
    done
    echo "$name: no dirty log after 40 attempts" >&2
    exit 1
done
