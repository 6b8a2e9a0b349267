#!/usr/bin/env bash
# Makes testdata/sample.vhdx: a small dynamic VHDX written by QEMU, with some data, for the
# README's first command. QEMU puts fresh random GUIDs in every file it creates, so rerunning
# this makes an equivalent file, not an identical one; the committed file's sha256 is in
# testdata/README.md.
set -euo pipefail
cd "$(dirname "$0")"
out=sample.vhdx
rm -f "$out"
qemu-img create -q -f vhdx -o subformat=dynamic,block_size=1M,log_size=1M "$out" 16M
qemu-io -f vhdx \
    -c "write -P 0x42 0 64k" \
    -c "write -P 0x5a 1M 1M" \
    -c "write -P 0xc3 9437184 512k" \
    -c "write -z 12M 1M" \
    "$out" >/dev/null
qemu-img --version | head -n1
ls -l "$out"
sha256sum "$out"
