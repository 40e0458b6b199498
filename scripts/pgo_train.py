#!/usr/bin/env python3
"""The training run of a profile-guided build (scripts/pgo.sh): drives a `wsgi` program through
the paths a site uses, so the profile it writes says which code is hot.

    scripts/pgo_train.py [--quick] [--tls-cert CERT --tls-key KEY] WSGI

Each phase starts `WSGI serve` on one of bench/apps (copied to a world-readable folder: started
as root, the server gives up root for www-data, its default), checks some answers whole from
Python clients (status and body), sends the volume the profile counts with h2load over
HTTP/1.1 (every answer a 2xx; without h2load, from the Python clients), then stops the server
with SIGTERM and waits for it to exit by itself: an instrumented program writes its profile
at exit, so a server that is killed, or a request that failed, fails the run. The phases:
embedded mode (hello over keep-alive and over new connections, a 64 KiB POST with
Content-Length and chunked, a 1 MiB streamed response and a wsgi.file_wrapper file), HTTP/2
with prior knowledge (h2load, else curl), a `--config` site (two WSGIScriptAlias mounts, an
Alias of static files, a CustomLog), daemon mode (one process and two, hello and the POST),
and TLS when a certificate is given or `openssl` can make one. A phase whose client
tool is missing is skipped, and said so. `--quick` sends a twentieth of the requests (what the
test of this script runs).
"""

import argparse
import http.client
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APPS = REPO / "bench" / "apps"
POST = b"x" * 65536
ECHO = b"len=%d crc32=%08x\n" % (len(POST), zlib.crc32(POST) & 0xFFFFFFFF)
BIG = bytes(range(256)) * 256 * 16
FILE = bytes((i * 7) & 0xFF for i in range(1 << 20))
HELLO = b"Hello, World!"
EMPTY_ECHO = b"len=0 crc32=00000000\n"
STYLE = b"body { margin: 0 }\n" * 100
# The site of the `--config` phase ({dir}: the training's folder).
SITE = """ServerName train.example
LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" combined
CustomLog {dir}/logs/access.log combined
WSGIScriptAlias /hello {dir}/hello.py
WSGIScriptAlias /echo {dir}/echo.py
Alias /static {dir}/static
<Directory {dir}>
    Require all granted
</Directory>
"""
STARTUP_SECONDS = 120
STOP_SECONDS = 60


class Failed(Exception):
    """A server or a request that did not do what the training needs."""


class Server:
    """`WSGI serve APP ARGS...` (no APP: ARGS name a `--config`) on a free loopback port,
    until stopped."""

    def __init__(self, wsgi, app, args, workdir, scheme="http"):
        target = [str(workdir / f"{app}.py")] if app else []
        cmd = [str(wsgi), "serve"] + target + ["--host", "127.0.0.1", "--port", "0",
                                               "--log-level", "warn"] + args
        self.cmd = cmd
        self.log = open(workdir / "server.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL, cwd=workdir)
        self.port = self._port(scheme)

    def _port(self, scheme):
        found = []
        reader = threading.Thread(target=self._read_banner, args=(scheme, found), daemon=True)
        reader.start()
        reader.join(STARTUP_SECONDS)
        if not found:
            code = self.proc.poll()
            self.proc.kill()
            self.proc.wait()
            log = Path(self.log.name).read_text(errors="replace")[-2000:]
            why = (f"exited with {code} before it listened" if code is not None
                   else f"printed no `listening on` line in {STARTUP_SECONDS} s")
            raise Failed(f"`{' '.join(self.cmd)}` {why}; its log ends:\n{log}")
        return found[0]

    def _read_banner(self, scheme, found):
        prefix = f"listening on {scheme}://127.0.0.1:"
        for line in self.proc.stdout:
            text = line.decode(errors="replace").strip()
            if text.startswith(prefix):
                found.append(int(text[len(prefix):].rstrip("/")))
                break
        # The rest of the banner is read and dropped, so the server never blocks on it.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failed(f"`{' '.join(self.cmd)}` did not stop within {STOP_SECONDS} s of "
                         "SIGTERM (killed: its profile is lost)")
        if code != 0:
            raise Failed(f"`{' '.join(self.cmd)}` exited with {code} on SIGTERM "
                         f"(its log: {self.log.name})")


def connection(port, tls):
    if tls is None:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=tls)


def chunked(body, size=16384):
    for at in range(0, len(body), size):
        yield body[at:at + size]


def exchange(conn, request):
    """One request on `conn`; returns the body after checking the status."""
    method, path, body, headers = request
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise Failed(f"{method} {path}: {response.status} {data[:200]!r}")
    return data


