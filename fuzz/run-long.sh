#!/usr/bin/env bash
# fuzz/run-long.sh [CPU_SECONDS] TARGET...: runs each fuzz target in turn (one process at a
# time, nice 19, -rss_limit_mb=512) until it has used CPU_SECONDS of CPU (default 600),
# resuming its corpus across sessions when other work slows it down. The binaries are the
# ones `cargo +nightly fuzz build -O -a` left in target/ (copied first, so a rebuild does not
# disturb a run). Each target's libFuzzer output goes to target/long-runs/TARGET.log; one
# line per target — CPU seconds, executions, sessions, crash artifacts — to
# target/long-runs/summary.txt (the table of fuzz/README.md). A crash ends that target's
# run (its artifact is in fuzz/artifacts/TARGET/). Extra libFuzzer flags: FUZZ_FLAGS.
set -uo pipefail
cd "$(dirname "$0")"
budget=600
if [[ ${1:-} =~ ^[0-9]+$ ]]; then budget=$1; shift; fi
out=target/long-runs
mkdir -p "$out/bin"
# AddressSanitizer (cargo fuzz's default) keeps 256 MB of freed memory in quarantine by
# default, which alone would cross -rss_limit_mb=512 on targets that hold images in memory.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=16}
for t in "$@"; do
    cp "target/x86_64-unknown-linux-gnu/release/$t" "$out/bin/$t" || continue
    mkdir -p "corpus/$t" "artifacts/$t"
    cpu=0 execs=0 sessions=0 crash=""
    while [ "$cpu" -lt "$budget" ] && [ -z "$crash" ]; do
        sessions=$((sessions + 1))
        left=$((budget - cpu + 15))
        /usr/bin/time -f '%U %S' -o "$out/$t.time" nice -n 19 "$out/bin/$t" \
            -max_total_time="$left" -rss_limit_mb=512 -max_len=4096 -timeout=20 \
            -print_final_stats=1 -artifact_prefix="artifacts/$t/" ${FUZZ_FLAGS:-} "corpus/$t" \
            >"$out/$t.session.log" 2>&1
        rc=$?
        cat "$out/$t.session.log" >>"$out/$t.log"
        read -r u s < <(tail -n 1 "$out/$t.time")
        cpu=$((cpu + ${u%.*} + ${s%.*}))
        n=$(grep -a 'stat::number_of_executed_units' "$out/$t.session.log" | tail -n 1 | awk '{print $2}')
        execs=$((execs + ${n:-0}))
        if [ "$rc" -ne 0 ]; then
            crash=$(grep -a 'Test unit written to' "$out/$t.session.log" | tail -n 1 | sed 's/.*written to //')
            crash=${crash:-"exit $rc"}
        fi
    done
    printf '%s\t%s CPU s\t%s execs\t%s sessions\t%s\t%s\n' "$t" "$cpu" "$execs" "$sessions" \
        "${crash:-no crash}" "$(date -u +%FT%TZ)" >>"$out/summary.txt"
done
