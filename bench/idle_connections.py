#!/usr/bin/env python3
"""Memory of idle keep-alive connections: starts `wsgi serve bench/apps/hello.py`, opens N
connections that each make one request and then stay open, waits 4 s (a connection quiet for
1 to 2 s is parked: hyper's buffers are let go), and prints how much the front process's
resident memory grew per connection (VmRSS before and after).

    bench/idle_connections.py [-b BIN] [-n N] [--no-request]

BIN defaults to target/release/wsgi, N to 9000 (the open-file limit must allow N + ~100; the
server's default --max-connections is half its own limit). --no-request: connect only.
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bin", default=os.path.join(HERE, "..", "target", "release", "wsgi"))
    parser.add_argument("-n", type=int, default=9000)
    parser.add_argument("--no-request", action="store_true")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.n + 100 > hard:
        sys.exit(f"the open-file limit ({hard}) is too small for {args.n} connections")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    cmd = [args.bin, "serve", os.path.join(HERE, "apps", "hello.py"), "--threads", "4",
           "--port", str(port)]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    master = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socks = []
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("the server did not start")
        fronts = subprocess.run(["pgrep", "-P", str(master.pid)], capture_output=True, text=True)
        front = int(fronts.stdout.split()[0]) if fronts.stdout.split() else master.pid
        time.sleep(1)
        before = rss_kib(front)
        for _ in range(args.n):
            s = socket.create_connection(("127.0.0.1", port))
            if not args.no_request:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                buf = b""
                while b"Hello, World!" not in buf:
                    buf += s.recv(4096)
            socks.append(s)
        time.sleep(4)
        after = rss_kib(front)
        mode = "connected" if args.no_request else "after one request"
        print(f"{args.n} idle connections ({mode}): front RSS {before} KiB -> {after} KiB, "
              f"{(after - before) * 1024 / args.n:.0f} bytes each")
    finally:
        for s in socks:
            s.close()
        master.terminate()
        master.wait(timeout=30)


if __name__ == "__main__":
    main()
