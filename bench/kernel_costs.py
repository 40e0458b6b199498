#!/usr/bin/env python3
"""What a server asks of the kernel per request: system calls, context switches, timers.

    bench/kernel_costs.py [--lua FILE] [--conns 16] [--seconds 5] [--port 18080]
                          [--tick-ms 4] -- COMMAND...

Starts COMMAND (a server listening on 127.0.0.1:PORT, run from bench/apps) pinned to CPU 0,
warms it up with wrk pinned to CPU 1, then drives it with wrk twice while `perf` watches CPU 0:
once counting (`perf stat`: system calls by kind, context switches, high-resolution timers
started), once recording each timer started with its deadline (`perf record -k mono`). It
prints each count per request, and the timers due before the next scheduler tick (`--tick-ms`,
4 ms at 250 Hz) by thread: the kernel programs those into the hardware, which in a virtual
machine costs an exit to the hypervisor each time (`bench/timer_cost.py` measures it). Only the
process it started is stopped, by its pid (SIGTERM, then SIGKILL after 10 s).

    bench/kernel_costs.py -- ../../target/release/wsgi serve hello.py --port 18080 --threads 16
    bench/kernel_costs.py --lua ../wrk/post64k.lua -- ../../target/release/wsgi serve echo.py --port 18080

Needs perf (Debian's linux-perf), wrk and root (system-wide tracepoints).
"""

import argparse
import collections
import contextlib
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

SYSCALLS = [
    "read", "recvfrom", "recvmsg", "write", "writev", "sendto", "sendmsg", "sendfile64",
    "epoll_wait", "epoll_ctl", "poll", "futex", "sched_yield", "newfstatat", "statx", "openat",
    "close", "mmap", "munmap", "getpid", "clock_gettime",
]


def wrk(args, seconds, extra=()):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{args.conns}", f"-d{seconds}", *extra]
    if args.lua:
        cmd += ["-s", str(Path(args.lua).resolve())]
    return cmd + [f"http://127.0.0.1:{args.port}/"]


def requests_of(wrk_output):
    m = re.search(r"^\s*(\d+) requests in", wrk_output, re.M)
    if not m:
        sys.exit(f"wrk did not report its requests:\n{wrk_output}")
    return int(m.group(1))


def tracepoint_exists(event):
    group, name = event.split(":")
    return Path(f"/sys/kernel/tracing/events/{group}/{name}").exists()


def check_tools(why):
    """Exits with what to install unless perf, wrk and taskset are here and this runs as root
    (`why` says what root is needed for)."""
    missing = [tool for tool in ("perf", "wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} (apt-get install linux-perf wrk util-linux)")
    if os.geteuid() != 0:
        sys.exit(f"run as root: {why}")


def add_load_arguments(ap):
    """The options of the load: wrk's script, connections and seconds, the server's port."""
    ap.add_argument("--lua", help="a wrk script (path from bench/apps, or absolute)")
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--port", type=int, default=18080)


def resolve_lua(args):
    """Makes `args.lua`, given from bench/apps, absolute (wrk runs elsewhere)."""
    if args.lua and not Path(args.lua).is_absolute():
        args.lua = str((APPS / args.lua).resolve())


@contextlib.contextmanager
def pinned_server(args):
    """Runs `args.command` from bench/apps pinned to CPU 0 until it answers on `args.port`,
    warms it up with 2 s of wrk pinned to CPU 1, and stops it on leaving (SIGTERM, then
    SIGKILL after 10 s): only the process it started."""
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
        yield server
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(ap)
    ap.add_argument("--tick-ms", type=float, default=4.0)
    ap.add_argument("command", nargs="+", help="the server to run (after --)")
    args = ap.parse_args()
    check_tools("perf watches CPU 0's tracepoints system-wide")
    resolve_lua(args)

    with pinned_server(args):
        events = ["raw_syscalls:sys_enter", "context-switches", "timer:hrtimer_start"]
        events += [e for e in (f"syscalls:sys_enter_{s}" for s in SYSCALLS) if tracepoint_exists(e)]
        with tempfile.TemporaryDirectory(prefix="wsgi-kernel-costs-") as tmp:
            stat = Path(tmp) / "stat.csv"
            run = subprocess.run(
                ["perf", "stat", "-a", "-C", "0", "-x,", "-o", str(stat), "-e", ",".join(events), "--",
                 *wrk(args, args.seconds)],
                check=True, capture_output=True, text=True,
            )
            n = requests_of(run.stdout)
            print(f"{n} requests in {args.seconds} s; per request, on CPU 0:")
            for line in stat.read_text().splitlines():
                fields = line.split(",")
                if len(fields) > 2 and fields[0].replace(".", "").isdigit() and float(fields[0]) > 0:
                    value = float(fields[0]) / n
                    if value >= 0.005:
                        print(f"  {fields[2].replace('syscalls:sys_enter_', ''):28} {value:8.2f}")

            data = Path(tmp) / "timers.data"
            run = subprocess.run(
                ["perf", "record", "-q", "-a", "-C", "0", "-k", "mono", "-e", "timer:hrtimer_start",
                 "-o", str(data), "--", *wrk(args, args.seconds)],
                check=True, capture_output=True, text=True,
            )
            n = requests_of(run.stdout)
            script = subprocess.run(
                ["perf", "script", "-i", str(data), "-F", "comm,time,trace"],
                check=True, capture_output=True, text=True,
            ).stdout

    short = collections.Counter()
    total = 0
    for line in script.splitlines():
        m = re.match(r"\s*(.+?)\s+(\d+\.\d+):.*function=(\S+) expires=(\d+)", line)
        if not m:
            continue
        total += 1
        comm, at, function, expires = m.group(1), float(m.group(2)), m.group(3), int(m.group(4))
        due_ms = (expires / 1e9 - at) * 1e3
        if 0 <= due_ms < args.tick_ms:
            short[(re.sub(r"\d+$", "N", comm), function)] += 1
    print(f"high-resolution timers started: {total / n:.2f} per request; due within {args.tick_ms:g} ms:")
    for (comm, function), count in short.most_common():
        if count / n >= 0.005:
            print(f"  {comm:20} {function:28} {count / n:8.2f}")
    if not short:
        print("  none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
