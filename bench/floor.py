#!/usr/bin/env python3
"""The in-process floor: what one WSGI call of an app costs in Python alone, no server around it.

    /usr/bin/python3.11 bench/floor.py [-n 200000] [-r 3] [--app bench/apps/hello.py]

Calls the app N times with a 25-key environ (the CGI variables, five request headers, the
wsgi.* keys) and a no-op start_response, iterates the body and calls its close() if it has one,
as a server must. Variants, each run R times (best and median ns per call printed):

  reuse   the same environ every call: the app call alone
  copy    environ.copy() per call: the least a server pays for a fresh environ
  build   the environ built per call from raw header bytes (latin-1 decode, HTTP_ names, a new
          BytesIO for wsgi.input), as a server written in Python does
  loop    the empty loop, to subtract

A server's own cost per request is its CPU time per request minus this floor. Run it with the
Python the server embeds (Debian's /usr/bin/python3.11 for wsgi-rs and Debian's mod_wsgi).
"""

import argparse
import importlib.util
import io
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

HEADERS = [
    (b"Host", b"127.0.0.1:8000"),
    (b"User-Agent", b"wrk/4.1.0"),
    (b"Accept", b"*/*"),
    (b"Accept-Encoding", b"gzip, deflate"),
    (b"Connection", b"keep-alive"),
]


def load(path):
    spec = importlib.util.spec_from_file_location("floor_app", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.application


def environ():
    env = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
        "REQUEST_URI": "/", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
        "wsgi.run_once": False, "wsgi.input_terminated": True,
    }
    for name, value in HEADERS:
        env["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = value.decode("latin-1")
    assert len(env) == 25, len(env)
    return env


def start_response(status, headers, exc_info=None):
    return None


def finish(result):
    for _ in result:
        pass
    close = getattr(result, "close", None)
    if close is not None:
        close()


def reuse(app, n, env):
    t = time.perf_counter_ns()
    for _ in range(n):
        finish(app(env, start_response))
    return time.perf_counter_ns() - t


def copy(app, n, env):
    t = time.perf_counter_ns()
    for _ in range(n):
        finish(app(env.copy(), start_response))
    return time.perf_counter_ns() - t


def build(app, n, env):
    base = {k: v for k, v in env.items() if not k.startswith("HTTP_")}
    bytes_io = io.BytesIO
    t = time.perf_counter_ns()
    for _ in range(n):
        e = dict(base)
        for name, value in HEADERS:
            e["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = value.decode("latin-1")
        e["wsgi.input"] = bytes_io(b"")
        finish(app(e, start_response))
    return time.perf_counter_ns() - t


def loop(app, n, env):
    t = time.perf_counter_ns()
    for _ in range(n):
        pass
    return time.perf_counter_ns() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200_000, help="calls per run (default 200,000)")
    ap.add_argument("-r", type=int, default=3, help="runs per variant (default 3)")
    ap.add_argument("--app", default=os.path.join(HERE, "apps", "hello.py"))
    a = ap.parse_args()
    app = load(a.app)
    env = environ()
    body = b"".join(app(env.copy(), start_response))
    print(f"floor: python {platform.python_version()} ({sys.executable}), "
          f"app {os.path.basename(a.app)} -> {body[:20]!r}, N={a.n:,}, runs={a.r}")
    print(f"{'variant':<8} {'best ns/call':>13} {'median ns/call':>15}")
    for name, fn in (("reuse", reuse), ("copy", copy), ("build", build), ("loop", loop)):
        fn(app, min(a.n, 20_000), env)
        runs = sorted(fn(app, a.n, env) / a.n for _ in range(a.r))
        print(f"{name:<8} {runs[0]:>13.1f} {statistics.median(runs):>15.1f}")


if __name__ == "__main__":
    main()
