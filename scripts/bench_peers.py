#!/usr/bin/env python3
"""Measurements and report for scripts/bench.sh.

Two modes:

  bench_peers.py read LIB MODE IMAGE N REPS [RAW]
      Runs in whichever interpreter has LIB (raw | vhdx | pyvhdi | dissect) and prints one
      JSON object. MODE seq: whole-disk sequential reads with N-byte buffers (readinto where
      the library has it; pyvhdi only returns new bytes objects). MODE rand: N random 4 KiB
      reads (the xorshift64 offset sequence shared with benches/read.rs). Best and median of
      REPS passes; with RAW, passes over that raw file alternate with them (time_ratio).

  bench_peers.py drive --dir ... --out FILE
      Runs every measurement (the other interpreters through `read`) and writes the markdown
      report. Called by scripts/bench.sh, which builds the tools first.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

MIB = 1 << 20
FULL_SIZE = 256 * MIB
IMAGES = [  # (name, file, qemu format)
    ("vhdx-1m", "vhdx-1m.vhdx", "vhdx"),
    ("vhdx-8m", "vhdx-8m.vhdx", "vhdx"),
    ("vhdx-32m", "vhdx-32m.vhdx", "vhdx"),
    ("vhd-dynamic", "vhd-dynamic.vhd", "vpc"),
    ("vhd-fixed", "vhd-fixed.vhd", "vpc"),
]
BUFS = [MIB, 4 * MIB]
RAND_COUNT = 4096


def random_offsets(size: int, n: int) -> list[int]:
    x = 0x9E3779B97F4A7C15
    m = (1 << 64) - 1
    pages = size // 4096
    out = []
    for _ in range(n):
        x ^= (x << 13) & m
        x ^= x >> 7
        x ^= (x << 17) & m
        out.append((x % pages) * 4096)
    return out


# ----------------------------------------------------------------------------- worker


def open_reader(lib: str, path: str):
    """Returns (size, readinto_at(offset, memoryview) or None, read_at(offset, n) or None)."""
    if lib == "raw":
        f = open(path, "rb", buffering=0)
        size = os.fstat(f.fileno()).st_size

        def readinto_at(off, mv):
            f.seek(off)
            return f.readinto(mv)

        return size, readinto_at, None
    if lib == "vhdx":
        import vhdx

        d = vhdx.open(path)

        def readinto_at(off, mv):
            d.seek(off)
            return d.readinto(mv)

        return d.size, readinto_at, None
    if lib == "pyvhdi":
        import pyvhdi

        f = pyvhdi.file()
        f.open(path)
        return f.get_media_size(), None, f.read_buffer_at_offset
    if lib == "dissect":
        fh = open(path, "rb")
        if path.endswith(".vhdx"):
            from dissect.hypervisor.disk.vhdx import VHDX

            d = VHDX(fh)
        else:
            from dissect.hypervisor.disk.vhd import VHD

            d = VHD(fh)

        def readinto_at(off, mv):
            d.seek(off)
            return d.readinto(mv)

        return d.size, readinto_at, None
    raise SystemExit(f"unknown library {lib}")


def _pass_seq(size, n, mv, readinto_at, read_at, lib):
    t = time.perf_counter()
    off = 0
    while off < size:
        k = min(n, size - off)
        if readinto_at:
            got = readinto_at(off, mv[:k] if k < n else mv)
        else:
            got = len(read_at(k, off))
        if got != k:
            raise SystemExit(f"{lib}: short read at {off}: {got} of {k}")
        off += k
    return time.perf_counter() - t


def _pass_rand(offsets, mv, readinto_at, read_at):
    t = time.perf_counter()
    if readinto_at:
        for o in offsets:
            readinto_at(o, mv)
    else:
        for o in offsets:
            read_at(4096, o)
    return (time.perf_counter() - t) * 1e6 / len(offsets)


def worker(lib: str, mode: str, path: str, n: int, reps: int, raw: str | None = None) -> dict:
    """Best/median of `reps` passes. With `raw`, a pass over the raw file with an unbuffered
    `readinto` alternates with each pass of `lib`, and `time_ratio` is the median over the
    pairs of lib / raw time."""
    size, readinto_at, read_at = open_reader(lib, path)
    partner = open_reader("raw", raw) if raw else None
    times, raw_times = [], []
    if mode == "seq":
        mv = memoryview(mmap.mmap(-1, n))  # page aligned, like the C and Rust buffers
        for rep in range(reps):
            # Which side goes first alternates: the second of a pair runs a little faster.
            if partner and rep % 2 == 0:
                raw_times.append(_pass_seq(size, n, mv, partner[1], None, "raw"))
            times.append(_pass_seq(size, n, mv, readinto_at, read_at, lib))
            if partner and rep % 2 == 1:
                raw_times.append(_pass_seq(size, n, mv, partner[1], None, "raw"))
        out = {"size": size, "best_s": min(times), "median_s": statistics.median(times)}
        if partner:
            out |= {"raw_best_s": min(raw_times), "raw_median_s": statistics.median(raw_times)}
    else:
        offsets = random_offsets(size, n)
        mv = memoryview(mmap.mmap(-1, 4096))
        for rep in range(reps):
            if partner and rep % 2 == 0:
                raw_times.append(_pass_rand(offsets, mv, partner[1], None))
            times.append(_pass_rand(offsets, mv, readinto_at, read_at))
            if partner and rep % 2 == 1:
                raw_times.append(_pass_rand(offsets, mv, partner[1], None))
        out = {"best_us": min(times), "median_us": statistics.median(times)}
        if partner:
            out |= {"raw_best_us": min(raw_times), "raw_median_us": statistics.median(raw_times)}
    if partner:
        out["time_ratio"] = statistics.median(o / r for o, r in zip(times, raw_times))
    return out


# ----------------------------------------------------------------------------- driver


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def run_json(cmd: list[str], env=None) -> dict | None:
    r = sh(cmd, env=env)
    if r.returncode != 0:
        print(f"   failed: {' '.join(cmd)}: {r.stderr.strip()[-400:]}", file=sys.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def warm(path: str) -> None:
    """Puts `path` in the page cache the same way for every file: evicts that one file's
    pages (posix_fadvise DONTNEED: no root, nothing else is touched) and reads it
    sequentially. How a file was written (qemu-io writes the images block by block) leaves
    page-cache folios of different sizes, and reading a file cached in small folios costs up
    to 25 % more with the very same system calls; re-reading gives every file the read-ahead
    layout, so the comparison measures the readers and not the history of the files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while os.read(fd, 16 * MIB):
            pass
    finally:
        os.close(fd)


