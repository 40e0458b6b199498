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
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from kernel_costs import add_load_arguments, check_tools, pinned_server, requests_of, resolve_lua, wrk

# Samples per second of CPU 0.
FREQUENCY = 4000


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
    add_load_arguments(ap)
    ap.add_argument("--top", type=int, default=12, help="objects listed (the rest summed)")
    ap.add_argument("command", nargs="+", help="the server to run (after --)")
    args = ap.parse_args()
    check_tools("perf samples CPU 0 system-wide")
    resolve_lua(args)

    with pinned_server(args), tempfile.TemporaryDirectory(prefix="wsgi-cpu-split-") as tmp:
        data = Path(tmp) / "cpu.data"
        run = subprocess.run(
            ["perf", "record", "-q", "-a", "-C", "0", "-e", "cpu-clock", "-F", str(FREQUENCY),
             "-o", str(data), "--", *wrk(args, args.seconds)],
            check=True, capture_output=True, text=True,
        )
        n = requests_of(run.stdout)
        counts = samples_by_object(data)

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
