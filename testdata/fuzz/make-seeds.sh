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

# The guest base of the guest_probe target: a 12 MiB raw disk with a GPT, an ext4 volume
# (1 KiB blocks, a few files) at 1 MiB and an NTFS volume (one file) at 6 MiB.
head -c 70000 < <(yes 'vhdx fuzz guest data') > "$tmp/b.bin"
mkdir -p "$tmp/root/d" && echo hello > "$tmp/root/a.txt" && cp "$tmp/b.bin" "$tmp/root/d/"
truncate -s 5M "$tmp/ext.img" && mkfs.ext4 -q -b 1024 -N 64 -E root_owner=0:0 -U 6a1c6f52-0f0e-4a5e-9d0b-2c7f0d2b5e11 -d "$tmp/root" "$tmp/ext.img"
truncate -s 4M "$tmp/ntfs.img" && mkntfs -q -F -f -s 512 -c 4096 -p 12288 -H 255 -S 63 "$tmp/ntfs.img" >/dev/null 2>&1
ntfscp -f "$tmp/ntfs.img" "$tmp/b.bin" b.bin >/dev/null
truncate -s 12M "$tmp/guest.raw"
printf 'label: gpt\nlabel-id: 1B9A7C52-5D5E-4C3B-A3A1-0B8C2E6F9D10\nstart=2048, size=10240, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\nstart=12288, size=8192, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n' | sfdisk -q "$tmp/guest.raw"
dd if="$tmp/ext.img" of="$tmp/guest.raw" bs=1M seek=1 conv=notrunc status=none
dd if="$tmp/ntfs.img" of="$tmp/guest.raw" bs=1M seek=6 conv=notrunc status=none
gzip -9n -c "$tmp/guest.raw" > base.guest.raw.gz