def qemu_io_seq(fmt: str, path: str, bufsz: int, reps: int) -> float | None:
    """Seconds for a whole-disk read in `bufsz` requests, from qemu-io's own per-request
    timing (the precise figure is the ops/sec rate; each request's buffer is allocated and
    filled by qemu-io before its clock starts). Best of `reps` passes."""
    cmds = []
    for off in range(0, FULL_SIZE, bufsz):
        cmds += ["-c", f"read {off} {bufsz}"]
    best = None
    for _ in range(reps):
        r = sh(["qemu-io", "-r", "-f", fmt, *cmds, path])
        rates = re.findall(r"and ([0-9.]+) ops/sec", r.stdout)
        if r.returncode != 0 or len(rates) != len(cmds) // 2:
            print(f"   qemu-io failed on {path}: {r.stderr.strip()[-300:]}", file=sys.stderr)
            return None
        t = sum(1 / float(x) for x in rates)
        best = t if best is None else min(best, t)
    return best


def qemu_io_rand(fmt: str, path: str, count: int, reps: int) -> float | None:
    cmds = []
    for off in random_offsets(FULL_SIZE, count):
        cmds += ["-c", f"read {off} 4096"]
    best = None
    for _ in range(reps):
        r = sh(["qemu-io", "-r", "-f", fmt, *cmds, path])
        rates = re.findall(r"and ([0-9.]+) ops/sec", r.stdout)
        if r.returncode != 0 or len(rates) != count:
            return None
        t = statistics.median(1e6 / float(x) for x in rates)
        best = t if best is None else min(best, t)
    return best


