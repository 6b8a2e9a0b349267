#!/usr/bin/env bash
# THE test command (README and .ci/run call it): installs what a fresh machine lacks, then
# runs formatting, lints, the Rust tests, builds the CLI, installs the Python package into
# .venv with pip (maturin backend) and runs its pytest suite. Each runner's full output goes
# to target/test-logs/; its closing lines are printed here (all of it when it fails).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
logs=$root/target/test-logs
mkdir -p "$logs"
t0=$(date +%s)

step() { printf '\n==> %s  [%ss]\n' "$*" "$(($(date +%s) - t0))"; }

# run NAME LINES CMD...: runs CMD with its output in $logs/NAME.log; prints the last LINES
# lines, or the last 150 when it fails (and stops).
run() {
    local name=$1 lines=$2
    shift 2
    local log=$logs/$name.log
    if "$@" >"$log" 2>&1; then
        tail -n "$lines" "$log"
    else
        local rc=$?
        tail -n 150 "$log"
        printf '\n%s FAILED (exit %s); full output in %s\n' "$name" "$rc" "$log"
        exit "$rc"
    fi
}

step "tools"
# Oracles and guest-making tools, installed from Debian's packages when missing (they live in
# /sbin on Debian): qemu-utils (qemu-img, qemu-io); for the file-system tests (and
# test_consumer.py, whose NTFS volume dissect.ntfs reads) e2fsprogs (mkfs.ext4, debugfs,
# e2fsck, dumpe2fs), ntfs-3g (mkntfs, ntfscp, ntfscat, ntfsfix, ntfstruncate, ntfsinfo),
# fdisk (sfdisk, fdisk), gdisk (sgdisk); for guest inspection and odx-check dosfstools
# (FAT), exfatprogs (exFAT) and util-linux (mkswap).
packages=""
for pair in qemu-img:qemu-utils qemu-io:qemu-utils mkfs.ext4:e2fsprogs debugfs:e2fsprogs \
    mkntfs:ntfs-3g ntfscp:ntfs-3g ntfstruncate:ntfs-3g ntfsinfo:ntfs-3g sfdisk:fdisk \
    fdisk:fdisk sgdisk:gdisk mkfs.vfat:dosfstools mkfs.exfat:exfatprogs mkswap:util-linux; do
    if ! PATH="$PATH:/sbin:/usr/sbin" command -v "${pair%%:*}" >/dev/null 2>&1; then
        case " $packages " in *" ${pair#*:} "*) ;; *) packages="$packages ${pair#*:}" ;; esac
    fi
done
if [ -n "$packages" ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    # shellcheck disable=SC2086 # a list of package names
    $sudo apt-get install -y -qq $packages >/dev/null
fi
qemu-img --version | head -n1
cargo --version
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check \
    maturin pytest mypy libvhdi-python dissect.hypervisor dissect.ntfs
.venv/bin/python --version
export VHDX_ORACLE_PYTHON=$root/.venv/bin/python

step "cargo fmt --all -- --check"
run fmt 20 cargo fmt --all -- --check
echo "formatting ok"

step "cargo clippy --workspace --all-targets -- -D warnings"
run clippy 3 cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc -p vhdx-core (warnings are errors: broken links, missing docs)"
run doc 1 env RUSTDOCFLAGS="-D warnings" cargo doc -p vhdx-core --no-deps

step "cargo test --workspace"
run cargo-test 0 cargo test --workspace
grep -E '^(     Running|   Doc-tests|test result:)' "$logs/cargo-test.log" || true
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "cargo test: %d passed, %d failed, %d ignored\n", p, f, i }' "$logs/cargo-test.log"

step "cargo build --release -p vhdx-cli"
run build-cli 2 cargo build --release -p vhdx-cli
export VHDX_CLI=$root/target/release/vhdx

# Fuzz smoke run (issue #8): every cargo-fuzz target for FUZZ_SMOKE_SECONDS (default 30)
# from the seed corpora, only where the nightly toolchain and cargo-fuzz are installed.
if rustup run nightly rustc --version >/dev/null 2>&1 && cargo fuzz --version >/dev/null 2>&1; then
    step "fuzz smoke run (${FUZZ_SMOKE_SECONDS:-30} s per target)"
    run fuzz-build 1 sh -c 'cd fuzz && cargo +nightly fuzz build -O'
    python3 fuzz/seed-corpora.py
    # Two targets at a time (one per core); a target without seeds (ops_model builds its
    # images from the fuzzer's bytes) starts from an empty corpus.
    smoke() {
        mkdir -p "fuzz/corpus/$1"
        if env ASAN_OPTIONS=quarantine_size_mb=16 "fuzz/target/x86_64-unknown-linux-gnu/release/$1" \
            -max_total_time="${FUZZ_SMOKE_SECONDS:-30}" -rss_limit_mb=512 -timeout=20 \
            -max_len=4096 -artifact_prefix="$logs/fuzz-$1-" "fuzz/corpus/$1" \
            >"$logs/fuzz-$1.log" 2>&1; then
            printf 'fuzz %s: %s\n' "$1" "$(tail -n 1 "$logs/fuzz-$1.log")"
        else
            tail -n 60 "$logs/fuzz-$1.log"
            printf '\nfuzz-%s FAILED; full output in %s\n' "$1" "$logs/fuzz-$1.log"
            return 1
        fi
    }
    export -f smoke
    export logs
    (cd fuzz && cargo +nightly fuzz list) | xargs -P 2 -I{} bash -c 'smoke {}'
else
    step "fuzz smoke run skipped (no nightly toolchain or cargo-fuzz)"
fi

step "pip install ./vhdx-py (maturin): its wheel into .venv and into a fresh venv"
# `pip install ./vhdx-py` is `pip wheel` then the install of that wheel; done in two steps,
# the one abi3 wheel also goes into an empty venv (no dependency, no source tree, nothing
# from .venv) and must work there.
rm -rf target/wheels target/fresh-venv
run wheel 1 .venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps \
    -w target/wheels ./vhdx-py
run pip-install 2 sh -c ".venv/bin/python -m pip install --disable-pip-version-check \
    --force-reinstall --no-deps target/wheels/vhdx-*.whl"
python3 -m venv target/fresh-venv
run fresh-venv 1 sh -c "cd target && fresh-venv/bin/python -m pip install -q \
    --disable-pip-version-check wheels/vhdx-*.whl && fresh-venv/bin/python -c '
import vhdx, tempfile, os
d = tempfile.mkdtemp()
p = os.path.join(d, \"a.vhdx\")
with vhdx.create(p, 8 << 20) as disk:
    disk.write_at(4096, b\"fresh\")
assert vhdx.open(p).read_at(4096, 5) == b\"fresh\"
assert vhdx.compare(p, p)[\"identical\"]
print(\"fresh venv: vhdx\", vhdx.__version__, \"from\", os.path.dirname(vhdx.__file__))
'"

step "mypy --strict and stubtest on the installed package"
run mypy 1 .venv/bin/python -m mypy --strict vhdx-py/python/vhdx vhdx-py/tests/typing/usage.py
# stubtest imports the installed package; run it from a folder without the sources.
run stubtest 1 sh -c "cd '$logs' && '$root/.venv/bin/python' -m mypy.stubtest vhdx"

step "pytest vhdx-py/tests (last: its summary closes the run; total = this step's start + pytest's time)"
# From a folder without the source tree on sys.path, so the installed package is tested.
cd vhdx-py
exec "$root/.venv/bin/python" -m pytest tests
