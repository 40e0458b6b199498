#!/usr/bin/env python3
"""Where a server's CPU goes per request: the kernel, the server's code, Python, the app's libraries.

    bench/cpu_split.py [--lua FILE] [--conns 16] [--seconds 5] [--port 18080] [--top 12]
                       -- COMMAND...

Starts COMMAND (a server listening on 127.0.0.1:PORT, run from bench/apps) pinned to CPU 0,
warms it up with wrk pinned to CPU 1, then drives it with wrk while `perf record` samples
everything CPU 0 runs (`-a -C 0`, the cpu-clock at 4 kHz). It prints the microseconds of CPU 0
per request that went to each object (the kernel, the server's binary or extension module,
libpython, libc, an app's C library such as libz), the kernel and user-space totals, and the
time CPU 0 sat idle. `bench/kernel_costs.py` says which system calls the kernel time came from.

What it is for: a ratio between two servers cannot exceed what their difference leaves. If
server A spends K µs per request in the kernel and P µs in Python and the app's libraries,
and server B spends T µs in all, A cannot run faster than T / (K + P) times B however little
its own code costs; the same for CPU per request.

    bench/cpu_split.py -- ../../target/release/wsgi serve hello.py --port 18080 --threads 16
    bench/cpu_split.py --lua ../wrk/post64k.lua -- ../../target/release/wsgi serve echo.py --port 18080

Needs perf (Debian's linux-perf), wrk and root (system-wide sampling). Only the process it
started is stopped, by its pid (SIGTERM, then SIGKILL after 10 s).
"""

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

APPS = Path(__file__).resolve().parent / "apps"

# Samples per second of CPU 0.
FREQUENCY = 4000


def wrk(args, seconds):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{args.conns}", f"-d{seconds}"]
    if args.lua:
        cmd += ["-s", args.lua]
    return cmd + [f"http://127.0.0.1:{args.port}/"]


def requests_of(wrk_output):
    m = re.search(r"^\s*(\d+) requests in", wrk_output, re.M)
    if not m:
        sys.exit(f"wrk did not report its requests:\n{wrk_output}")
    return int(m.group(1))


def samples_by_object(data):
    """(comm, object) -> samples, from `perf report` of a recording."""
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "-q", "-n", "-g", "none",
         "--sort", "comm,dso"],
        check=True, capture_output=True, text=True,
    ).stdout
    counts = collections.Counter()
    for line in report.splitlines():
        # "  53.33%   123456  wsgi-io  [kernel.kallsyms]"
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(.+?)\s{2,}(\S.*?)\s*$", line)
        if m:
            counts[(m.group(2).strip(), m.group(3).strip())] += int(m.group(1))
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lua", help="a wrk script (path from bench/apps, or absolute)")
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--top", type=int, default=12, help="objects listed (the rest summed)")
    ap.add_argument("command", nargs="+", help="the server to run (after --)")
    args = ap.parse_args()
    missing = [tool for tool in ("perf", "wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} (apt-get install linux-perf wrk util-linux)")
    if os.geteuid() != 0:
        sys.exit("run as root: perf samples CPU 0 system-wide")
    if args.lua and not Path(args.lua).is_absolute():
        args.lua = str((APPS / args.lua).resolve())

    server = subprocess.Popen(
        ["taskset", "-c", "0", *args.command], cwd=APPS,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{args.port}/", timeout=1).read()
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit(f"the server exited with status {server.returncode}")
                time.sleep(0.2)
        else:
            sys.exit("the server did not answer within 30 s")
        subprocess.run(wrk(args, 2), check=True, capture_output=True)
        with tempfile.TemporaryDirectory(prefix="wsgi-cpu-split-") as tmp:
            data = Path(tmp) / "cpu.data"
            run = subprocess.run(
                ["perf", "record", "-q", "-a", "-C", "0", "-e", "cpu-clock", "-F", str(FREQUENCY),
                 "-o", str(data), "--", *wrk(args, args.seconds)],
                check=True, capture_output=True, text=True,
            )
            n = requests_of(run.stdout)
            counts = samples_by_object(data)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    total = sum(counts.values())
    if total == 0 or n == 0:
        sys.exit("perf recorded no samples, or wrk no requests")
    # Each sample stands for one period of the clock that took it.
    us_per_sample = 1e6 / FREQUENCY
    idle = sum(c for (comm, _), c in counts.items() if comm == "swapper")
    by_object = collections.Counter()
    for (comm, obj), c in counts.items():
        if comm != "swapper":
            by_object[Path(obj).name if obj.startswith("/") else obj] += c
    per_request = lambda samples: samples * us_per_sample / n
    kernel = sum(c for obj, c in by_object.items() if obj.startswith("[kernel"))
    busy = sum(by_object.values())
    print(f"{n} requests in {args.seconds} s ({n / args.seconds:,.0f}/s); CPU 0 per request, µs:")
    shown = by_object.most_common(args.top)
    for obj, c in shown:
        print(f"  {obj:44} {per_request(c):8.2f}")
    rest = busy - sum(c for _, c in shown)
    if rest:
        print(f"  {'(the rest)':44} {per_request(rest):8.2f}")
    print(f"  {'kernel':44} {per_request(kernel):8.2f}")
    print(f"  {'user space':44} {per_request(busy - kernel):8.2f}")
    print(f"  {'busy, in all':44} {per_request(busy):8.2f}")
    print(f"  {'idle':44} {per_request(idle):8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