def hyperfine(cmds: list[list[str]], runs: int, warmup: int, tag: str, dirpath: str, prepare: str | None = None) -> list[dict]:
    """Mean/min wall times (s) of whole processes; a `date`-style loop without hyperfine."""
    if shutil.which("hyperfine"):
        out = os.path.join(dirpath, f"hyperfine-{tag}.json")
        args = ["hyperfine", "-N", "--style", "none", "--warmup", str(warmup), "--runs", str(runs), "--export-json", out]
        if prepare:
            args += ["--prepare", prepare]
        args += [" ".join(c) for c in cmds]
        r = sh(args)
        if r.returncode != 0:
            print(f"   hyperfine failed: {r.stderr.strip()[-400:]}", file=sys.stderr)
            return [{"mean": None, "min": None, "stddev": None, "median": None}] * len(cmds)
        res = json.load(open(out))["results"]
        return [{"mean": x["mean"], "min": x["min"], "stddev": x["stddev"], "median": x["median"]} for x in res]
    results = []
    for c in cmds:
        ts = []
        for i in range(warmup + runs):
            if prepare:
                subprocess.run(prepare.split())
            t = time.perf_counter_ns()
            subprocess.run(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if i >= warmup:
                ts.append((time.perf_counter_ns() - t) / 1e9)
        results.append({"mean": statistics.mean(ts), "min": min(ts), "stddev": statistics.pstdev(ts), "median": statistics.median(ts)})
    return results


def max_rss_kib(cmd: list[str], runs: int = 5, prepare: str | None = None) -> int | None:
    if not os.path.exists("/usr/bin/time"):
        return None
    best = 0
    for _ in range(runs):
        if prepare:
            subprocess.run(prepare.split())
        r = sh(["/usr/bin/time", "-f", "RSS=%M", *cmd])
        m = re.search(r"RSS=(\d+)", r.stderr)
        if r.returncode != 0 or not m:
            print(f"   {' '.join(cmd)} failed: {r.stderr.strip()[-300:]}", file=sys.stderr)
            return None
        best = max(best, int(m.group(1)))
    return best


def fmt(v, spec=".0f", unit=""):
    return "–" if v is None else f"{v:{spec}}{unit}"


def mbps(size: int, secs: float | None) -> float | None:
    return None if not secs else size / secs / 1e6


def ratio(a, b):
    return None if (a is None or b is None or b == 0) else a / b


def criterion_tables(cdir: str) -> list[str]:
    def est(path):
        try:
            e = json.load(open(os.path.join(cdir, path, "new", "estimates.json")))
            return e["median"]["point_estimate"], e["median"]["confidence_interval"]
        except (OSError, KeyError, ValueError):
            return None, None

    lines = []
    if not os.path.isdir(os.path.join(cdir, "seq")):
        return lines
    lines += [
        "| image | buffer | raw pread MB/s | ours MB/s | ours / raw |",
        "|---|---|---:|---:|---:|",
    ]
    for b in ("1M", "4M"):
        raw, _ = est(f"seq/raw/{b}")
        for name, _, _ in IMAGES:
            ours, _ = est(f"seq/{name}/{b}")
            if ours is None:
                continue
            r, o = mbps(FULL_SIZE, raw and raw / 1e9), mbps(FULL_SIZE, ours / 1e9)
            lines.append(f"| {name} | {b} | {fmt(r)} | {fmt(o)} | {fmt(ratio(o, r), '.2f')} |")
    lines += ["", "| image | random 4 KiB read, raw pread µs | ours µs | ours / raw |", "|---|---:|---:|---:|"]
    raw, _ = est("rand4k/raw")
    for name, _, _ in IMAGES:
        ours, _ = est(f"rand4k/{name}")
        if ours is None:
            continue
        lines.append(f"| {name} | {fmt(raw and raw / 1e3, '.2f')} | {fmt(ours / 1e3, '.2f')} | {fmt(ratio(ours, raw), '.2f')} |")
    oi, _ = est("open_info/16t-1m")
    if oi is not None:
        lines += ["", f"`Disk::open` + `info(false)` of the 16 TiB VHDX (1 MiB blocks), in process: {oi / 1e3:.1f} µs (median)."]
    return lines


def drive(a) -> None:
    d = a.dir
    raw = os.path.join(d, "full.raw")
    reps = a.reps
    rows, rand_rows = [], []
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = open("/proc/loadavg").read().split()[:3]
    py_ours = a.ours_py or None
    py_oracle = a.oracle_py if a.oracle_py and os.path.exists(a.oracle_py) else None
    ours_env = dict(os.environ, PYTHONPATH=a.ours_pythonpath) if (py_ours and a.ours_pythonpath) else None
    mmap_env = dict(os.environ, BENCH_BACKEND="mmap")

    def pyread(py, lib, mode, path, n, r, env=None, pair=False):
        if not py:
            return None
        extra = [raw] if pair else []
        return run_json([py, os.path.abspath(__file__), "read", lib, mode, path, str(n), str(r), *extra], env=env)

    def g(res, key):
        return None if not res else res.get(key)

    images = IMAGES + [("raw (control)", "control.raw", "raw")]
    warm(raw)
    for _, file, _ in images:
        warm(os.path.join(d, file))
    for bufsz in BUFS:
        c_ref = run_json([a.pread_ref, "seq", raw, str(bufsz), str(reps)])
        for name, file, qfmt in images:
            path = os.path.join(d, file)
            control = qfmt == "raw"
            print(f"-- seq {name} {bufsz // MIB} MiB", file=sys.stderr)
            ex = run_json([a.example, "seq", path, raw, str(bufsz), str(reps)])
            exm = run_json([a.example, "seq", path, raw, str(bufsz), str(reps)], env=mmap_env)
            py_o = pyread(py_ours, "vhdx", "seq", path, bufsz, reps, env=ours_env, pair=True)
            qio = qemu_io_seq(qfmt, path, bufsz, 3)
            pv = None if control else pyread(py_oracle, "pyvhdi", "seq", path, bufsz, 3)
            ds = None if control else pyread(py_oracle, "dissect", "seq", path, bufsz, 2)
            inv = lambda x: None if not x else 1 / x  # noqa: E731
            rows.append(
                {
                    "image": name,
                    "buf": bufsz,
                    "c": mbps(FULL_SIZE, g(c_ref, "best_s")),
                    "raw_rs": mbps(FULL_SIZE, g(ex, "raw_best_s")),
                    "ours_rs": mbps(FULL_SIZE, g(ex, "ours_best_s")),
                    "ratio_rs": inv(g(ex, "time_ratio")),
                    "ours_mmap": mbps(FULL_SIZE, g(exm, "ours_best_s")),
                    "ratio_mmap": inv(g(exm, "time_ratio")),
                    "raw_py": mbps(FULL_SIZE, g(py_o, "raw_best_s")),
                    "ours_py": mbps(FULL_SIZE, g(py_o, "best_s")),
                    "ratio_py": inv(g(py_o, "time_ratio")),
                    "qemu": mbps(FULL_SIZE, qio),
                    "pyvhdi": mbps(FULL_SIZE, g(pv, "best_s")),
                    "dissect": mbps(FULL_SIZE, g(ds, "best_s")),
                }
            )

    c_rand = run_json([a.pread_ref, "rand", raw, str(RAND_COUNT * 4), str(reps)])
    for name, file, qfmt in images:
        path = os.path.join(d, file)
        control = qfmt == "raw"
        print(f"-- rand {name}", file=sys.stderr)
        ex = run_json([a.example, "rand", path, raw, str(RAND_COUNT * 4), str(reps)])
        exm = run_json([a.example, "rand", path, raw, str(RAND_COUNT * 4), str(reps)], env=mmap_env)
        py_o = pyread(py_ours, "vhdx", "rand", path, RAND_COUNT, reps, env=ours_env, pair=True)
        rand_rows.append(
            {
                "image": name,
                "c": g(c_rand, "median_us"),
                "raw_rs": g(ex, "raw_median_us"),
                "ours_rs": g(ex, "ours_median_us"),
                "ratio_rs": g(ex, "time_ratio"),
                "ours_mmap": g(exm, "ours_median_us"),
                "ratio_mmap": g(exm, "time_ratio"),
                "raw_py": g(py_o, "raw_median_us"),
                "ours_py": g(py_o, "median_us"),
                "ratio_py": g(py_o, "time_ratio"),
                "qemu": qemu_io_rand(qfmt, path, 1000, 2),
                "pyvhdi": None if control else g(pyread(py_oracle, "pyvhdi", "rand", path, RAND_COUNT, 3), "median_us"),
                "dissect": None if control else g(pyread(py_oracle, "dissect", "rand", path, RAND_COUNT, 2), "median_us"),
            }
        )

    # Whole processes.
    big = os.path.join(d, "big-16t.vhdx")
    sparse = os.path.join(d, "sparse-64g.vhdx")
    warm(big)
    warm(sparse)
    if a.cli:
        ours_info = [a.cli, "info", big]
        ours_map = [a.cli, "map", sparse]
        ours_conv = [a.cli, "convert", sparse, os.path.join(d, "out-ours.raw"), "--format", "raw"]
    else:
        ours_info = [a.example, "info", big]
        ours_map = [a.example, "map", sparse]
        ours_conv = [a.example, "convert", sparse, os.path.join(d, "out-ours.raw")]
    q_info = ["qemu-img", "info", big]
    q_map = ["qemu-img", "map", "--output=json", sparse]
    q_conv = ["qemu-img", "convert", "-O", "raw", sparse, os.path.join(d, "out-qemu.raw")]
    print("-- whole processes", file=sys.stderr)
    hi = hyperfine([ours_info, q_info, ["true"]], 50, 5, "info", d)
    hm = hyperfine([ours_map, q_map], 20, 2, "map", d)
    hc_ours = hyperfine([ours_conv], 10, 1, "convert-ours", d, prepare=f"rm -f {os.path.join(d, 'out-ours.raw')}")
    hc_q = hyperfine([q_conv], 3, 1, "convert-qemu", d, prepare=f"rm -f {os.path.join(d, 'out-qemu.raw')}")
    rss = {
        "ours_info": max_rss_kib(ours_info),
        "q_info": max_rss_kib(q_info),
        "ours_map": max_rss_kib(ours_map),
        "q_map": max_rss_kib(q_map),
        "ours_conv": max_rss_kib(ours_conv, 3, prepare=f"rm -f {os.path.join(d, 'out-ours.raw')}"),
        "q_conv": max_rss_kib(q_conv, 1, prepare=f"rm -f {os.path.join(d, 'out-qemu.raw')}"),
    }
    same = None
    if os.path.exists(os.path.join(d, "out-ours.raw")) and os.path.exists(os.path.join(d, "out-qemu.raw")):
        same = sh(["cmp", os.path.join(d, "out-ours.raw"), os.path.join(d, "out-qemu.raw")]).returncode == 0
    for f in ("out-ours.raw", "out-qemu.raw"):
        try:
            os.remove(os.path.join(d, f))
        except OSError:
            pass
    load_after = open("/proc/loadavg").read().split()[:3]

    # ------------------------------------------------------------------ report
    L = []
    L.append("## Benchmarks\n")
    L.append(f"Run {started} with `scripts/bench.sh` (commit `{sh(['git', 'rev-parse', '--short', 'HEAD']).stdout.strip()}` plus the working tree).")
    lscpu = sh(["sh", "-c", "lscpu | head -12"]).stdout.rstrip()
    L.append("\n```\n" + lscpu + "\nkernel " + os.uname().release + f"\nload average before/after: {' '.join(load_before)} / {' '.join(load_after)}\n```\n")
    L.append(
        "Everything is read warm from the page cache: nothing drops the system's caches. Before "
        "timing, each benchmark file alone is evicted (`posix_fadvise(DONTNEED)` on that file) and "
        "read once sequentially, so every file sits in the page cache in the same read-ahead layout "
        "(files qemu-io wrote block by block otherwise sit in small folios and read up to 25 % "
        "slower with identical system calls). Images are 256 MiB virtual, fully written with qemu-io so every block is "
        "allocated, compared with a raw file of the same 256 MiB. Throughput is MB/s (10^6 B/s) of "
        "virtual disk, best of the passes; the raw pread and ours (Rust) columns come from one "
        "process that alternates a raw pass and an image pass (`examples/bench_read.rs`), so "
        "both see the same machine load; ratios are the median over those pairs of the per-pair ratio. "
        "All buffers are page aligned (a plain 1 MiB+ `Vec` or `bytearray` starts 16 bytes into a "
        "page, and the kernel then copies out of the page cache up to 2× slower, which would "
        "swamp every other effect). The machine is shared with other builds: absolute numbers vary "
        "by ±20 % from run to run. The `raw (control)` row opens `control.raw`, a copy of `full.raw`, "
        "through `Disk` (format raw: the same reads as the reference, on another file, plus the `SEEK_DATA` hole checks of reads of 2 MiB and more), so "
        "its ratio shows the noise floor of the method. Which side of a pair goes first alternates.\n"
    )
    L.append("### Sequential whole-disk reads (MB/s, best pass; ratios: median over alternating pass pairs)\n")
    L.append(
        "| image | buffer | C pread raw | Rust pread raw | **ours (Rust)** | **ours / raw** | ours, mmap backend | mmap / raw "
        "| Python readinto raw | **ours (Python readinto)** | **ours Py / raw Py** | qemu-io | pyvhdi | dissect |"
    )
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        L.append(
            f"| {r['image']} | {r['buf'] // MIB} MiB | {fmt(r['c'])} | {fmt(r['raw_rs'])} | {fmt(r['ours_rs'])} | **{fmt(r['ratio_rs'], '.2f')}** | "
            f"{fmt(r['ours_mmap'])} | {fmt(r['ratio_mmap'], '.2f')} | {fmt(r['raw_py'])} | {fmt(r['ours_py'])} | **{fmt(r['ratio_py'], '.2f')}** | "
            f"{fmt(r['qemu'])} | {fmt(r['pyvhdi'])} | {fmt(r['dissect'])} |"
        )
    L.append("\n### Random 4 KiB reads (µs per read, median; lower is better; ratios: median over alternating chunk pairs)\n")
    L.append(
        "| image | C pread raw | Rust pread raw | **ours (Rust)** | **ours / raw** | ours / C | ours, mmap backend | mmap / raw "
        "| Python raw | ours (Python seek+readinto) | ours Py / raw Py | qemu-io | pyvhdi | dissect |"
    )
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rand_rows:
        L.append(
            f"| {r['image']} | {fmt(r['c'], '.2f')} | {fmt(r['raw_rs'], '.2f')} | {fmt(r['ours_rs'], '.2f')} | **{fmt(r['ratio_rs'], '.2f')}** | "
            f"{fmt(ratio(r['ours_rs'], r['c']), '.2f')} | {fmt(r['ours_mmap'], '.2f')} | {fmt(r['ratio_mmap'], '.2f')} | "
            f"{fmt(r['raw_py'], '.2f')} | {fmt(r['ours_py'], '.2f')} | {fmt(r['ratio_py'], '.2f')} | {fmt(r['qemu'], '.2f')} | "
            f"{fmt(r['pyvhdi'], '.2f')} | {fmt(r['dissect'], '.2f')} |"
        )
    tool = "vhdx" if a.cli else "bench_read example"

    def ms(x):
        return fmt(x and x * 1e3, ".1f")

    def mib(k):
        return fmt(k and k / 1024, ".1f")

    L.append("\n### Whole processes (wall ms: median (min); max RSS MiB)\n")
    L.append(
        f"Process floor on this machine in the same run: `true` takes {ms(hi[2]['median'])} ms (min {ms(hi[2]['min'])}). "
        "Under the load of the other builds the medians wander; the minimum is what an idle machine gives.\n"
    )
    L.append("| task | ours | ours RSS | qemu-img | qemu-img RSS | speed-up (medians) |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for label, o, q, ro, rq in (
        ("`info` 16 TiB VHDX, 1 MiB blocks (128 MiB BAT)", hi[0], hi[1], rss["ours_info"], rss["q_info"]),
        ("`map` 64 GiB VHDX holding 8 MiB", hm[0], hm[1], rss["ours_map"], rss["q_map"]),
        ("raw export (`convert --format raw` / `convert -O raw`) of the same", hc_ours[0], hc_q[0], rss["ours_conv"], rss["q_conv"]),
    ):
        L.append(
            f"| {label} | {ms(o['median'])} ({ms(o['min'])}) | {mib(ro)} | {ms(q['median'])} ({ms(q['min'])}) | {mib(rq)} | "
            f"{fmt(ratio(q['median'], o['median']), '.0f', '×')} |"
        )
    if same is not None:
        L.append(f"\nThe two raw exports are {'byte-identical' if same else 'DIFFERENT (bug!)'} (`cmp`).")
    crit = criterion_tables(a.criterion_dir) if a.criterion_dir else []
    if crit:
        L.append("\n### criterion (`cargo bench -p vhdx-core --bench read`, medians, last run)\n")
        L += crit
    L.append("\n### Commands\n")
    L.append(
        "```\n"
        "scripts/bench.sh                       # everything above; CRITERION=1 adds cargo bench\n"
        "cargo bench -p vhdx-core --bench read -- --warm-up-time 1 --measurement-time 3\n"
        f"# images ({d}):\n"
        "qemu-img create -f raw full.raw 256M && qemu-io -f raw -c 'write -P 0x5a 0 256M' full.raw\n"
        "qemu-img create -f vhdx -o block_size={1M,8M,32M} vhdx-{1m,8m,32m}.vhdx 256M   # + the same qemu-io write\n"
        "qemu-img create -f vpc -o subformat={dynamic,fixed},force_size=on vhd-{dynamic,fixed}.vhd 256M  # + the same write\n"
        "qemu-img create -f vhdx -o block_size=1M big-16t.vhdx 16T\n"
        "qemu-img create -f vhdx sparse-64g.vhdx 64G && qemu-io -f vhdx -c 'write -P 0x33 OFF 2M' sparse-64g.vhdx  # OFF = 0 1G 17G 40G\n"
        "# sequential / random, per image (raw pass and image pass alternate in one process):\n"
        f"target/release/examples/bench_read seq IMAGE full.raw 4M {reps} ; bench_read rand IMAGE full.raw {RAND_COUNT * 4} {reps}\n"
        f"/tmp/vhdx-bench/pread_ref seq full.raw 4194304 {reps} ; pread_ref rand full.raw {RAND_COUNT * 4} {reps}   # C (in scripts/bench.sh), gcc -O2\n"
        "BENCH_BACKEND=mmap target/release/examples/bench_read ...   # the mmap-backend columns\n"
        "python scripts/bench_peers.py read vhdx {seq|rand} IMAGE {BUF|COUNT} REPS full.raw   # ours from Python, raw passes alternating\n"
        "python scripts/bench_peers.py read {pyvhdi|dissect} {seq|rand} IMAGE {BUF|COUNT} REPS   # in the venv that has them\n"
        "qemu-io -r -f FMT -c 'read 0 4M' -c 'read 4M 4M' ... IMAGE   # qemu's block layer; time = sum of 1/(ops/sec) it reports\n"
        f"# whole processes (hyperfine -N --warmup 3; RSS from /usr/bin/time -f %M):\n"
        f"{' '.join(ours_info)}   vs   {' '.join(q_info)}\n"
        f"{' '.join(ours_map)}   vs   {' '.join(q_map)}\n"
        f"{' '.join(ours_conv)}   vs   {' '.join(q_conv)}\n"
        "```\n"
    )
    L.append(
        "Method notes: qemu's sequential figure is qemu-io issuing one read request per buffer through "
        "qemu's block layer (the code `qemu-img convert` reads with), timed by qemu-io itself around "
        "each request, so process start, image open and buffer allocation are excluded; "
        "`qemu-img convert -O raw` to a file would add the write side, and to /dev/null it refuses. "
        "pyvhdi has no readinto: its column uses `read_buffer_at_offset`, which returns a new bytes "
        "object per call. dissect uses `seek` + `readinto`. Python raw is an unbuffered file's `seek` + "
        "`readinto` into the same (mmap-allocated, page-aligned) buffer, alternating with ours in one process. "
        "The mmap-backend columns open the disk with `Backend::Mmap` (`OpenOptions::backend`) instead of `pread`. Both raw exports write a sparse 64 GiB file on the same file system as the images "
        f"and flush it. Whole-process numbers use {tool}.\n"
    )
    text = "\n".join(L) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    print(text)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "read":
        lib, mode, path, n, reps = sys.argv[2:7]
        raw = sys.argv[7] if len(sys.argv) > 7 else None
        print(json.dumps(worker(lib, mode, path, int(n), int(reps), raw)))
        return
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["drive"])
    p.add_argument("--dir", required=True)
    p.add_argument("--example", required=True)
    p.add_argument("--cli", default="")
    p.add_argument("--pread-ref", required=True)
    p.add_argument("--oracle-py", default="")
    p.add_argument("--ours-py", default="")
    p.add_argument("--ours-pythonpath", default="")
    p.add_argument("--criterion-dir", default="")
    p.add_argument("--reps", type=int, default=int(os.environ.get("REPS", "9")))
    p.add_argument("--out", required=True)
    drive(p.parse_args())


if __name__ == "__main__":
    main()