def drive(port, request, expect, count, clients, tls=None, keep_alive=True):
    """`count` requests from `clients` threads, each answer's status checked, and its body
    against `expect` (None: any body)."""
    errors = []

    def client(share):
        conn = connection(port, tls)
        try:
            for _ in range(share):
                if not keep_alive:
                    conn.close()
                    conn = connection(port, tls)
                method, path, body, headers = request
                if callable(body):
                    body = body()
                data = exchange(conn, (method, path, body, headers))
                if expect is not None and data != expect:
                    raise Failed(f"{method} {path}: unexpected body {data[:80]!r}...")
        except Exception as e:  # noqa: BLE001 - reported below, the run fails
            errors.append(e)
        finally:
            conn.close()

    shares = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=client, args=(s,)) for s in shares if s]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise Failed(f"{len(errors)} of {len(threads)} clients failed, the first: {errors[0]}")


GET_HELLO = ("GET", "/", None, {})
GET_SITE_HELLO = ("GET", "/hello/", None, {"User-Agent": "pgo-train", "Referer": "/"})
GET_STYLE = ("GET", "/static/style.css", None, {})
POST_SITE_ECHO = ("POST", "/echo/", POST, {"Content-Type": "application/octet-stream"})
GET_CLOSE = ("GET", "/", None, {"Connection": "close"})
POST_LENGTH = ("POST", "/", POST, {"Content-Type": "application/octet-stream"})
# http.client sends an iterable body chunked (Transfer-Encoding: chunked, no Content-Length).
POST_CHUNKED = ("POST", "/", lambda: chunked(POST), {"Content-Type": "application/octet-stream"})


