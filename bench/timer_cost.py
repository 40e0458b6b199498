#!/usr/bin/env python3
"""What a wait with a timeout costs on this machine, against a plain blocking read.

    bench/timer_cost.py [--trips 200000] [--rounds 3] [--cpu 0]

Two threads pinned to one CPU pass a 32-byte message back and forth over a unix socket pair;
before each read the echoing thread waits in one of several ways. It prints microseconds per
round trip for each, the best of the rounds (the rounds interleave the ways of waiting). A timeout that ends before the next scheduler tick needs a timer that the
kernel programs into the hardware as the thread goes to sleep, and again when it is woken
early; in a virtual machine each of those is an exit to the hypervisor. On the nested VM of the
2026-12-06 runs, a 1 ms `poll` added 4 µs to each round trip, a 4 ms one nothing (the reason
the daemon workers' linger is 5 ms: `wsgi-daemon/src/process/worker.rs`, `LINGER`).

Needs a C compiler (`cc`) and `taskset`; builds the probe in a temporary directory.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = r"""
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* wait: 0 none, 1 poll(ms), 2 epoll_wait(ms), 3 SO_RCVTIMEO(ms) then a plain read */
static int wait_kind, ms, trips, sv[2], ep;

static void *echo(void *arg) {
    char b[64];
    (void)arg;
    for (int i = 0; i < trips; i++) {
        if (wait_kind == 1) {
            struct pollfd p = { sv[1], POLLIN, 0 };
            while (poll(&p, 1, ms) == 0) {}
        } else if (wait_kind == 2) {
            struct epoll_event e;
            while (epoll_wait(ep, &e, 1, ms) == 0) {}
        }
        ssize_t r;
        while ((r = read(sv[1], b, sizeof b)) < 0) {}
        if (write(sv[1], b, r) != r) exit(1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    wait_kind = atoi(argv[1]);
    ms = atoi(argv[2]);
    trips = atoi(argv[3]);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 1;
    ep = epoll_create1(0);
    struct epoll_event e = { EPOLLIN, { 0 } };
    epoll_ctl(ep, EPOLL_CTL_ADD, sv[1], &e);
    if (wait_kind == 3) {
        struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
        setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    pthread_t t;
    pthread_create(&t, NULL, echo, NULL);
    char buf[64] = "x";
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < trips; i++) {
        if (write(sv[0], buf, 32) != 32 || read(sv[0], buf, sizeof buf) <= 0) return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    pthread_join(t, NULL);
    printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / trips / 1000.0);
    return 0;
}
"""

WAITS = [
    ("blocking read", 0, 0),
    ("poll, 1 ms timeout", 1, 1),
    ("poll, 2 ms", 1, 2),
    ("poll, 4 ms", 1, 4),
    ("poll, 5 ms", 1, 5),
    ("poll, 1 s", 1, 1000),
    ("poll, no timeout", 1, -1),
    ("epoll_wait, 1 ms", 2, 1),
    ("epoll_wait, no timeout", 2, -1),
    ("SO_RCVTIMEO 1 ms, read", 3, 1),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trips", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=0)
    args = ap.parse_args()
    missing = [tool for tool in ("cc", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} (apt-get install gcc util-linux)")
    with tempfile.TemporaryDirectory(prefix="wsgi-timer-cost-") as tmp:
        src, exe = Path(tmp) / "probe.c", Path(tmp) / "probe"
        src.write_text(PROBE)
        subprocess.run(["cc", "-O2", "-pthread", "-o", str(exe), str(src)], check=True)
        best = {}
        for _ in range(args.rounds):
            for name, kind, ms in WAITS:
                out = subprocess.run(
                    ["taskset", "-c", str(args.cpu), str(exe), str(kind), str(ms), str(args.trips)],
                    check=True, capture_output=True, text=True,
                ).stdout
                best.setdefault(name, []).append(float(out))
        print(f"{'wait before each read':28} µs per round trip (2 threads on CPU {args.cpu}), best of {args.rounds}")
        for name, _, _ in WAITS:
            print(f"{name:28} {min(best[name]):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
