#!/usr/bin/env bash
# Makes the base images the fuzz targets patch (fuzz/src/lib.rs): small qemu-made disks with
# a few allocated blocks, gzip-compressed. Run from anywhere; needs qemu-img and qemu-io.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
qemu-img create -q -f vhdx -o block_size=1M,block_state_zero=off "$tmp/base.vhdx" 6M
qemu-io -f vhdx -c "write -P 0x11 0 4k" -c "write -P 0x22 1536k 8k" -c "write -z 3M 1M" -c "write -P 0x33 5M 512" "$tmp/base.vhdx" >/dev/null
qemu-img create -q -f vpc -o subformat=dynamic "$tmp/base.vhd" 6M
qemu-io -f vpc -c "write -P 0x11 0 4k" -c "write -P 0x22 2M 8k" -c "write -P 0x33 5M 512" "$tmp/base.vhd" >/dev/null
gzip -9n -c "$tmp/base.vhdx" > base.vhdx.gz
gzip -9n -c "$tmp/base.vhd" > base.vhd.gz
sha256sum "$tmp/base.vhdx" "$tmp/base.vhd" | sed "s#$tmp/##"
qemu-img --version | head -1