def load(port, request, count, clients, scheme="http", body_file=None, tls=None):
    """`count` more requests like `request` for the profile's counts: with h2load over
    HTTP/1.1 when it is there (fast enough to keep the server busy, as a site's load does;
    every answer must be a 2xx), else from Python clients, each answer's status checked."""
    if not shutil.which("h2load"):
        drive(port, request, None, count, clients, tls=tls)
        return
    cmd = ["h2load", "--h1", "-n", str(count), "-c", str(clients), "-m", "1"]
    if body_file is not None:
        cmd += ["-d", str(body_file)]
    cmd.append(f"{scheme}://127.0.0.1:{port}{request[1]}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    if f"status codes: {count} 2xx" not in out:
        raise Failed(f"`{' '.join(cmd)}`: not every answer was 2xx:\n{out[-800:]}")


def h2_phase(port, scale, body_file):
    """HTTP/2 with prior knowledge: hello and the POST, with h2load or else curl."""
    n = max(50, 20000 // scale)
    if shutil.which("h2load"):
        runs = [["h2load", "-n", str(n), "-c", "4", "-m", "10", f"http://127.0.0.1:{port}/"],
                ["h2load", "-n", str(max(20, n // 10)), "-c", "2", "-m", "4", "-d",
                 str(body_file), f"http://127.0.0.1:{port}/"]]
        for cmd in runs:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
            want = f"status codes: {cmd[2]} 2xx"
            if want not in out:
                raise Failed(f"`{' '.join(cmd)}`: not every answer was 2xx:\n{out[-800:]}")
        return "h2load"
    if shutil.which("curl"):
        urls = []
        for _ in range(max(20, n // 20)):
            urls += ["-o", "/dev/null", f"http://127.0.0.1:{port}/"]
        cmd = ["curl", "-s", "--http2-prior-knowledge", "-w", "%{http_code} %{http_version}\n"]
        out = subprocess.run(cmd + urls, capture_output=True, text=True, timeout=600).stdout
        lines = out.split()
        if lines.count("200") * 2 != len(lines) or lines.count("2") != lines.count("200"):
            raise Failed(f"curl over HTTP/2: not every answer was a 200 over HTTP/2: {out[:400]}")
        return "curl"
    return None


def make_certificate(workdir):
    """A self-signed certificate for 127.0.0.1 with `openssl`, or None without it."""
    if not shutil.which("openssl"):
        return None
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wsgi", type=Path, help="the (instrumented) wsgi program")
    ap.add_argument("--quick", action="store_true", help="a twentieth of the requests")
    ap.add_argument("--tls-cert", type=Path, help="a certificate for 127.0.0.1 (PEM)")
    ap.add_argument("--tls-key", type=Path, help="its key (PEM)")
    opts = ap.parse_args()
    scale = 20 if opts.quick else 1
    wsgi = opts.wsgi.resolve()
    if not os.access(wsgi, os.X_OK):
        print(f"pgo_train: {opts.wsgi} is not an executable wsgi program", file=sys.stderr)
        return 2
    n = lambda count: max(10, count // scale)  # noqa: E731

    workdir = Path(tempfile.mkdtemp(prefix="wsgi-pgo-train."))
    os.chmod(workdir, 0o755)
    for app in ("hello", "echo", "big", "filewrap"):
        shutil.copy(APPS / f"{app}.py", workdir / f"{app}.py")
    (workdir / "file.bin").write_bytes(FILE)
    body_file = workdir / "post.bin"
    body_file.write_bytes(POST)
    for path in workdir.iterdir():
        os.chmod(path, 0o644)

    def phase(name, app, args, work, scheme="http"):
        started = time.monotonic()
        server = Server(wsgi, app, args, workdir, scheme)
        try:
            detail = work(server.port)
        finally:
            server.stop()
        took = time.monotonic() - started
        print(f"{name}: done in {took:.1f} s{f' ({detail})' if detail else ''}", flush=True)

    embedded = ["--threads", "16"]

    # Each phase checks some answers whole (status and body), then sends the volume the
    # profile counts. The volumes weigh the paths as a busy site does: small requests first.
    def hello(port):
        drive(port, GET_HELLO, HELLO, n(400), 8)
        load(port, GET_HELLO, n(150000), 16)
        load(port, GET_HELLO, n(150000), 64)

    def new_connections(port):
        drive(port, GET_CLOSE, HELLO, n(4000), 8, keep_alive=False)

    def posts(port):
        drive(port, POST_LENGTH, ECHO, n(200), 8)
        drive(port, POST_CHUNKED, ECHO, n(1000), 8)
        load(port, POST_LENGTH, n(30000), 16, body_file=body_file)

    def large(expect):
        def run(port):
            drive(port, GET_HELLO, expect, n(100), 8)
            load(port, GET_HELLO, n(3000), 16)
        return run

    def h2(port):
        return h2_phase(port, scale, body_file) or "skipped: no h2load or curl"

    def daemon_hello(port):
        drive(port, GET_HELLO, HELLO, n(400), 8)
        load(port, GET_HELLO, n(80000), 16)

    def daemon_posts(port):
        drive(port, POST_LENGTH, ECHO, n(100), 8)
        load(port, POST_LENGTH, n(10000), 16, body_file=body_file)

    # A mod_wsgi site's configuration: two mounts, a static folder and an access log.
    (workdir / "logs").mkdir()
    (workdir / "static").mkdir()
    (workdir / "static" / "style.css").write_bytes(STYLE)
    for path in (workdir / "logs", workdir / "static", workdir / "static" / "style.css"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    site = workdir / "site.conf"
    site.write_text(SITE.format(dir=workdir))
    os.chmod(site, 0o644)

    def configured(port):
        drive(port, GET_SITE_HELLO, HELLO, n(200), 8)
        drive(port, GET_STYLE, STYLE, n(100), 8)
        drive(port, POST_SITE_ECHO, ECHO, n(100), 8)
        load(port, GET_SITE_HELLO, n(60000), 16)
        load(port, GET_STYLE, n(10000), 16)
        load(port, POST_SITE_ECHO, n(5000), 16, body_file=body_file)

    try:
        phase("embedded hello, keep-alive", "hello", embedded, hello)
        phase("embedded hello, a connection each", "hello", embedded, new_connections)
        phase("embedded 64 KiB POST, with Content-Length and chunked", "echo", embedded, posts)
        phase("embedded 1 MiB streamed", "big", embedded, large(BIG))
        phase("embedded 1 MiB file_wrapper", "filewrap", embedded, large(FILE))
        phase("HTTP/2 (h2c) GET and POST", "echo", embedded, h2)
        phase("a --config site: two mounts, static files, an access log", None,
              ["--config", str(site)] + embedded, configured)
        for shape in (["--processes", "1", "--threads", "16"],
                      ["--processes", "2", "--threads", "8"]):
            label = f"daemon {shape[1]}x{shape[3]}"
            phase(f"{label} hello", "hello", shape, daemon_hello)
            phase(f"{label} 64 KiB POST", "echo", shape, daemon_posts)
        pair = (opts.tls_cert, opts.tls_key) if opts.tls_cert else make_certificate(workdir)
        if pair is None:
            print("TLS: skipped (no --tls-cert and no openssl to make one)", flush=True)
        else:
            # Training, on loopback: the certificate is not checked.
            tls = ssl.create_default_context()
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
            tls_args = embedded + ["--ssl-certificate-file", str(pair[0]),
                                   "--ssl-certificate-key-file", str(pair[1])]

            def over_tls(port):
                drive(port, GET_HELLO, EMPTY_ECHO, n(200), 8, tls=tls)
                drive(port, POST_LENGTH, ECHO, n(100), 8, tls=tls)
                load(port, GET_HELLO, n(30000), 16, scheme="https", tls=tls)
                load(port, POST_LENGTH, n(5000), 16, scheme="https", body_file=body_file, tls=tls)

            phase("TLS GET and POST", "echo", tls_args, over_tls, scheme="https")
    except Failed as e:
        print(f"pgo_train: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
