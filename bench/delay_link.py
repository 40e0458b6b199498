#!/usr/bin/env python3
"""A network path with a round-trip time, for machines whose kernel has no `netem`.

    bench/delay_link.py RTT_MS [--ns wsgidelay] [--mtu 1500]

Makes the network namespace NS and a TUN device on each side of it (10.77.0.1 here, 10.77.0.2
in NS), and carries every packet from one device to the other RTT_MS / 2 later, in order (a
thread per direction). A server listening here on 10.77.0.1 (or 0.0.0.0) is then reached from
a client run with `ip netns exec NS ...` across a path with that round trip, through the
kernel's whole TCP stack on both ends, as over a real network (slow start, the congestion
window, receive windows). The link's bandwidth is what this process forwards: 60-130 MB/s on
the machine of the README's runs. It prints `ready` once the path is up, and runs until
SIGINT or SIGTERM, which remove the namespace (and with it the devices).

    bench/delay_link.py 20 &
    wsgi serve bench/apps/big.py --host 10.77.0.1 --port 18080 &
    ip netns exec wsgidelay curl -so /dev/null -w '%{speed_download}\\n' http://10.77.0.1:18080/

Needs root (namespaces, /dev/net/tun) and iproute2.
"""

import argparse
import collections
import fcntl
import os
import signal
import struct
import subprocess
import sys
import threading
import time

# ioctl(TUNSETIFF) and its flags, from <linux/if_tun.h>: a TUN device (IP packets) whose reads
# and writes carry no packet-information header.
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

HERE, THERE = "10.77.0.1", "10.77.0.2"


def open_tun(name):
    """A new TUN device `name`, and the descriptor that reads and writes its packets."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def ip(*args, ns=None):
    prefix = ["ip", "netns", "exec", ns] if ns else []
    subprocess.run([*prefix, "ip", *args], check=True)


def carry(source, sink, delay, counts, direction):
    """Forwards each packet read from `source` to `sink` `delay` seconds after it was read."""
    queue = collections.deque()
    ready = threading.Condition()

    def send():
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, packet = queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with ready:
                queue.popleft()
            try:
                os.write(sink, packet)
                counts[direction] += 1
            except OSError:
                counts[f"{direction} dropped"] += 1

    threading.Thread(target=send, daemon=True).start()
    while True:
        try:
            packet = os.read(source, 65536)
        except OSError:
            # The device went with the namespace: the link is being taken down.
            return
        with ready:
            queue.append((time.monotonic() + delay, packet))
            ready.notify()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rtt_ms", type=float, help="the round-trip time the path adds, in ms")
    ap.add_argument("--ns", default="wsgidelay", help="the client's network namespace")
    ap.add_argument("--mtu", type=int, default=1500)
    args = ap.parse_args()
    if not 0 <= args.rtt_ms <= 60_000:
        sys.exit(f"a round trip of {args.rtt_ms} ms: give one from 0 to 60000")
    if not 576 <= args.mtu <= 65535:
        sys.exit(f"--mtu {args.mtu}: IPv4 needs 576 to 65535")
    if os.geteuid() != 0:
        sys.exit("run as root: it makes a network namespace and TUN devices")
    if subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split().count(args.ns):
        sys.exit(f"network namespace {args.ns} exists: another delay_link.py runs, or remove it "
                 f"with `ip netns del {args.ns}`")
    subprocess.run(["ip", "netns", "add", args.ns], check=True)

    def remove(*_):
        subprocess.run(["ip", "netns", "del", args.ns], capture_output=True)
        print("packets", dict(counts), flush=True)
        os._exit(0)

    counts = collections.Counter()
    signal.signal(signal.SIGTERM, remove)
    signal.signal(signal.SIGINT, remove)
    try:
        here, there = open_tun("wsgidl0"), open_tun("wsgidl1")
        ip("link", "set", "wsgidl1", "netns", args.ns)
        ip("addr", "add", f"{HERE}/32", "peer", THERE, "dev", "wsgidl0")
        ip("link", "set", "wsgidl0", "mtu", str(args.mtu), "up")
        ip("addr", "add", f"{THERE}/32", "peer", HERE, "dev", "wsgidl1", ns=args.ns)
        ip("link", "set", "wsgidl1", "mtu", str(args.mtu), "up", ns=args.ns)
        ip("link", "set", "lo", "up", ns=args.ns)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"delay_link.py: {e}", file=sys.stderr)
        remove()
    delay = args.rtt_ms / 2000
    for source, sink, direction in ((here, there, "out"), (there, here, "in")):
        threading.Thread(target=carry, args=(source, sink, delay, counts, direction), daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
