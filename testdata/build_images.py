#!/usr/bin/env python3
"""Independent writer of VHDX and VHD test images (dynamic and differencing chains).

Written straight from /work/shared/spec/FORMATS.md (Part A: VHDX, Part B: VHD) with the
Python standard library only; it shares no code with the Rust reader it is used to check.
Everything is deterministic from a seed (GUIDs, timestamps, block contents).

Library use:
    guid = vhdx(path, size, block_size, logical_sector=512, physical_sector=4096,
                parent=None, blocks={index: spec}, seed=1)
    uid = vhd(path, size, block_size=2 MiB, parent=None, blocks={index: spec}, seed=1)

Block specs (VHDX): ("full", data) | ("partial", present_sectors, data) | ("zero",) |
("unmapped",) | ("unmapped", stale_data) | ("undefined",) | ("not_present",); absent
index = NOT_PRESENT. `data` is the whole block (bytes of length block_size); for a partial
block only the sectors listed (indexes relative to the block) are taken from it, the other
sectors of the stored block are filled with garbage (0xEE) that a reader must never return.
VHD specs: ("full", data) | ("partial", present_sectors, data); absent index = unallocated.

CLI:
    build_images.py fixtures [OUTDIR]          build the committed set (default testdata/chain)
    build_images.py chain NAME DIR             build one chain NAME into DIR (uncompressed)
    build_images.py expect NAME FILE OUT       expected raw content of FILE of chain NAME
    build_images.py usage NAME                 per file of chain NAME (JSON): bytes read
                                               from each chain depth, marked zero, in no file
    build_images.py variant NAME DIR           images for error-path tests (see VARIANTS)
    build_images.py selftest                   CRC-32C check value etc.
"""

import gzip
import hashlib
import os
import random
import shutil
import struct
import sys

MiB = 1 << 20
KiB = 1 << 10
GiB = 1 << 30

# ---------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), table-driven, reflected polynomial 0x82F63B78 (FORMATS.md A.1)

_CRC_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


# ---------------------------------------------------------------------------------------
# GUID helpers (A.1: Data1 u32 LE, Data2 u16 LE, Data3 u16 LE, Data4 raw)

def guid_bytes(text):
    h = text.strip("{}").replace("-", "")
    raw = bytes.fromhex(h)
    return struct.pack("<IHH", *struct.unpack(">IHH", raw[:8])) + raw[8:]


def guid_text(b):
    d1, d2, d3 = struct.unpack("<IHH", b[:8])
    r = b[8:]
    return "%08x-%04x-%04x-%s-%s" % (d1, d2, d3, r[:2].hex(), r[2:].hex())


