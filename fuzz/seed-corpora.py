#!/usr/bin/env python3
"""Writes the starting corpora of the fuzz targets into fuzz/corpus/<target>/ (seed-*
files; existing files are kept). Every seed is built from testdata/: patch lists that
rewrite a real field of a real image with the value it already has (so the run starts from
an input that reaches deep), and for metadata_locator the real parent locator item of
testdata/chain/vhdx512/child.vhdx. Run from anywhere: python3 fuzz/seed-corpora.py"""
import gzip
import os
import struct
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def image(rel):
    with gzip.open(os.path.join(ROOT, rel), "rb") as f:
        return f.read()


def patch(off, data):
    """One patch: [u32 LE offset][u8 length][bytes]."""
    assert len(data) < 256
    return struct.pack("<IB", off, len(data)) + data


def same(img, off, n, rel_to=0):
    """A patch writing back the n bytes already at off (offset relative to rel_to)."""
    return patch(off - rel_to, img[off:off + n])


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def vhdx_regions(img):
    """(log offset, log length, metadata offset, metadata length, bat offset)."""
    h = 64 * 1024  # first header
    seq1 = struct.unpack_from("<Q", img, h + 8)[0]
    seq2 = struct.unpack_from("<Q", img, 2 * h + 8)[0]
    cur = h if seq1 >= seq2 else 2 * h
    log_len, log_off = struct.unpack_from("<IQ", img, cur + 68)
    rt = 3 * h
    count = struct.unpack_from("<I", img, rt + 8)[0]
    meta = bat = None
    for i in range(count):
        e = rt + 16 + 32 * i
        g = uuid.UUID(bytes_le=img[e:e + 16])
        off, length = struct.unpack_from("<QI", img, e + 16)
        if g == uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e"):
            meta = (off, length)
        elif g == uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08"):
            bat = off
    return log_off, log_len, meta[0], meta[1], bat


def metadata_item(img, meta_off, want):
    count = struct.unpack_from("<H", img, meta_off + 10)[0]
    for i in range(count):
        e = meta_off + 32 + 32 * i
        g = uuid.UUID(bytes_le=img[e:e + 16])
        off, length = struct.unpack_from("<II", img, e + 16)
        if g == uuid.UUID(want):
            return e, img[meta_off + off:meta_off + off + length]
    raise SystemExit(f"no metadata item {want}")


def main():
    # vhdx_log_replay: the log entry's header, descriptor and data sector, in both modes.
    log = image("testdata/dirty-log-a.vhdx.gz")
    log_off, log_len, _, _, bat = vhdx_regions(log)
    write("vhdx_log_replay", "none-file", b"\x00")
    write("vhdx_log_replay", "none-log", b"\x01")
    for rel in range(0, log_len, 4096):
        if log[log_off + rel:log_off + rel + 4] == b"loge":
            at = log_off + rel
            write("vhdx_log_replay", f"entry-{rel:x}", b"\x01" + same(log, at, 64, log_off)
                  + same(log, at + 64, 32, log_off) + same(log, at + 4096, 16, log_off))
    write("vhdx_log_replay", "header-bat", b"\x00" + same(log, 64 * 1024 + 64, 16)
          + same(log, bat, 32))

    # metadata_locator: the metadata table and locator of the VHDX child, the VHD child's
    # header and locator entries, and the locator item itself for the direct parser.
    child = image("testdata/chain/vhdx512/child.vhdx.gz")
    _, _, meta_off, _, _ = vhdx_regions(child)
    entry, item = metadata_item(child, meta_off, "a8d35f2d-b30b-454d-abf7-d3d84834ab0c")
    write("metadata_locator", "vhdx-table", b"\x00" + same(child, meta_off, 32, meta_off)
          + same(child, entry, 32, meta_off))
    write("metadata_locator", "vhdx-strict", b"\x04" + same(child, entry, 32, meta_off))
    write("metadata_locator", "vhdx-item", b"\x02" + item)
    vhd = image("testdata/chain/vhd/child.vhd.gz")
    hdr = struct.unpack_from(">Q", vhd, 16)[0]
    write("metadata_locator", "vhd-header", b"\x01" + same(vhd, hdr, 64)
          + same(vhd, hdr + 576, 48))
    write("metadata_locator", "vhd-strict", b"\x05" + same(vhd, hdr + 576, 24))

    # chain: no patch, and the child's and parent's first structures, for each chain and
    # with the linkage check on and off.
    for mode in range(6):
        write("chain", f"plain-{mode}", bytes([mode]) + b"\x00\x00")
    for mode, c, p in [(0, "vhdx512/child.vhdx", "vhdx512/base.vhdx"),
                       (1, "vhdx4k/child.vhdx", "vhdx4k/base.vhdx"),
                       (2, "vhd/child.vhd", "vhd/base.vhd")]:
        ci = image(f"testdata/chain/{c}.gz")
        pi = image(f"testdata/chain/{p}.gz")
        if mode < 2:
            ca, pa = vhdx_regions(ci)[4], vhdx_regions(pi)[4]
        else:
            ca = struct.unpack_from(">Q", ci, struct.unpack_from(">Q", ci, 16)[0] + 16)[0]
            pa = struct.unpack_from(">Q", pi, struct.unpack_from(">Q", pi, 16)[0] + 16)[0]
        cp = same(ci, ca, 64)
        write("chain", f"bat-{mode}", bytes([mode]) + struct.pack("<H", len(cp)) + cp
              + same(pi, pa, 64))

    # guest_probe: the GPT header, the ext4 superblock and the NTFS boot sector.
    g = image("testdata/fuzz/base.guest.raw.gz")
    write("guest_probe", "none", b"")
    write("guest_probe", "gpt", same(g, 512, 92) + same(g, 1024, 128))
    write("guest_probe", "ext4", same(g, (1 << 20) + 1024, 200) + same(g, (1 << 20) + 2048, 64))
    write("guest_probe", "ntfs", same(g, 6 << 20, 90))


if __name__ == "__main__":
    main()
