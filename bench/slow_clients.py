#!/usr/bin/env python3
"""Slow and hostile clients against a WSGI server: are ordinary requests still answered?

    bench/slow_clients.py [--attackers 6] [--seconds 20] [--attack body|small-body|reader|head|all]
                          [--threads 4] [--wsgi PATH] [-- EXTRA wsgi serve FLAGS...]

Starts `wsgi serve bench/apps/slow.py --threads N` on 127.0.0.1 (the `wsgi` program built in
target/release, or --wsgi PATH: an older build, to compare), then for each attack runs
`--attackers` clients that hold the server the way slowloris-style attackers do, while one
ordinary client sends a GET every 200 ms on a new connection (10 s timeout each). It prints,
per attack, how many ordinary requests were answered and their latency (p50, p99, max).

Attacks (each attacker repeats its attack on a fresh connection for as long as it is served):
  body        a POST of 1 MB (larger than the server's request buffer) sent 1 byte per 0.5 s
  small-body  a POST of 1,000 bytes sent 1 byte per 0.5 s
  reader      a GET of a 64 MiB response read 1 byte per 0.5 s
  head        a request head sent 1 byte per 0.5 s

Only the server this script starts is stopped, by its own pid.
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

APP = r'''
def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/echo':
        data = environ['wsgi.input'].read()
        body = b'%d' % len(data)
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
        return [body]
    if path == '/big':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return (b'x' * 65536 for _ in range(1024))
    body = b'Hello, world!'
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
'''

ATTACKS = {
    "body": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
    "small-body": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
    "reader": b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n",
    "head": None,
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def attacker(port, kind, stop):
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            time.sleep(0.1)
            continue
        s.settimeout(0.5)
        try:
            head = ATTACKS[kind]
            if head is not None:
                s.sendall(head)
            trickle = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 10000 if head is None else b"x" * 10**7
            for byte in trickle:
                if stop.is_set():
                    break
                time.sleep(0.5)
                if kind == "reader":
                    try:
                        if s.recv(1) == b"":
                            break
                    except socket.timeout:
                        pass
                else:
                    s.sendall(bytes([byte]))
                    try:
                        if s.recv(1, socket.MSG_PEEK) == b"":
                            break
                        break  # the server answered (408...): start over
                    except socket.timeout:
                        pass
        except OSError:
            pass
        finally:
            s.close()


def ordinary(port, seconds):
    results = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        ok = False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.settimeout(10)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                ok = data.startswith(b"HTTP/1.1 200") and data.endswith(b"Hello, world!")
        except OSError:
            pass
        results.append((ok, time.monotonic() - start))
        time.sleep(0.2)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attackers", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--attack", default="all", choices=list(ATTACKS) + ["all"])
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--wsgi", type=Path, default=REPO / "target" / "release" / "wsgi")
    ap.add_argument("extra", nargs="*", help="more `wsgi serve` flags (after --)")
    args = ap.parse_args()
    attacks = list(ATTACKS) if args.attack == "all" else [args.attack]
    with tempfile.TemporaryDirectory(prefix="wsgi-slow-clients-") as tmp:
        os.chmod(tmp, 0o755)
        app = Path(tmp) / "slow.wsgi"
        app.write_text(APP)
        os.chmod(app, 0o644)
        for kind in attacks:
            port = free_port()
            cmd = [str(args.wsgi), "serve", str(app), "--host", "127.0.0.1", "--port", str(port),
                   "--threads", str(args.threads), "--log-level", "error", *args.extra]
            server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True)
            try:
                deadline = time.monotonic() + 30
                for line in server.stdout:
                    if line.startswith("listening on") or time.monotonic() > deadline:
                        break
                threading.Thread(target=lambda: server.stdout.read(), daemon=True).start()
                stop = threading.Event()
                threads = [threading.Thread(target=attacker, args=(port, kind, stop), daemon=True)
                           for _ in range(args.attackers)]
                for t in threads:
                    t.start()
                time.sleep(1)
                results = ordinary(port, args.seconds)
                stop.set()
                answered = [d for ok, d in results if ok]
                lat = sorted(answered)
                def pct(p):
                    return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
                print(f"{kind:11} {args.attackers} attackers, {args.threads} threads: "
                      f"{len(answered)}/{len(results)} ordinary requests answered; "
                      f"latency p50 {pct(0.5)*1000:.0f} ms, p99 {pct(0.99)*1000:.0f} ms, "
                      f"max {max(lat, default=float('nan'))*1000:.0f} ms", flush=True)
            finally:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()


if __name__ == "__main__":
    sys.exit(main())