def random_guid(rng):
    b = bytearray(rng.getrandbits(8) for _ in range(16))
    # version 4 / variant bits on the text form (byte 7 holds Data3's high byte in LE order)
    b[7] = (b[7] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return bytes(b)


BAT_REGION = guid_bytes("2DC27766-F623-4200-9D64-115E9BFD4A08")
META_REGION = guid_bytes("8B7CA206-4790-4B9A-B8FE-575F050F886E")
ITEM_FILE_PARAMS = guid_bytes("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
ITEM_VSIZE = guid_bytes("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
ITEM_DISK_ID = guid_bytes("BECA12AB-B2E6-4523-93EF-C309E000C746")
ITEM_LOGICAL = guid_bytes("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
ITEM_PHYSICAL = guid_bytes("CDA348C7-445D-4471-9CC9-E9885251C556")
ITEM_PARENT_LOCATOR = guid_bytes("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
LOCATOR_TYPE_VHDX = guid_bytes("B04AEFB7-D19E-4A81-B789-25B8E9445913")

assert BAT_REGION.hex() == "6677c22d23f600429d64115e9bfd4a08"

# payload / SB block states (A.7)
NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, FULLY_PRESENT, PARTIALLY_PRESENT = 0, 1, 2, 3, 6, 7
SB_PRESENT = 6


def ceil_div(a, b):
    return -(-a // b)


def align(x, a):
    return ceil_div(x, a) * a


class SparseWriter:
    """Writes only the given ranges; the rest of the file stays a hole."""

    def __init__(self, path):
        self.f = open(path, "wb")
        self.end = 0

    def write(self, off, data):
        data = bytes(data)
        if not data:
            return
        self.f.seek(off)
        self.f.write(data)
        self.end = max(self.end, off + len(data))

    def close(self, size=None):
        self.f.truncate(max(self.end, size or 0))
        self.f.close()


def read_vhdx_data_write_guid(path):
    """The current header's DataWriteGuid of an existing VHDX (A.4 header choice)."""
    with open(path, "rb") as f:
        best = None
        for off in (64 * KiB, 128 * KiB):
            f.seek(off)
            h = f.read(4096)
            if h[:4] != b"head":
                continue
            if crc32c(h[:4] + b"\0\0\0\0" + h[8:]) != struct.unpack_from("<I", h, 4)[0]:
                continue
            seq = struct.unpack_from("<Q", h, 8)[0]
            if best is None or seq > best[0]:
                best = (seq, h[32:48])
        assert best, "no valid header in %s" % path
        return best[1]


def windows_relative(child, parent):
    rel = os.path.relpath(os.path.abspath(parent), os.path.dirname(os.path.abspath(child)))
    rel = rel.replace("/", "\\")
    if not rel.startswith("."):
        rel = ".\\" + rel
    return rel


def windows_absolute(parent):
    # Test hosts are POSIX: `\\?\` + the host path with backslashes (no drive letter).
    return "\\\\?\\" + os.path.abspath(parent).replace("/", "\\")


# ---------------------------------------------------------------------------------------
# VHDX writer (Part A)

def vhdx(path, size, block_size, logical_sector=512, physical_sector=4096, parent=None,
         blocks=None, seed=1, data_write_guid=None, parent_guid=None, locators=None,
         disk_id=None):
    """Writes a VHDX; returns its DataWriteGuid (16 on-disk bytes).

    parent: path of the parent (differencing disk). Its DataWriteGuid is read from the file
    unless parent_guid (on-disk bytes) is given. locators: dict of extra/override
    parent-locator keys (value None removes a key)."""
    blocks = dict(blocks or {})
    rng = random.Random("vhdx:%s" % seed)
    assert logical_sector in (512, 4096) and physical_sector in (512, 4096)
    assert block_size & (block_size - 1) == 0 and MiB <= block_size <= 256 * MiB
    assert size % logical_sector == 0
    file_write_guid = random_guid(rng)
    dwg = data_write_guid or random_guid(rng)
    disk_id = disk_id or random_guid(rng)
    differencing = parent is not None or parent_guid is not None

    cr = (1 << 23) * logical_sector // block_size  # A.7 ChunkRatio
    payload_blocks = ceil_div(size, block_size)
    if differencing:
        total = ceil_div(payload_blocks, cr) * (cr + 1)
    else:
        total = payload_blocks + (payload_blocks - 1) // cr
    sectors_per_block = block_size // logical_sector

    log_off, log_len = 1 * MiB, 1 * MiB
    bat_off = 2 * MiB
    bat_len = align(total * 8, MiB)
    meta_off = bat_off + bat_len
    meta_len = 1 * MiB
    next_free = meta_off + meta_len

    w = SparseWriter(path)
    # A.3 file type identifier
    ident = bytearray(64 * KiB)
    ident[0:8] = b"vhdxfile"
    creator = "vtst build_images.py".encode("utf-16-le")
    ident[8:8 + len(creator)] = creator
    w.write(0, ident)

    # A.4 headers: two valid copies, sequence numbers 5 and 6 (the second is current)
    for i, off in enumerate((64 * KiB, 128 * KiB)):
        h = bytearray(4096)
        h[0:4] = b"head"
        struct.pack_into("<Q", h, 8, 5 + i)
        h[16:32] = file_write_guid
        h[32:48] = dwg
        h[48:64] = bytes(16)  # LogGuid zero: nothing to replay
        struct.pack_into("<HHIQ", h, 64, 0, 1, log_len, log_off)
        struct.pack_into("<I", h, 4, crc32c(h))
        w.write(off, h)

    # A.5 region tables (two identical copies)
    rt = bytearray(64 * KiB)
    rt[0:4] = b"regi"
    struct.pack_into("<I", rt, 8, 2)
    for i, (g, off, ln) in enumerate(((BAT_REGION, bat_off, bat_len),
                                      (META_REGION, meta_off, meta_len))):
        e = 16 + 32 * i
        rt[e:e + 16] = g
        struct.pack_into("<QII", rt, e + 16, off, ln, 1)
    struct.pack_into("<I", rt, 4, crc32c(rt))
    w.write(192 * KiB, rt)
    w.write(256 * KiB, rt)

    # A.6 metadata
    items = [
        (ITEM_FILE_PARAMS, struct.pack("<II", block_size, 2 if differencing else 0), 0x4),
        (ITEM_VSIZE, struct.pack("<Q", size), 0x6),
        (ITEM_DISK_ID, disk_id, 0x6),
        (ITEM_LOGICAL, struct.pack("<I", logical_sector), 0x6),
        (ITEM_PHYSICAL, struct.pack("<I", physical_sector), 0x6),
    ]
    if differencing:
        pg = parent_guid if parent_guid is not None else read_vhdx_data_write_guid(parent)
        kv = {"parent_linkage": "{%s}" % guid_text(pg)}
        if parent is not None:
            kv["relative_path"] = windows_relative(path, parent)
            kv["absolute_win32_path"] = windows_absolute(parent)
        for k, v in (locators or {}).items():
            if v is None:
                kv.pop(k, None)
            else:
                kv[k] = v
        items.append((ITEM_PARENT_LOCATOR, parent_locator_item(kv), 0x4))
    mt = bytearray(64 * KiB)
    mt[0:8] = b"metadata"
    struct.pack_into("<H", mt, 10, len(items))
    item_off = 64 * KiB
    item_data = bytearray()
    for i, (g, data, flags) in enumerate(items):
        e = 32 + 32 * i
        mt[e:e + 16] = g
        struct.pack_into("<III", mt, e + 16, item_off + len(item_data), len(data), flags)
        item_data += data
    w.write(meta_off, mt)
    w.write(meta_off + item_off, item_data)

    # A.7 BAT and payload blocks, A.8 sector bitmaps
    bat = [0] * total
    sb_blocks = {}  # chunk -> bytearray(1 MiB)

    def alloc():
        nonlocal next_free
        off = next_free
        next_free += block_size
        return off

    for p in sorted(blocks):
        spec = blocks[p]
        assert 0 <= p < payload_blocks, p
        kind = spec[0]
        idx = p + p // cr
        if kind == "full":
            assert len(spec[1]) == block_size
            off = alloc()
            w.write(off, spec[1])
            bat[idx] = off | FULLY_PRESENT
        elif kind == "partial":
            assert differencing, "PARTIALLY_PRESENT is valid in differencing disks only"
            present, data = spec[1], spec[2]
            stored = bytearray(b"\xEE" * block_size)
            chunk = p // cr
            sb = sb_blocks.setdefault(chunk, bytearray(MiB))
            first_bit = (p % cr) * sectors_per_block
            for s in present:
                assert 0 <= s < sectors_per_block
                a = s * logical_sector
                stored[a:a + logical_sector] = data[a:a + logical_sector]
                n = first_bit + s
                sb[n // 8] |= 1 << (n % 8)  # LSB first (A.8)
            off = alloc()
            w.write(off, stored)
            bat[idx] = off | PARTIALLY_PRESENT
        elif kind == "zero":
            bat[idx] = ZERO
        elif kind == "undefined":
            bat[idx] = UNDEFINED
        elif kind == "unmapped":
            if len(spec) > 1:  # FileOffsetMB kept, pointing to stale content (A.7)
                off = alloc()
                w.write(off, spec[1])
                bat[idx] = off | UNMAPPED
            else:
                bat[idx] = UNMAPPED
        elif kind == "not_present":
            bat[idx] = NOT_PRESENT
        else:
            raise ValueError(kind)
    for chunk in sorted(sb_blocks):
        off = next_free
        next_free += MiB
        w.write(off, sb_blocks[chunk])
        bat[chunk * (cr + 1) + cr] = off | SB_PRESENT
    w.write(bat_off, struct.pack("<%dQ" % total, *bat))
    w.close(next_free)
    return dwg


def parent_locator_item(kv):
    """A.6.6: header, key/value entries, then UTF-16LE keys and values."""
    keys = list(kv.items())
    head = bytearray(20 + 12 * len(keys))
    head[0:16] = LOCATOR_TYPE_VHDX
    struct.pack_into("<HH", head, 16, 0, len(keys))
    blob = bytearray()
    base = len(head)
    for i, (k, v) in enumerate(keys):
        kb, vb = k.encode("utf-16-le"), v.encode("utf-16-le")
        ko = base + len(blob)
        blob += kb
        vo = base + len(blob)
        blob += vb
        struct.pack_into("<IIHH", head, 20 + 12 * i, ko, vo, len(kb), len(vb))
    return bytes(head + blob)


# ---------------------------------------------------------------------------------------
# VHD writer (Part B)

VHD_EPOCH = 946684800


def vhd_checksum(b):
    return (~sum(b)) & 0xFFFFFFFF


def chs(size):
    """B.4 geometry from the size in bytes."""
    total = min(size // 512, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max(ceil_div(cth, 1024), 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def vhd_footer(size, disk_type, unique_id, timestamp):
    f = bytearray(512)
    f[0:8] = b"conectix"
    struct.pack_into(">IIQI", f, 8, 2, 0x00010000, 512, timestamp)
    f[28:32] = b"vtst"
    struct.pack_into(">I", f, 32, 0x00010000)
    f[36:40] = b"Wi2k"
    c, h, s = chs(size)
    struct.pack_into(">QQHBBI", f, 40, size, size, c, h, s, disk_type)
    f[68:84] = unique_id
    struct.pack_into(">I", f, 64, vhd_checksum(f))
    return bytes(f)


def read_vhd_footer(path):
    with open(path, "rb") as fh:
        fh.seek(-512, 2)
        f = fh.read(512)
    assert f[:8] == b"conectix"
    return f[68:84], struct.unpack_from(">I", f, 24)[0]


def vhd(path, size, block_size=2 * MiB, parent=None, blocks=None, seed=1, unique_id=None,
        parent_id=None, locators=None):
    """Writes a dynamic (parent None) or differencing VHD; returns its UniqueId (16 bytes).

    locators: list of (code, text) overriding the default [W2ru relative, W2ku absolute]."""
    blocks = dict(blocks or {})
    rng = random.Random("vhd:%s" % seed)
    uid = unique_id or bytes(rng.getrandbits(8) for _ in range(16))
    timestamp = 800000000 + rng.randrange(1000000)
    differencing = parent is not None or parent_id is not None
    spb = block_size // 512
    assert block_size % 512 == 0 and spb & (spb - 1) == 0
    max_entries = ceil_div(size, block_size)
    bitmap_bytes = align(ceil_div(spb, 8), 512)

    w = SparseWriter(path)
    footer = vhd_footer(size, 4 if differencing else 3, uid, timestamp)
    w.write(0, footer)
    hdr = bytearray(1024)
    hdr[0:8] = b"cxsparse"
    bat_off = 1536
    struct.pack_into(">QQIII", hdr, 8, 0xFFFFFFFFFFFFFFFF, bat_off, 0x00010000, max_entries,
                     block_size)
    bat_bytes = align(max_entries * 4, 512)
    next_free = bat_off + bat_bytes
    if differencing:
        if parent is not None:
            p_uid, p_ts = read_vhd_footer(parent)
        else:
            p_uid, p_ts = parent_id, 0
        if parent_id is not None:
            p_uid = parent_id
        hdr[40:56] = p_uid
        struct.pack_into(">I", hdr, 56, p_ts)
        name = os.path.basename(parent or "parent.vhd").encode("utf-16-be")[:512]
        hdr[64:64 + len(name)] = name
        if locators is None:
            locators = [(b"W2ru", windows_relative(path, parent)),
                        (b"W2ku", windows_absolute(parent))]
        for i, (code, text) in enumerate(locators):
            data = text.encode("utf-16-le")
            space = align(len(data), 512)
            e = 576 + 24 * i
            hdr[e:e + 4] = code
            struct.pack_into(">IIIQ", hdr, e + 4, space, len(data), 0, next_free)
            w.write(next_free, data)
            next_free += space
    struct.pack_into(">I", hdr, 36, vhd_checksum(hdr))
    w.write(512, hdr)
    bat = [0xFFFFFFFF] * (bat_bytes // 4)
    for b in sorted(blocks):
        spec = blocks[b]
        assert 0 <= b < max_entries
        bitmap = bytearray(bitmap_bytes)
        if spec[0] == "full":
            data = bytes(spec[1])
            for s in range(spb):
                bitmap[s // 8] |= 0x80 >> (s % 8)  # MSB first (B.7)
        elif spec[0] == "partial":
            present, src = spec[1], spec[2]
            # bit-0 sectors: zero in a dynamic disk (B.7), garbage in a differencing one
            data = bytearray((b"\xEE" if differencing else b"\0") * block_size)
            for s in present:
                a = s * 512
                data[a:a + 512] = src[a:a + 512]
                bitmap[s // 8] |= 0x80 >> (s % 8)
        else:
            raise ValueError(spec[0])
        assert len(data) == block_size
        bat[b] = next_free // 512
        w.write(next_free, bitmap)
        w.write(next_free + bitmap_bytes, data)
        next_free += bitmap_bytes + block_size
    w.write(bat_off, struct.pack(">%dI" % len(bat), *bat))
    w.write(next_free, footer)
    w.close(next_free + 512)
    return uid


# ---------------------------------------------------------------------------------------
# Contents and the expected virtual disk

def sector_data(rng, tag, sector_size, first_sector, count):
    """Compressible but distinctive: per sector a tag + sector number + 8 random bytes."""
    out = bytearray()
    for s in range(first_sector, first_sector + count):
        head = struct.pack("<8sQ", tag.encode()[:8].ljust(8, b"."), s) + rng.randbytes(8)
        out += (head * (sector_size // len(head) + 1))[:sector_size]
    return bytes(out)


class Model:
    """Expected content: block index -> bytearray for blocks that are not all zero."""

    def __init__(self, size, block_size, parent=None):
        self.size, self.block_size, self.parent = size, block_size, parent
        self.level = 0 if parent is None else parent.level + 1

    def apply(self, blocks, sector_size, differencing, libvhdi=None):
        """libvhdi=None: the spec (A.9, B.7). libvhdi="vhdx"/"vhd": what libvhdi 20260901
        returns instead (see the README), so the oracle can be compared byte for byte."""
        exp = {} if self.parent is None else {k: bytearray(v) for k, v in self.parent.exp.items()}
        for p, spec in blocks.items():
            kind = spec[0]
            if kind == "full":
                exp[p] = bytearray(spec[1])
            elif kind == "partial":
                cur = exp.get(p, bytearray(self.block_size))
                present = set(spec[1])
                if libvhdi == "vhd" and differencing:
                    # libvhdi quirk: a set bitmap bit makes the rest of that bitmap byte
                    # (up to 7 following sectors) read from this file, whose bit-0 sectors
                    # hold the 0xEE filler.
                    for s in spec[1]:
                        present.update(range(s, (s // 8 + 1) * 8))
                for s in present:
                    a = s * sector_size
                    if s in spec[1]:
                        cur[a:a + sector_size] = spec[2][a:a + sector_size]
                    else:
                        cur[a:a + sector_size] = b"\xEE" * sector_size
                exp[p] = cur
            elif kind in ("zero", "unmapped", "undefined"):
                if libvhdi == "vhdx" and differencing:
                    # libvhdi quirk: in a differencing VHDX these states read the parent
                    continue
                # A.9: ZERO hides the parent (MUST); UNMAPPED/UNDEFINED read as zeros by
                # our chosen rule (the spec allows zeros for all file types).
                exp.pop(p, None)
            elif kind == "not_present":
                pass
        self.exp = exp
        self.owners(blocks, sector_size, differencing)
        return self

    def owners(self, blocks, sector_size, differencing):
        """Which level answers each sector of the described blocks (spec rules, independent
        of the content above): ("data", level), ("zero", level) or None (no level: zeros).
        A.7/A.9: ZERO, UNMAPPED and UNDEFINED read zeros and hide the parent; NOT_PRESENT and
        the unset-bit sectors of a partial block defer to the parent. B.7: a dynamic VHD's
        allocated block is read whole from its file, unset bits included (as QEMU does)."""
        spb = self.block_size // sector_size
        own = {} if self.parent is None else {k: list(v) for k, v in self.parent.own.items()}
        for p, spec in blocks.items():
            kind = spec[0]
            if kind == "full" or (kind == "partial" and not differencing):
                own[p] = [("data", self.level)] * spb
            elif kind == "partial":
                cur = own.get(p, [None] * spb)
                for s in spec[1]:
                    cur[s] = ("data", self.level)
                own[p] = cur
            elif kind in ("zero", "unmapped", "undefined"):
                own[p] = [("zero", self.level)] * spb
        self.own, self.sector_size = own, sector_size

    def usage(self):
        """Where this file's virtual bytes are read from: per chain depth (0 = this file) the
        data bytes and the bytes a level marks zero, plus the bytes no level holds."""
        bs, sec = self.block_size, self.sector_size
        data, zero = [0] * (self.level + 1), [0] * (self.level + 1)
        unallocated = 0
        for b in range(ceil_div(self.size, bs)):
            if b not in self.own:
                unallocated += min(bs, self.size - b * bs)
                continue
            for s, o in enumerate(self.own[b]):
                a = b * bs + s * sec
                if a >= self.size:
                    break
                n = min(sec, self.size - a)
                if o is None:
                    unallocated += n
                elif o[0] == "data":
                    data[self.level - o[1]] += n
                else:
                    zero[self.level - o[1]] += n
        levels = [{"depth": d, "data_bytes": data[d], "zero_bytes": zero[d]}
                  for d in range(self.level + 1)]
        return {"levels": levels, "unallocated_bytes": unallocated}

    def write(self, out):
        w = SparseWriter(out)
        for p, data in sorted(self.exp.items()):
            end = min(len(data), self.size - p * self.block_size)
            w.write(p * self.block_size, data[:end])
        w.close(self.size)


# ---------------------------------------------------------------------------------------
# The fixture chains

SEED = 20261127


def _mk(rng, tag, bs, sec, p):
    return sector_data(rng, tag, sec, p * bs // sec, bs // sec)


def _scatter(rng, n, k):
    return sorted(rng.sample(range(n), k))


def fake_absolute(chain, files):
    """Fixtures record a fixed absolute path, so a rebuild anywhere gives identical bytes
    (it does not resolve on the test host; the relative locator does)."""
    if not files:
        return None
    return "\\\\?\\C:\\vhdx-testdata\\%s\\%s" % (chain, os.path.basename(files[-1]))


def chain_vhdx(name, seed, sec, phys, bs, size, levels_spec):
    """levels_spec: list (base first) of functions(rng, nblocks) -> blocks dict."""
    def build(d, libvhdi=False):
        rng = random.Random("%s:%s" % (name, seed))
        files, model = [], None
        for lvl, fn in enumerate(levels_spec):
            fname = ("base", "child", "grandchild")[lvl] + ".vhdx"
            blocks = fn(rng, ceil_div(size, bs))
            path = os.path.join(d, fname)
            vhdx(path, size, bs, sec, phys, parent=files[-1] if files else None,
                 blocks=blocks, seed="%s:%s:%d" % (name, seed, lvl),
                 locators={"absolute_win32_path": fake_absolute(name, files)})
            model = Model(size, bs, model).apply(blocks, sec, lvl > 0, libvhdi and "vhdx")
            files.append(path)
            yield fname, model
    return build


def chain_vhd(name, seed, bs, size, levels_spec):
    def build(d, libvhdi=False):
        rng = random.Random("%s:%s" % (name, seed))
        files, model = [], None
        for lvl, fn in enumerate(levels_spec):
            fname = ("base", "child", "grandchild")[lvl] + ".vhd"
            blocks = fn(rng, ceil_div(size, bs))
            path = os.path.join(d, fname)
            parent = files[-1] if files else None
            vhd(path, size, bs, parent=parent, blocks=blocks,
                seed="%s:%s:%d" % (name, seed, lvl),
                locators=parent and [(b"W2ru", windows_relative(path, parent)),
                                     (b"W2ku", fake_absolute(name, files)[4:])])
            model = Model(size, bs, model).apply(blocks, 512, lvl > 0, libvhdi and "vhd")
            files.append(path)
            yield fname, model
    return build


def _vhdx512():
    bs, sec = MiB, 512
    spb = bs // sec

    def base(rng, n):
        # blocks 0-7 and 12 present; 8-11, 13-15 absent (NOT_PRESENT -> zeros)
        return {p: ("full", _mk(rng, "base%d" % p, bs, sec, p)) for p in list(range(8)) + [12]}

    def child(rng, n):
        return {
            0: ("full", _mk(rng, "c0", bs, sec, 0)),
            1: ("partial", _scatter(rng, spb, 37) + [0, spb - 1], _mk(rng, "c1", bs, sec, 1)),
            2: ("zero",),
            3: ("unmapped",),
            4: ("undefined",),
            5: ("not_present",),
            # partial over a block absent in the parent (parent sectors read as zeros)
            9: ("partial", list(range(100, 164)) + _scatter(rng, spb, 20), _mk(rng, "c9", bs, sec, 9)),
            12: ("partial", [1, 2, 3, 7, 511, 512, 1000, 2047], _mk(rng, "c12", bs, sec, 12)),
            15: ("full", _mk(rng, "c15", bs, sec, 15)),
        }

    def grandchild(rng, n):
        return {
            1: ("partial", _scatter(rng, spb, 50), _mk(rng, "g1", bs, sec, 1)),
            2: ("partial", list(range(0, 2048, 3)), _mk(rng, "g2", bs, sec, 2)),
            7: ("partial", _scatter(rng, spb, 9), _mk(rng, "g7", bs, sec, 7)),
            9: ("zero",),
            10: ("full", _mk(rng, "g10", bs, sec, 10)),
            12: ("partial", [0, 1, 4, 8, 1999], _mk(rng, "g12", bs, sec, 12)),
        }

    return chain_vhdx("vhdx512", SEED, sec, 4096, bs, 16 * MiB, [base, child, grandchild])


def _vhdx4k():
    # logical 4096, 2 MiB blocks, virtual 31 MiB: last block is half outside the disk
    bs, sec = 2 * MiB, 4096
    spb = bs // sec

    def base(rng, n):
        return {p: ("full", _mk(rng, "b%d" % p, bs, sec, p)) for p in (0, 1, 2, 3, 6, 15)}

    def child(rng, n):
        return {
            0: ("partial", _scatter(rng, spb, 40), _mk(rng, "c0", bs, sec, 0)),
            1: ("zero",),
            2: ("unmapped", _mk(rng, "stale2", bs, sec, 2)),  # stale pointer (A.7)
            4: ("full", _mk(rng, "c4", bs, sec, 4)),
            6: ("partial", [0, 255, 128, 129, 130], _mk(rng, "c6", bs, sec, 6)),
            15: ("partial", list(range(0, 256, 2)), _mk(rng, "c15", bs, sec, 15)),
        }

    def grandchild(rng, n):
        return {
            0: ("partial", _scatter(rng, spb, 60), _mk(rng, "g0", bs, sec, 0)),
            4: ("partial", [5, 6, 200], _mk(rng, "g4", bs, sec, 4)),
            8: ("full", _mk(rng, "g8", bs, sec, 8)),
            15: ("undefined",),
        }

    return chain_vhdx("vhdx4k", SEED, sec, 4096, bs, 31 * MiB, [base, child, grandchild])


def _vhdxbig():
    # logical 512, 1 MiB blocks: ChunkRatio 4096, so 4 GiB + 4 MiB has 4100 payload blocks in
    # two chunks; the child has PARTIALLY_PRESENT blocks on both sides of the boundary
    # (two sector-bitmap blocks). Files stay small: only a few blocks are allocated.
    bs, sec = MiB, 512
    spb = bs // sec
    size = 4 * GiB + 4 * MiB

    def base(rng, n):
        return {p: ("full", _mk(rng, "b%d" % p, bs, sec, p)) for p in (0, 4094, 4095, 4096, 4099)}

    def child(rng, n):
        return {
            0: ("partial", _scatter(rng, spb, 30), _mk(rng, "c0", bs, sec, 0)),
            4095: ("partial", [0, spb - 1] + _scatter(rng, spb, 25), _mk(rng, "c4095", bs, sec, 4095)),
            4096: ("partial", [0, 1, spb - 1] + _scatter(rng, spb, 25), _mk(rng, "c4096", bs, sec, 4096)),
            4097: ("partial", _scatter(rng, spb, 11), _mk(rng, "c4097", bs, sec, 4097)),
            4098: ("full", _mk(rng, "c4098", bs, sec, 4098)),
            4099: ("zero",),
        }

    return chain_vhdx("vhdxbig", SEED, sec, 512, bs, size, [base, child])


def _vhd():
    # 2 MiB blocks, 4096 sectors per block; virtual 15 MiB (last block half used)
    bs = 2 * MiB
    spb = bs // 512

    def base(rng, n):
        b = {p: ("full", _mk(rng, "b%d" % p, bs, 512, p)) for p in (0, 1, 2, 5)}
        b[3] = ("partial", _scatter(rng, spb, 300), _mk(rng, "b3", bs, 512, 3))
        return b

    def child(rng, n):
        return {
            0: ("partial", _scatter(rng, spb, 100) + [0, 8, spb - 1], _mk(rng, "c0", bs, 512, 0)),
            1: ("full", _mk(rng, "c1", bs, 512, 1)),
            3: ("partial", list(range(7, 2000, 7)), _mk(rng, "c3", bs, 512, 3)),
            4: ("partial", _scatter(rng, spb, 40), _mk(rng, "c4", bs, 512, 4)),
            7: ("partial", [0, 1, 2, 3, 1024, 2047], _mk(rng, "c7", bs, 512, 7)),
        }

    def grandchild(rng, n):
        return {
            0: ("partial", _scatter(rng, spb, 77), _mk(rng, "g0", bs, 512, 0)),
            3: ("partial", [1, 8, 15, 22, 4095], _mk(rng, "g3", bs, 512, 3)),
            6: ("full", _mk(rng, "g6", bs, 512, 6)),
        }

    return chain_vhd("vhd", SEED, bs, 15 * MiB, [base, child, grandchild])


CHAINS = {"vhdx512": _vhdx512, "vhdx4k": _vhdx4k, "vhdxbig": _vhdxbig, "vhd": _vhd}

DESCRIPTIONS = {
    "vhdx512": "VHDX, logical 512 / physical 4096, 1 MiB blocks, 16 MiB. base: dynamic, blocks "
               "0-7 and 12 FULLY_PRESENT. child: differencing; block 0 full, 1 partial "
               "(scattered sectors), 2 ZERO, 3 UNMAPPED, 4 UNDEFINED, 5 NOT_PRESENT (explicit), "
               "9 partial over a parent hole, 12 partial, 15 full. grandchild: differencing; "
               "1, 2, 7, 12 partial, 9 ZERO, 10 full.",
    "vhdx4k": "VHDX, logical 4096 / physical 4096, 2 MiB blocks, 31 MiB (last block half "
              "outside the disk). base: dynamic, blocks 0-3, 6, 15 full. child: 0, 6, 15 "
              "partial, 1 ZERO, 2 UNMAPPED with a stale FileOffset pointing at old data, 4 full. "
              "grandchild: 0, 4 partial, 8 full, 15 UNDEFINED.",
    "vhdxbig": "VHDX, logical 512 / physical 512, 1 MiB blocks (ChunkRatio 4096), 4 GiB + 4 MiB "
               "= 4100 blocks in two chunks. base: dynamic, blocks 0, 4094-4096, 4099 full. "
               "child: differencing, partial blocks 0, 4095 (chunk 0) and 4096, 4097 (chunk 1: "
               "second sector-bitmap block), 4098 full, 4099 ZERO.",
    "vhd": "VHD, 2 MiB blocks, 15 MiB (last block half used), creator 'vtst'. base: dynamic, "
           "blocks 0, 1, 2, 5 full, 3 with a partial bitmap (other sectors zero). child: "
           "differencing (W2ru + W2ku locators); 0, 3, 4, 7 partial (garbage in bit-0 sectors), "
           "1 full. grandchild: 0, 3 partial, 6 full.",
}


def build_chain(name, d):
    os.makedirs(d, exist_ok=True)
    return list(CHAINS[name]()(d))


# ---------------------------------------------------------------------------------------
# Variants for the error-path tests

def variant(name, d):
    os.makedirs(d, exist_ok=True)
    rng = random.Random("variant:%s" % name)
    bs = MiB
    blk = lambda tag, p: ("full", sector_data(rng, tag, 512, p * 2048, 2048))
    j = lambda n: os.path.join(d, n)
    if name == "vhdx-mismatch":
        # child links to base; then base is rebuilt with a new DataWriteGuid
        vhdx(j("base.vhdx"), 8 * MiB, bs, blocks={0: blk("b", 0)}, seed="mm-a")
        vhdx(j("child.vhdx"), 8 * MiB, bs, parent=j("base.vhdx"), blocks={1: blk("c", 1)}, seed="mm-c")
        vhdx(j("base.vhdx"), 8 * MiB, bs, blocks={0: blk("b", 0)}, seed="mm-b")
    elif name == "vhd-mismatch":
        vhd(j("base.vhd"), 8 * MiB, MiB, blocks={0: blk("b", 0)}, seed="mm-a")
        vhd(j("child.vhd"), 8 * MiB, MiB, parent=j("base.vhd"), blocks={1: blk("c", 1)}, seed="mm-c")
        vhd(j("base.vhd"), 8 * MiB, MiB, blocks={0: blk("b", 0)}, seed="mm-b")
    elif name == "vhdx-self":
        g = guid_bytes("11111111-2222-4333-8444-555555555555")
        vhdx(j("self.vhdx"), 8 * MiB, bs, data_write_guid=g, parent_guid=g,
             locators={"relative_path": ".\\self.vhdx"}, seed="self")
    elif name == "vhdx-abab":
        ga = guid_bytes("aaaaaaaa-0000-4000-8000-000000000001")
        gb = guid_bytes("bbbbbbbb-0000-4000-8000-000000000002")
        vhdx(j("a.vhdx"), 8 * MiB, bs, data_write_guid=ga, parent_guid=gb,
             locators={"relative_path": ".\\b.vhdx"}, seed="a")
        vhdx(j("b.vhdx"), 8 * MiB, bs, data_write_guid=gb, parent_guid=ga,
             locators={"relative_path": ".\\a.vhdx"}, seed="b")
    elif name == "vhd-abab":
        ua, ub = b"\xaa" * 16, b"\xbb" * 16
        vhd(j("a.vhd"), 8 * MiB, unique_id=ua, parent_id=ub, locators=[(b"W2ru", ".\\b.vhd")], seed="a")
        vhd(j("b.vhd"), 8 * MiB, unique_id=ub, parent_id=ua, locators=[(b"W2ru", ".\\a.vhd")], seed="b")
    elif name == "vhdx-policy":
        # base.vhdx in d; other/abs.vhdx (only an absolute locator), sub/out.vhdx (relative
        # path leaving its folder: ..\base.vhdx), in.vhdx (relative path inside: .\base.vhdx)
        os.makedirs(j("sub"), exist_ok=True)
        os.makedirs(j("other"), exist_ok=True)
        vhdx(j("base.vhdx"), 8 * MiB, bs, blocks={0: blk("b", 0)}, seed="pol-b")
        vhdx(j("other/abs.vhdx"), 8 * MiB, bs, parent=j("base.vhdx"), seed="pol-abs",
             locators={"relative_path": None})
        vhdx(j("sub/out.vhdx"), 8 * MiB, bs, parent=j("base.vhdx"), seed="pol-out",
             locators={"absolute_win32_path": None})
        vhdx(j("in.vhdx"), 8 * MiB, bs, parent=j("base.vhdx"), seed="pol-in",
             locators={"absolute_win32_path": None})
    elif name == "vhd-policy":
        # as vhdx-policy; other/abs.vhd lives in another folder than its parent so that the
        # ParentUnicodeName ("base.vhd") does not resolve next to it
        os.makedirs(j("sub"), exist_ok=True)
        os.makedirs(j("other"), exist_ok=True)
        vhd(j("base.vhd"), 8 * MiB, MiB, blocks={0: blk("b", 0)}, seed="pol-b")
        vhd(j("other/abs.vhd"), 8 * MiB, MiB, parent=j("base.vhd"), seed="pol-abs",
            locators=[(b"W2ku", windows_absolute(j("base.vhd")))])
        vhd(j("sub/out.vhd"), 8 * MiB, MiB, parent=j("base.vhd"), seed="pol-out",
            locators=[(b"W2ru", "..\\base.vhd")])
        vhd(j("in.vhd"), 8 * MiB, MiB, parent=j("base.vhd"), seed="pol-in",
            locators=[(b"W2ru", ".\\base.vhd")])
    else:
        raise SystemExit("unknown variant %s" % name)


VARIANTS = ["vhdx-mismatch", "vhd-mismatch", "vhdx-self", "vhdx-abab", "vhd-abab",
            "vhdx-policy", "vhd-policy"]


# ---------------------------------------------------------------------------------------
# CLI

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def fixtures(out):
    os.makedirs(out, exist_ok=True)
    rows = []
    for name in CHAINS:
        d = os.path.join(out, name)
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
        for fname, model in build_chain(name, d):
            p = os.path.join(d, fname)
            raw_sha = sha256_file(p)
            apparent = os.path.getsize(p)
            stored = fname
            if apparent > MiB:
                with open(p, "rb") as src, gzip.GzipFile(p + ".gz", "wb", 9, mtime=0) as dst:
                    shutil.copyfileobj(src, dst, MiB)
                os.remove(p)
                stored = fname + ".gz"
            rows.append((name, stored, apparent, raw_sha))
        print("built", name)
    readme = ["# Differencing-chain fixtures", "",
              "Built by `testdata/build_images.py` (Python 3, standard library only, written from",
              "`FORMATS.md` Parts A and B; shares no code with the Rust reader), seed "
              "`%d`:" % SEED, "",
              "    python3 testdata/build_images.py fixtures testdata/chain", "",
              "Each folder holds one chain: `base` (dynamic) <- `child` (differencing) <- "
              "`grandchild` (differencing),",
              "linked by relative locators (`.\\base.vhdx`, VHD `W2ru`) and absolute ones "
              "(`absolute_win32_path` / `W2ku`)",
              "holding a fixed path `C:\\vhdx-testdata\\CHAIN\\FILE` that does not resolve on "
              "the test host (so a rebuild anywhere",
              "is byte-identical). Files over 1 MiB are stored gzip-compressed;",
              "the sha256 is of the uncompressed image. The expected virtual-disk content of any "
              "file is",
              "`python3 testdata/build_images.py expect CHAIN FILE OUT` (a sparse raw file), "
              "computed from the same",
              "block specification. UNMAPPED and UNDEFINED blocks are expected to read as zeros "
              "(FORMATS.md A.9).", "",
              "## Known libvhdi (pyvhdi 20260901) disagreements", "",
              "`expect ... --libvhdi` writes what libvhdi returns instead; the test "
              "`vhdx-core/tests/integration/chain.rs`",
              "checks libvhdi against that model and our reader against libvhdi wherever the "
              "two models agree.", "",
              "- Differencing VHDX: libvhdi reads the parent for ZERO (2), UNMAPPED (3) and "
              "UNDEFINED (1) blocks. A.9: ZERO",
              "  must read zeros (the parent is hidden); for UNMAPPED/UNDEFINED the spec allows "
              "zeros or old content, and we return zeros.",
              "- Differencing VHD: after a set bitmap bit, libvhdi reads the rest of that "
              "bitmap byte (up to 7 more sectors)",
              "  from the child even where their bits are 0 (B.7: per sector, 0 = parent). "
              "The builder fills those sectors with",
              "  0xEE, which libvhdi returns.", ""]
    for name in CHAINS:
        readme += ["## %s" % name, "", DESCRIPTIONS[name], "", "| file | apparent size | sha256 (uncompressed) |",
                   "|---|---|---|"]
        for n, stored, apparent, sha in rows:
            if n == name:
                readme.append("| `%s` | %d | `%s` |" % (stored, apparent, sha))
        readme.append("")
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(readme))


def main(argv):
    if len(argv) < 2 or argv[1] == "fixtures":
        out = argv[2] if len(argv) > 2 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "chain")
        fixtures(out)
    elif argv[1] == "chain":
        build_chain(argv[2], argv[3])
    elif argv[1] == "expect":
        libvhdi = "--libvhdi" in argv
        argv = [a for a in argv if a != "--libvhdi"]
        name, fname, out = argv[2], argv[3], argv[4]
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            for f, model in CHAINS[name]()(d, libvhdi):
                if f == fname:
                    model.write(out)
                    return
        raise SystemExit("no file %s in chain %s" % (fname, name))
    elif argv[1] == "usage":
        import json
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps({f: model.usage() for f, model in CHAINS[argv[2]]()(d)}))
    elif argv[1] == "variant":
        variant(argv[2], argv[3])
    elif argv[1] == "selftest":
        assert crc32c(b"123456789") == 0xE3069283
        assert guid_text(guid_bytes("2DC27766-F623-4200-9D64-115E9BFD4A08")) == \
            "2dc27766-f623-4200-9d64-115e9bfd4a08"
        assert chs(100 * MiB) == (1003, 12, 17), chs(100 * MiB)
        print("ok")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
